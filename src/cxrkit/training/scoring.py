"""Scoring a run's split while it trains: logits (optionally with test-time views), loss and metrics."""

from __future__ import annotations

import numpy as np
import torch

from cxrkit.config import TrainConfig
from cxrkit.data.shifts import mixed_shift
from cxrkit.data.transforms import to_model_input, tta_views
from cxrkit.evaluate.calibration import logits_to_probs
from cxrkit.evaluate.metrics import summary_metrics
from cxrkit.models.net import CXRNet
from cxrkit.run.data import TrainData
from cxrkit.training.losses import LossFn


@torch.no_grad()
def predict_logits(
    model: CXRNet,
    data: TrainData,
    idx: np.ndarray,
    batch_size: int,
    device: torch.device,
    loss_fn: LossFn | None = None,
    tta: int = 0,
    images: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Logits (len(idx), L) in the order of ``idx``, and the mean loss when ``loss_fn`` is given.

    ``tta`` > 1 averages the logits of that many views (``data.transforms.tta_views``), as the
    loaded run predicts; ``images`` (aligned with sorted ``idx``) replace the cached ones.
    """
    model.eval()
    idx = np.asarray(idx)
    order = np.argsort(idx, kind="stable")
    logits = np.empty((len(idx), len(data.labels)), dtype=np.float32)
    total = 0.0
    for s in range(0, len(idx), batch_size):
        rows = order[s : s + batch_size]
        # batch() sorts; rows are already in sorted-index order
        given = None if images is None else images[s : s + batch_size]
        x, y = data.batch(idx[rows], device, None if given is None else (lambda _i, g=given: g))
        if tta > 1:  # averaged in numpy, exactly as RunModel.logits does
            views = tta_views((x[:, 0] * 255).round().to(torch.uint8).cpu().numpy(), tta)
            mean = np.mean([model(to_model_input(v, device)).float().cpu().numpy() for v in views], axis=0)
            out = torch.from_numpy(mean).to(device)
        else:
            out = model(x).float()
        if loss_fn is not None:
            total += float(loss_fn(out, y)) * len(rows)
        logits[rows] = out.cpu().numpy()
    return logits, total / max(len(idx), 1)


def evaluate(
    model: CXRNet,
    data: TrainData,
    part: str,
    t: TrainConfig,
    device: torch.device,
    loss_fn: LossFn,
    corrupted: np.ndarray | None = None,
) -> dict[str, float]:
    """Loss and summary metrics of split ``part``; with ``corrupted`` images, also their ``corrupt_auc``."""
    idx = data.partition[part]
    logits, loss = predict_logits(model, data, idx, t.batch_size * 2, device, loss_fn)
    probs = logits_to_probs(logits, data.task)
    row = {"val_loss": loss, **summary_metrics(data.targets[idx], probs, t.threshold, labels=data.labels)}
    if corrupted is not None:
        logits, _ = predict_logits(model, data, np.sort(idx), t.batch_size * 2, device, images=corrupted)
        probs = logits_to_probs(logits, data.task)
        row["corrupt_auc"] = summary_metrics(
            data.targets[np.sort(idx)], probs, t.threshold, labels=data.labels
        )["macro_auc"]
    return row


def corrupted_validation(data: TrainData, t: TrainConfig) -> np.ndarray | None:
    """Validation images each under one acquisition shift (seeded), when ``train.monitor`` is corrupt_auc."""
    if t.monitor != "corrupt_auc":
        return None
    return mixed_shift(np.asarray(data.cache.images[np.sort(data.partition["val"])]), seed=t.seed)[0]
