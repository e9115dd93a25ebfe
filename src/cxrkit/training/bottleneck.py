"""Two-stage transfer learning, stage one: run the frozen backbone once, train the head on stored features.

Pooled features of every training and validation image are computed once (no augmentation) and
saved as ``bottleneck.npz`` in the run folder; the head then trains for many epochs on them in
seconds. Stage two (the caller) unfreezes the last blocks and fine-tunes on images.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from cxrkit.config import TrainConfig
from cxrkit.evaluate.calibration import logits_to_probs
from cxrkit.evaluate.metrics import macro_auc
from cxrkit.labels import finding_columns
from cxrkit.models.net import CXRNet
from cxrkit.outputs import write_with
from cxrkit.run import files
from cxrkit.training.losses import LossFn


@torch.no_grad()
def extract_features(
    model: CXRNet, data, idx: np.ndarray, batch_size: int, device: torch.device
) -> np.ndarray:
    """Pooled feature vectors (len(idx), C) of rows ``idx``, in that order."""
    model.eval()
    order = np.argsort(idx, kind="stable")
    out = np.empty((len(idx), model.pooled_dim), dtype=np.float32)
    for s in range(0, len(idx), batch_size):
        rows = order[s : s + batch_size]
        x, _ = data.batch(idx[rows], device)
        out[rows] = model.pool(model.forward_features(x)).float().cpu().numpy()
    return out


def train_head_on_features(
    model: CXRNet, data, loss_fn: LossFn, t: TrainConfig, device: torch.device, run_dir: Path | None, log
) -> list[dict]:
    """Freeze the backbone, cache features, train ``model.head`` for ``t.bottleneck_epochs``; history rows."""
    if model.transition is not None:
        raise ValueError("bottleneck features need model.transition: 0 (the head must start at pooling)")
    model.freeze("backbone")
    model.to(device)
    start = time.perf_counter()
    tr, va = data.partition["train"], data.partition["val"]
    f_tr = extract_features(model, data, tr, t.batch_size * 2, device)
    f_va = extract_features(model, data, va, t.batch_size * 2, device)
    log(
        f"bottleneck: {len(tr) + len(va):,} images through the frozen backbone once "
        f"({time.perf_counter() - start:.1f} s, {f_tr.shape[1]} features each)"
    )
    if run_dir is not None:
        arrays = {"train": f_tr, "val": f_va, "train_idx": tr, "val_idx": va}
        write_with(run_dir / files.BOTTLENECK, lambda fh: np.savez(fh, **arrays))
    x_tr, y_tr = torch.from_numpy(f_tr).to(device), torch.from_numpy(data.targets[tr]).to(device)
    x_va, y_va = torch.from_numpy(f_va).to(device), torch.from_numpy(data.targets[va]).to(device)
    opt = torch.optim.Adam(model.head.parameters(), lr=t.lr)
    gen = torch.Generator().manual_seed(t.seed)
    rows = []
    for epoch in range(t.bottleneck_epochs):
        model.head.train()
        perm = torch.randperm(len(x_tr), generator=gen).to(device)
        total = 0.0
        for s in range(0, len(perm), t.batch_size):
            b = perm[s : s + t.batch_size]
            loss = loss_fn(model.forward_head(x_tr[b]), y_tr[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        model.head.eval()
        with torch.no_grad():
            logits = model.forward_head(x_va).float()
            val_loss = float(loss_fn(logits, y_va))
        probs = logits_to_probs(logits.cpu().numpy(), data.task)
        cols = finding_columns(data.labels)
        auc = macro_auc(data.targets[va][:, cols], probs[:, cols])
        rows.append(
            {
                "epoch": epoch + 1,
                "stage": "head",
                "train_loss": total / len(x_tr),
                "val_loss": val_loss,
                "macro_auc": auc,
            }
        )
    if rows:
        log(
            f"bottleneck head: {t.bottleneck_epochs} epochs in {time.perf_counter() - start:.1f} s, "
            f"val_auc {rows[-1]['macro_auc']:.4f}"
        )
    return rows
