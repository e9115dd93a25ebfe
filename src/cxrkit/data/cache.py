"""One-time preprocessing cache: decode once, resize, store uint8 (N, S, S) memory-mapped on disk.

A cache folder holds ``images.npy`` (memory-mapped), ``meta.csv`` (one row per kept image, with
its source width/height), ``boxes.csv`` (boxes moved into cached-pixel space), ``failures.csv``
(files skipped, with the reason) and ``manifest.json``. The manifest's ``key`` hashes the source
files (name, size, mtime), metadata and the resize parameters: the same inputs reuse the cache
at once, changed ones rebuild. Builds go to a temporary folder that replaces the old one only
when complete, so an interrupted or failed build never leaves a cache that loads as valid.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cxrkit.data.base import XRayDataset, empty_boxes
from cxrkit.data.decode import ImageReadError
from cxrkit.data.transforms import InputSpec, ResizeMode, compute_geometry, prepare_image

CACHE_FORMAT = 1
_FILES = ("images.npy", "meta.csv", "boxes.csv", "failures.csv", "manifest.json")


class CacheError(ValueError):
    """A cache folder that is missing, incomplete or from another format."""


@dataclass(frozen=True)
class PrepareResult:
    """What ``prepare_cache`` did: where, whether it reused, how many images, what it skipped."""

    path: Path
    reused: bool
    n_images: int
    seconds: float
    failures: list[tuple[str, str]] = field(default_factory=list)  # (file or image_id, reason)


def cache_key(dataset: XRayDataset, size: int, mode: ResizeMode) -> str:
    """Digest of the dataset's inputs and the preprocessing parameters."""
    payload = {
        "format": CACHE_FORMAT,
        "source": dataset.source,
        "fp": dataset.fingerprint(),
        "labels": list(dataset.labels),
        "size": size,
        "mode": mode,
    }
    # pragma: no mutate (next line) -- sort_keys: the payload's keys are always written in one order
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def cache_folder(cache_dir: str | Path, source: str, size: int, mode: str, key: str) -> Path:
    """The one cache location of a dataset at a size and mode: ``cache_dir/SOURCE-SIZEMODE-KEY12``.

    ``cxr prepare`` and ``cxr train`` both use it, so preparing first makes training reuse the cache.
    """
    return Path(cache_dir) / f"{source}-{size}{mode}-{key[:12]}"


def read_manifest(path: str | Path) -> dict:
    """The manifest of a complete cache folder, or CacheError saying what is wrong."""
    path = Path(path)
    man_path = path / "manifest.json"
    if not man_path.exists():
        raise CacheError(f"{path}: not a cxrkit cache (no manifest.json; incomplete or never built)")
    try:
        manifest = json.loads(man_path.read_text())
    except json.JSONDecodeError as err:
        raise CacheError(f"{man_path}: unreadable manifest ({err})") from None
    if manifest.get("format") != CACHE_FORMAT or not manifest.get("complete"):
        raise CacheError(f"{path}: cache format {manifest.get('format')} is not {CACHE_FORMAT}; rebuild it")
    for name in _FILES:
        if not (path / name).exists():
            raise CacheError(f"{path}: {name} is missing; rebuild the cache")
    shape = np.load(path / "images.npy", mmap_mode="r").shape
    if tuple(shape) != (manifest["n_images"], manifest["size"], manifest["size"]):
        raise CacheError(
            f"{path}: images.npy has shape {shape}, manifest says "
            f"{(manifest['n_images'], manifest['size'], manifest['size'])}"
        )
    return manifest


def _valid_for(path: Path, key: str) -> dict | None:
    try:
        manifest = read_manifest(path)
    except CacheError:
        return None
    return manifest if manifest.get("key") == key else None


# Worker processes receive the dataset once, through the pool initializer.
_WORKER: dict = {}


def _init_worker(dataset: XRayDataset, size: int, mode: ResizeMode) -> None:
    _WORKER.update(dataset=dataset, size=size, mode=mode)


def _process(i: int) -> tuple[int, np.ndarray | None, int, int, str]:
    """Decode and resize image ``i``: (i, pixels or None, src_w, src_h, error reason)."""
    ds: XRayDataset = _WORKER["dataset"]
    try:
        img = ds.load_image(i)
    except ImageReadError as err:
        return i, None, 0, 0, err.reason
    except (OSError, ValueError) as err:
        return i, None, 0, 0, f"{type(err).__name__}: {err}"
    out = prepare_image(img, InputSpec(_WORKER["size"], _WORKER["mode"]))  # the one preprocessing
    return i, out, img.shape[1], img.shape[0], ""


