"""A trained run, loaded back: its model (best weights), labels and data, and predictions from it.

``load_run`` rebuilds the model from the checkpoint's stored arguments (never downloading weights);
``predict_split`` re-uses the run's prepared cache and its saved ``split.csv``, so evaluation sees
exactly the images training held out; ``predict_files`` runs the model on new PNG/JPEG/DICOM files
with the run's own preprocessing (grey, square resize at the trained size).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxrkit.config import RunConfig
from cxrkit.data.decode import ImageReadError, read_image
from cxrkit.data.splits import load_split_manifest
from cxrkit.data.transforms import resize_square
from cxrkit.models import create_model
from cxrkit.models.net import CXRNet
from cxrkit.training.checkpoint import load_checkpoint
from cxrkit.training.distributed import DistInfo
from cxrkit.training.loop import Log, TrainData, load_run_config, prepare_data


@dataclass
class LoadedRun:
    """A run folder's config, best model (eval mode, on ``device``) and label list."""

    run_dir: Path
    cfg: RunConfig
    model: CXRNet
    labels: tuple[str, ...]
    task: str
    device: torch.device

    @property
    def size(self) -> int:
        """Input size the model was trained at."""
        return self.cfg.prepare.size

    @torch.no_grad()
    def predict_images(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Probabilities (N, L) for uint8 images (N, S, S) already at the trained size."""
        self.model.eval()
        out = np.empty((len(images), len(self.labels)), dtype=np.float32)
        for s in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size])).to(self.device)
            logits = self.model(x.unsqueeze(1).float().div_(255.0)).float()
            p = torch.softmax(logits, 1) if self.task in ("binary", "multiclass") else torch.sigmoid(logits)
            out[s : s + batch_size] = p.cpu().numpy()
        return out


def _device(name: str) -> torch.device:
    return torch.device("cuda" if name in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def load_run(run_dir: str | Path, device: str = "auto") -> LoadedRun:
    """Load ``run_dir``/best.pt with the run's config; a clear error if it is not a run folder."""
    run_dir = Path(run_dir)
    for name in ("config.yaml", "best.pt"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir} is not a finished run folder: {name} is missing")
    cfg = load_run_config(run_dir)
    ckpt = load_checkpoint(run_dir / "best.pt")
    m = ckpt["model_config"]
    model = create_model(
        ckpt["model_name"],
        len(ckpt["labels"]),
        1,
        False,
        grey=m.get("grey", "fold"),
        transition=m.get("transition", 0),
        hidden=m.get("hidden"),
        dropout=m.get("dropout"),
    )
    model.load_state_dict(ckpt["model_state"])
    dev = _device(device)
    model.to(dev).eval()
    return LoadedRun(run_dir, cfg, model, tuple(ckpt["labels"]), str(ckpt["task"]), dev)


@dataclass
class SplitPredictions:
    """Predictions on a split of a run's data: rows of ``meta`` align with ``targets`` and ``probs``."""

    part: str
    meta: pd.DataFrame
    targets: np.ndarray
    probs: np.ndarray
    data: TrainData
    index: np.ndarray  # rows of the cache

    def image(self, i: int) -> np.ndarray:
        """The cached (S, S) uint8 image of row ``i``."""
        return np.asarray(self.data.cache.images[self.index[i]])


def load_run_data(run: LoadedRun, log: Log = lambda _m: None) -> TrainData:
    """The run's prepared data (cache re-used, or rebuilt identically) with the run's saved split."""
    data = prepare_data(run.cfg, DistInfo(), log)
    if (run.run_dir / "split.csv").is_file():
        data.split = load_split_manifest(run.run_dir / "split.csv", data.cache.meta)
    return data


def predict_split(run: LoadedRun, data: TrainData, part: str, batch_size: int = 64) -> SplitPredictions:
    """Probabilities on split ``part`` (train, val or test) of the run's data."""
    if len(data.split.get(part, [])) == 0:
        have = ", ".join(k for k, v in data.split.items() if len(v)) or "none"
        raise ValueError(f"{run.run_dir}: the run's split has no {part!r} images (it has: {have})")
    idx = np.sort(data.split[part])
    probs = run.predict_images(data.cache.images[idx], batch_size) if len(idx) else np.zeros((0, 0))
    meta = data.cache.meta.iloc[idx].reset_index(drop=True)
    return SplitPredictions(part, meta, data.targets[idx], probs, data, idx)


@dataclass
class FilePredictions:
    """Predictions on new files; unreadable ones are listed in ``failures`` as (path, reason)."""

    meta: pd.DataFrame
    images: np.ndarray  # (N, S, S) uint8 at the model's input size
    probs: np.ndarray
    failures: list[tuple[str, str]]
    originals: list[np.ndarray] | None = None  # the decoded full-size images, when asked for


def predict_files(
    run: LoadedRun, paths: list[str | Path], batch_size: int = 32, keep_originals: bool = False
) -> FilePredictions:
    """Run the model on PNG/JPEG/DICOM files or folders, preprocessed as the run's cache was.

    ``keep_originals`` also returns each decoded image at full size (for overlays), so nothing is
    decoded twice.
    """
    from cxrkit.data.folder import list_images

    files = list_images([str(p) for p in paths])
    if not files:
        raise FileNotFoundError(f"no PNG/JPEG/DICOM files in {', '.join(map(str, paths))}")
    images, rows, failures, originals = [], [], [], []
    for f in files:
        try:
            img = read_image(f)
        except ImageReadError as err:
            failures.append((str(f), err.reason))
            continue
        out, _ = resize_square(img, run.size, run.cfg.prepare.mode)  # type: ignore[arg-type]
        images.append(out)
        if keep_originals:
            originals.append(img)
        rows.append(
            {
                "image_id": f.name,
                "patient_id": f.stem,
                "path": str(f),
                "src_w": img.shape[1],
                "src_h": img.shape[0],
            }
        )
    arr = np.stack(images) if images else np.zeros((0, run.size, run.size), np.uint8)
    probs = run.predict_images(arr, batch_size) if len(arr) else np.zeros((0, len(run.labels)), np.float32)
    return FilePredictions(pd.DataFrame(rows), arr, probs, failures, originals if keep_originals else None)
