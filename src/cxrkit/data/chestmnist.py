"""ChestMNIST (MedMNIST v2/MedMNIST+) from a local ``.npz``; download only when asked, MD5-checked.

ChestMNIST keeps NIH's official split but carries no patient IDs, so each image is its own
"patient" here: use the file's own train/val/test split, not a re-split, to stay leak-free.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from cxrkit.data.base import XRayDataset, file_fingerprint, standard_meta
from cxrkit.labels import CHESTMNIST_LABELS, LABELS, add_no_finding, align_by_name
from cxrkit.outputs import write_with

SPLITS = ("train", "val", "test")
# From medmnist's INFO["chestmnist"] (Zenodo record 10519652): size -> (file, url, md5)
CHESTMNIST_FILES: dict[int, tuple[str, str]] = {
    28: ("chestmnist.npz", "02c8a6516a18b556561a56cbdd36c4a8"),
    64: ("chestmnist_64.npz", "9de6cd0b934ebb5b7426cfba5efbae16"),
    128: ("chestmnist_128.npz", "db107e5590b27930b62dbaf558aebee3"),
    224: ("chestmnist_224.npz", "45bd33e6f06c3e8cdb481c74a89152aa"),
}
ZENODO_URL = "https://zenodo.org/records/10519652/files/{file}?download=1"


class DatasetNotFoundError(FileNotFoundError):
    """A data file that is not on disk; the message says how to get it."""


def chestmnist_file(root: str | Path, size: int) -> Path:
    """Where the ``.npz`` for ``size`` lives under ``root``."""
    if size not in CHESTMNIST_FILES:
        raise ValueError(f"ChestMNIST size {size}: expected one of {sorted(CHESTMNIST_FILES)}")
    return Path(root) / CHESTMNIST_FILES[size][0]


def md5sum(path: str | Path, chunk: int = 1 << 20) -> str:
    """MD5 hex digest of a file, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _manual_instructions(size: int, dest: Path) -> str:
    name, md5 = CHESTMNIST_FILES[size]
    return f"download {ZENODO_URL.format(file=name)} by hand (MD5 {md5}) and save it as {dest}"


def download_chestmnist(
    root: str | Path, size: int = 28, *, url: str | None = None, timeout: float = 30.0
) -> Path:
    """Fetch the ``.npz`` into ``root`` (atomic, MD5-verified); offline, raise with manual steps."""
    dest = chestmnist_file(root, size)
    name, md5 = CHESTMNIST_FILES[size]
    if dest.exists() and md5sum(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)

    def fetch(fh) -> None:  # streams into the temporary file; the checksum is checked before the rename
        digest = hashlib.md5(usedforsecurity=False)
        with urllib.request.urlopen(url or ZENODO_URL.format(file=name), timeout=timeout) as resp:
            while block := resp.read(1 << 20):
                digest.update(block)
                fh.write(block)
        if digest.hexdigest() != md5:
            raise DatasetNotFoundError(
                f"downloaded ChestMNIST has MD5 {digest.hexdigest()}, expected {md5}; "
                + _manual_instructions(size, dest)
            )

    try:
        write_with(dest, fetch)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise DatasetNotFoundError(
            f"cannot download ChestMNIST ({getattr(err, 'reason', err)}); " + _manual_instructions(size, dest)
        ) from None
    return dest


class ChestMNISTDataset(XRayDataset):
    """ChestMNIST images (H, W) uint8 and 14 labels (+ derived No Finding), one or all splits."""

    source = "chestmnist"

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        root: str | Path | None = None,
        size: int = 28,
        split: str = "all",
        download: bool = False,
    ) -> None:
        if path is None:
            if root is None:
                raise ValueError("give the ChestMNIST .npz path, or root= and size=")
            path = chestmnist_file(root, size)
            if not path.exists():
                if not download:
                    raise DatasetNotFoundError(
                        f"{path} not found; run `cxr download chestmnist --size {size} --root "
                        f"{root}` or " + _manual_instructions(size, path)
                    )
                path = download_chestmnist(root, size)
        self.path = Path(path)
        if not self.path.exists():
            raise DatasetNotFoundError(f"{self.path} not found")
        splits = SPLITS if split == "all" else (split,)
        if any(s not in SPLITS for s in splits):
            raise ValueError(f"ChestMNIST split {split!r}: expected all, train, val or test")
        try:
            npz = np.load(self.path)
            images = [np.asarray(npz[f"{s}_images"]) for s in splits]
            raw = [np.asarray(npz[f"{s}_labels"]) for s in splits]
        except (KeyError, ValueError, OSError) as err:
            raise ValueError(f"{self.path}: not a ChestMNIST .npz ({err})") from None
        self.images = np.concatenate(images) if len(images) > 1 else images[0]
        if self.images.ndim == 4 and self.images.shape[-1] in (1, 3):
            self.images = self.images[..., 0] if self.images.shape[-1] == 1 else self.images.mean(-1)
        self.images = self.images.astype(np.uint8, copy=False)
        labels14 = np.concatenate(raw).astype(np.float32)
        if labels14.shape[1] != len(CHESTMNIST_LABELS):
            raise ValueError(f"{self.path}: labels have {labels14.shape[1]} columns, expected 14")
        targets = add_no_finding(align_by_name(labels14, CHESTMNIST_LABELS, LABELS))
        ids = [f"{s}_{i:06d}" for s, arr in zip(splits, images, strict=False) for i in range(len(arr))]
        split_col = np.concatenate([[s] * len(a) for s, a in zip(splits, images, strict=False)])
        meta = standard_meta(ids, None, targets, LABELS, split=split_col)
        super().__init__(meta, LABELS, task="multilabel")

    def load_image(self, i: int) -> np.ndarray:
        return self.images[i]

    def fingerprint(self) -> str:
        return super().fingerprint() + file_fingerprint(self.path)


def from_config(cfg) -> ChestMNISTDataset:
    """``data.source: chestmnist``: a .npz file, or a folder holding (or downloading) one of ``cfg.size``."""
    p = Path(cfg.path or ".")
    if p.suffix == ".npz":
        return ChestMNISTDataset(p, split=cfg.split)
    return ChestMNISTDataset(root=p, size=cfg.size, split=cfg.split, download=cfg.download)