def _results(dataset: XRayDataset, size: int, mode: ResizeMode, workers: int) -> Iterator[tuple]:
    n = len(dataset)
    if workers <= 1 or n < 64:
        _init_worker(dataset, size, mode)
        try:
            yield from map(_process, range(n))
        finally:
            _WORKER.clear()
        return
    chunk = max(1, min(256, n // (workers * 8)))
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(dataset, size, mode)) as ex:
        yield from ex.map(_process, range(n), chunksize=chunk)


def _cached_boxes(boxes: pd.DataFrame, meta: pd.DataFrame, size: int, mode: ResizeMode) -> pd.DataFrame:
    """Move boxes from their reference frame into cached-image pixels, per image geometry."""
    if boxes.empty:
        return empty_boxes()
    dims = meta.set_index("image_id")[["src_w", "src_h"]]
    boxes = boxes[boxes["image_id"].isin(dims.index)].copy()
    rows = []
    for b in boxes.itertuples(index=False):
        sw, sh = dims.loc[b.image_id]
        geo = compute_geometry(int(sw), int(sh), size, mode)
        kx, ky = sw / b.ref_w, sh / b.ref_h  # reference frame -> source pixels
        x, y, w, h = geo.to_output(b.x * kx, b.y * ky, b.w * kx, b.h * ky)
        rows.append((b.image_id, b.label, x, y, w, h, float(size), float(size)))
    return pd.DataFrame(rows, columns=list(empty_boxes().columns))


def prepare_cache(
    dataset: XRayDataset,
    out: str | Path,
    *,
    size: int = 224,
    mode: ResizeMode = "pad",
    workers: int | None = None,
    progress: bool = True,
    force: bool = False,
    key: str | None = None,
) -> PrepareResult:
    """Build (or reuse) the cache of ``dataset`` at ``size`` px in folder ``out``.

    ``key``: ``cache_key(dataset, size, mode)`` when the caller already computed it (it stats
    every source file, so computing it twice costs a second pass over 100k files).
    """
    start = time.perf_counter()
    out = Path(out)
    if not dataset.has_images:
        raise CacheError(f"{dataset.source} dataset has no images to cache (metadata only)")
    key = key or cache_key(dataset, size, mode)
    manifest = None if force else _valid_for(out, key)
    if manifest is not None:
        return PrepareResult(
            out,
            True,
            manifest["n_images"],
            time.perf_counter() - start,
            [tuple(r) for r in manifest.get("failures", [])],
        )
    if out.exists() and any(out.iterdir()) and not (out / "manifest.json").exists():
        raise CacheError(f"{out} exists and is not a cxrkit cache; choose an empty or new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        result = _build(dataset, tmp, key, size, mode, workers or os.cpu_count() or 1, progress)
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PrepareResult(out, False, result[0], time.perf_counter() - start, result[1])


def _build(
    ds: XRayDataset, tmp: Path, key: str, size: int, mode: ResizeMode, workers: int, progress: bool
) -> tuple[int, list[tuple[str, str]]]:
    from tqdm.auto import tqdm

    n = len(ds)
    arr = np.lib.format.open_memmap(
        tmp / "images.partial.npy", mode="w+", dtype=np.uint8, shape=(n, size, size)
    )
    kept, dims, failures = [], [], []
    bar = tqdm(
        _results(ds, size, mode, workers),
        total=n,
        desc=f"prepare {ds.source}",
        unit="img",
        disable=not progress,
        dynamic_ncols=True,
    )
    for i, img, w, h, reason in bar:
        if img is None:
            where = ds.meta["path"].iat[i] if "path" in ds.meta.columns else ds.meta["image_id"].iat[i]
            failures.append((str(where), reason))
            continue
        arr[len(kept)] = img
        kept.append(i)
        dims.append((w, h))
    arr.flush()
    del arr
    if not kept:
        first = "; ".join(f"{w}: {r}" for w, r in failures[:3])
        raise CacheError(f"none of the {n} images could be decoded ({first})")
    if failures:  # compact: keep only the decoded rows
        full = np.load(tmp / "images.partial.npy", mmap_mode="r")
        np.save(tmp / "images.npy", np.ascontiguousarray(full[: len(kept)]))
        del full
        (tmp / "images.partial.npy").unlink()
    else:
        os.replace(tmp / "images.partial.npy", tmp / "images.npy")
    meta = ds.meta.iloc[kept].reset_index(drop=True)
    meta["src_w"] = [d[0] for d in dims]
    meta["src_h"] = [d[1] for d in dims]
    meta.to_csv(tmp / "meta.csv", index=False)
    _cached_boxes(ds.boxes, meta, size, mode).to_csv(tmp / "boxes.csv", index=False)
    pd.DataFrame(failures, columns=["file", "reason"]).to_csv(tmp / "failures.csv", index=False)
    manifest = {
        "format": CACHE_FORMAT,
        "complete": True,
        "key": key,
        "source": ds.source,
        "labels": list(ds.labels),
        "task": ds.task,
        "size": size,
        "mode": mode,
        "n_images": len(kept),
        "n_failed": len(failures),
        "failures": failures,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))  # written last
    return len(kept), failures


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace ``out`` by the finished ``tmp`` folder; an old cache is removed only after."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class CachedDataset(XRayDataset):
    """A prepared cache: memory-mapped (N, S, S) uint8 images with the source's metadata and boxes."""

    source = "cache"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.images = np.load(self.path / "images.npy", mmap_mode="r")
        meta = pd.read_csv(self.path / "meta.csv", dtype={"image_id": str, "patient_id": str})
        boxes = pd.read_csv(self.path / "boxes.csv", dtype={"image_id": str, "label": str})
        self.source = f"cache:{self.manifest['source']}"
        super().__init__(meta, self.manifest["labels"], task=self.manifest["task"], boxes=boxes)

    def load_image(self, i: int) -> np.ndarray:
        return np.array(self.images[i])

    def fingerprint(self) -> str:
        return self.manifest["key"]
