"""One-time preprocessing cache: decode once, resize, store uint8 (N, S, S) memory-mapped on disk.

A cache folder holds ``images.npy`` (memory-mapped), ``meta.csv`` (one row per kept image, with
its source width/height), ``boxes.csv`` (boxes moved into cached-pixel space), ``failures.csv``
(files skipped, with the reason) and ``manifest.json`` (written last, with every file's size). The
manifest's ``key`` hashes the source files (name, size, mtime), metadata and the resize parameters:
the same inputs reuse the cache at once, changed ones rebuild, and so does a damaged cache.

A build decodes in worker processes straight into a memory-mapped file of a temporary folder
``.NAME.tmp-MACHINE-PID-START-TOKEN`` that replaces the old cache only when complete, so an
interrupted or failed build never leaves a cache that loads as valid. Ctrl-C or SIGTERM stops the
workers and removes the folder; after a SIGKILL the workers die with their parent
(``data.workers``) and the next build in the same parent folder removes the folder, once its
process is gone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from cxrkit.data.base import XRayDataset, empty_boxes
from cxrkit.data.decode import ImageReadError
from cxrkit.data.transforms import InputSpec, ResizeMode, compute_geometry, prepare_image
from cxrkit.data.workers import MESSAGE_CHARS, Outbox, machine_id, process_running, process_start, run_workers
from cxrkit.outputs import write_csv, write_text, write_with

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
_FILES = ("images.npy", "meta.csv", "boxes.csv", "failures.csv", "manifest.json")
_PARTS = ("images.partial.npy", "status.partial.npy")  # only in a build folder
REBUILD = "rebuild it with `cxr prepare --force` (or delete the folder)"
STALE_AFTER_S = 24 * 3600  # a build folder of another machine, untouched this long, is abandoned
_BUILD_RE = re.compile(
    r"^\.(?P<name>.+)\.(?:tmp-(?:(?P<machine>[0-9a-f]{8})-(?P<pid>\d+)-(?P<start>\d+)|(?P<old_pid>\d+))|old)"
    r"-[0-9a-f]{8}$"
)
_WRITING_RE = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp$")  # cxrkit.outputs' temporary files
KEPT, FAILED = 1, 2  # states of a row in status.partial.npy (0: not decoded yet)


def shorten(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters with its end kept (a path's file name), for one-line messages."""
    return text if len(text) <= limit else f"{text[: limit // 2]}…{text[-limit // 2 :]}"


class CacheError(ValueError):
    """A cache folder that is missing, incomplete, damaged or from another format."""


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


def _load_manifest(path: Path) -> tuple[dict, str]:
    """(manifest, "") of a cache folder whose manifest reads, else ({}, what is wrong)."""
    man_path = path / "manifest.json"
    if not man_path.is_file():
        return {}, f"{path}: not a cxrkit cache (no manifest.json; incomplete or never built)"
    try:
        manifest = json.loads(man_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return {}, f"{man_path}: unreadable manifest ({err})"
    except OSError as err:
        return {}, f"{man_path}: cannot be read ({err.strerror or err})"
    if not isinstance(manifest, dict):
        return {}, f"{man_path}: a JSON {type(manifest).__name__}, expected an object"
    if manifest.get("format") != CACHE_FORMAT or not manifest.get("complete"):
        return {}, f"{path}: cache format {manifest.get('format')} is not {CACHE_FORMAT}"
    wanted = {"n_images": int, "size": int, "labels": list, "task": str, "source": str, "key": str}
    for name, kind in wanted.items():
        if not isinstance(manifest.get(name), kind):
            return {}, f"{man_path}: {name} is {manifest.get(name)!r}, expected a {kind.__name__}"
    return manifest, ""


def _problem(path: Path) -> tuple[dict, str]:
    """(manifest, "") of a complete, undamaged cache folder, else ({}, what is wrong: the file and how)."""
    manifest, problem = _load_manifest(path)
    if problem:
        return {}, problem
    for name in _FILES:
        if not (path / name).is_file():
            return {}, f"{path}: {name} is missing"
    sizes = manifest.get("files", {})  # caches built before sizes were recorded have none
    for name in _FILES if isinstance(sizes, dict) else ():
        expected, actual = sizes.get(name), (path / name).stat().st_size
        if name in sizes and actual != expected:
            return {}, f"{path / name}: {actual:,} bytes, the manifest says {expected} (truncated or changed)"
    try:
        images = np.load(path / "images.npy", mmap_mode="r")
    except (ValueError, OSError, EOFError) as err:
        return {}, f"{path / 'images.npy'}: damaged ({err})"
    expected_shape = (manifest["n_images"], manifest["size"], manifest["size"])
    if images.dtype != np.uint8 or images.shape != expected_shape:
        shape = f"{images.shape} {images.dtype}"
        return {}, f"{path}: images.npy has shape {shape}, manifest says {expected_shape} uint8"
    return manifest, ""


def read_manifest(path: str | Path) -> dict:
    """The manifest of a complete, undamaged cache folder, or CacheError naming the file and the problem."""
    manifest, problem = _problem(Path(path))
    if problem:
        raise CacheError(f"{problem}; {REBUILD}")
    return manifest


def _valid_for(path: Path, key: str) -> dict | None:
    """The manifest of the cache at ``path`` if it is sound and for ``key``; a damaged one is logged."""
    if not path.exists():
        return None
    manifest, problem = _problem(path)
    if problem:
        if (path / "manifest.json").exists():
            log.warning("%s: rebuilding the cache", problem)
        return None
    return manifest if manifest.get("key") == key else None


def build_folder(out: str | Path, pid: int | None = None) -> Path:
    """A new temporary folder name for a build of ``out`` by process ``pid`` (default: this one).

    It names the machine, the process and its start time, so that a later build can tell an
    abandoned folder (its process gone) from one that a live process is still writing.
    """
    out = Path(out)
    pid = os.getpid() if pid is None else pid
    start = process_start(pid) or 0
    return out.parent / f".{out.name}.tmp-{machine_id()}-{pid}-{start}-{secrets.token_hex(4)}"


def _only_cache_files(folder: Path) -> bool:
    """True when ``folder`` holds nothing but cache files (a build's or a finished cache's)."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return False
    return all(
        not e.is_dir(follow_symlinks=False)
        and (e.name in _FILES or e.name in _PARTS or _WRITING_RE.match(e.name))
        for e in entries
    )


def _last_change(folder: Path) -> float:
    """The newest modification time of ``folder`` and its files."""
    times = [folder.stat().st_mtime]
    with os.scandir(folder) as it:
        times += [e.stat(follow_symlinks=False).st_mtime for e in it]
    return max(times)


def _abandoned(folder: Path, m: re.Match, now: float) -> bool:
    """Whether the build folder ``folder`` (its name parsed in ``m``) has no live process writing it."""
    if m["old_pid"] is not None:  # named by an earlier cxrkit: pid only
        return not process_running(int(m["old_pid"]))
    if m["pid"] is None:  # ``.old-``: a replaced cache whose removal did not finish
        return True
    if m["machine"] != machine_id():  # a shared disk: that machine's processes cannot be seen from here
        return now - _last_change(folder) > STALE_AFTER_S
    return not process_running(int(m["pid"]), int(m["start"]))


def remove_abandoned_builds(parent: str | Path) -> list[Path]:
    """Remove the cache build folders in ``parent`` left by killed processes; return them.

    Only folders named as builds and holding nothing but cache files are considered, and a build
    that a running process is writing is left alone.
    """
    parent, now, removed = Path(parent), time.time(), []
    try:
        names = sorted(os.listdir(parent))
    except OSError:
        return []
    for name in names:
        m, folder = _BUILD_RE.match(name), parent / name
        if m is None or folder.is_symlink() or not folder.is_dir() or not _only_cache_files(folder):
            continue
        try:
            if not _abandoned(folder, m, now):
                continue
        except OSError:  # removed meanwhile by another build
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed.append(folder)
            log.info("removed %s: an abandoned cache build (its process is gone)", folder)
    return removed


def _decode(ds: XRayDataset, i: int) -> tuple[np.ndarray | None, str]:
    """Image ``i`` of ``ds`` decoded, or (None, why it cannot be read)."""
    try:
        return ds.load_image(i), ""
    except ImageReadError as err:
        return None, err.reason
    except (OSError, ValueError) as err:
        return None, f"{type(err).__name__}: {err}"


def _decode_rows(
    ds: XRayDataset,
    rows: Iterable[int],
    images: np.ndarray,
    status: np.ndarray,
    spec: InputSpec,
    failed: Callable[[int, str], None],
) -> None:
    """Decode and resize ``rows`` into ``images``; ``status[i]`` = (KEPT or FAILED, source w, source h)."""
    for i in rows:
        img, reason = _decode(ds, i)
        if img is None:
            failed(i, reason)
            status[i, 0] = FAILED
        else:
            images[i] = prepare_image(img, spec)  # the one preprocessing
            status[i] = (KEPT, img.shape[1], img.shape[0])


def _decode_shard(
    outbox: Outbox, ds: XRayDataset, tmp: str, size: int, mode: ResizeMode, counter, chunk: int
) -> None:
    """A worker: take the next ``chunk`` rows from the shared ``counter`` until none are left."""
    images = np.load(Path(tmp) / _PARTS[0], mmap_mode="r+")
    status = np.load(Path(tmp) / _PARTS[1], mmap_mode="r+")
    spec, n = InputSpec(size, mode), len(ds)

    def failed(i: int, reason: str) -> None:
        outbox.send("msg", (i, reason[:MESSAGE_CHARS]))

    while True:
        with counter.get_lock():
            a = counter.value
            counter.value = a + chunk
        if a >= n:
            return
        _decode_rows(ds, range(a, min(a + chunk, n)), images, status, spec, failed)


def _decode_all(
    ds: XRayDataset,
    tmp: Path,
    images: np.ndarray,
    status: np.ndarray,
    mode: ResizeMode,
    workers: int,
    progress: bool,
) -> dict[int, str]:
    """Fill ``images`` and ``status`` (in ``workers`` processes when it pays); the failure reasons by row."""
    from tqdm.auto import tqdm

    n, size = len(ds), images.shape[1]
    reasons: dict[int, str] = {}
    bar = tqdm(total=n, desc=f"prepare {ds.source}", unit="img", disable=not progress, dynamic_ncols=True)
    with bar:

        def tick() -> None:
            bar.update(int(np.count_nonzero(status[:, 0])) - bar.n)

        if workers <= 1 or n < 64:
            spec = InputSpec(size, mode)
            for a in range(0, n, 64):
                _decode_rows(ds, range(a, min(a + 64, n)), images, status, spec, reasons.__setitem__)
                tick()
            return reasons
        chunk = max(1, min(256, n // (workers * 8)))
        counter = multiprocessing.Value("q", 0)
        run_workers(
            _decode_shard,
            (ds, str(tmp), size, mode, counter, chunk),
            min(workers, math.ceil(n / chunk)),
            lambda msg: reasons.__setitem__(*msg),
            tick,
            name="cxr-prepare",
        )
        tick()
    return reasons


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


def _default_workers() -> int:
    """The CPUs this process may run on (a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _check_replaceable(out: Path) -> None:
    """CacheError unless ``out`` is absent, empty or a cache folder (never replace someone's files)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise CacheError(f"{out}: exists and is a file, expected a cache folder")
    names = sorted(os.listdir(out))
    if names and not ((out / "manifest.json").exists() and _only_cache_files(out)):
        other = next((n for n in names if n not in _FILES), names[0])
        raise CacheError(
            f"{out} exists and is not a cxrkit cache (it holds {other!r}); choose an empty or new folder"
        )


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
    every source file, so computing it twice costs a second pass over 100k files). A damaged
    cache is rebuilt; build folders abandoned by killed processes beside ``out`` are removed.
    """
    start = time.perf_counter()
    out = Path(out)
    if not dataset.has_images:
        raise CacheError(f"{dataset.source} dataset has no images to cache (metadata only)")
    if len(dataset) == 0:
        raise CacheError(f"{dataset.source} dataset has 0 images; nothing to cache")
    key = key or cache_key(dataset, size, mode)
    remove_abandoned_builds(out.parent)
    manifest = None if force else _valid_for(out, key)
    if manifest is not None:
        return PrepareResult(
            out,
            True,
            manifest["n_images"],
            time.perf_counter() - start,
            [tuple(r) for r in manifest.get("failures", [])],
        )
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = build_folder(out)
    tmp.mkdir()
    try:
        result = _build(dataset, tmp, key, size, mode, workers or _default_workers(), progress)
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PrepareResult(out, False, result[0], time.perf_counter() - start, result[1])


def _build(
    ds: XRayDataset, tmp: Path, key: str, size: int, mode: ResizeMode, workers: int, progress: bool
) -> tuple[int, list[tuple[str, str]]]:
    """Decode ``ds`` into the build folder ``tmp``, write its tables, then the manifest (last)."""
    n = len(ds)
    fmt = np.lib.format
    images = fmt.open_memmap(tmp / _PARTS[0], mode="w+", dtype=np.uint8, shape=(n, size, size))
    status = fmt.open_memmap(tmp / _PARTS[1], mode="w+", dtype=np.int32, shape=(n, 3))
    reasons = _decode_all(ds, tmp, images, status, mode, workers, progress)
    images.flush()
    state = np.array(status[:, 0])
    dims = np.array(status[:, 1:3])
    del images, status
    if (state == 0).any():
        raise CacheError(f"{tmp}: {int((state == 0).sum())} of {n} images were not decoded; try again")
    kept = np.flatnonzero(state == KEPT)
    where = ds.meta["path"] if "path" in ds.meta.columns else ds.meta["image_id"]
    failures = [
        (str(where.iat[i]), reasons.get(int(i), "not decoded")) for i in np.flatnonzero(state == FAILED)
    ]
    if not len(kept):
        first = "; ".join(f"{shorten(w)}: {r}" for w, r in failures[:3])
        raise CacheError(f"none of the {n} images could be decoded ({first})")
    if failures:  # compact: keep only the decoded rows
        _save_rows(tmp / "images.npy", np.load(tmp / _PARTS[0], mmap_mode="r"), kept)
        (tmp / _PARTS[0]).unlink()
    else:
        os.replace(tmp / _PARTS[0], tmp / "images.npy")
    (tmp / _PARTS[1]).unlink()
    meta = ds.meta.iloc[kept].reset_index(drop=True)
    meta["src_w"] = dims[kept, 0]
    meta["src_h"] = dims[kept, 1]
    write_text(tmp / "meta.csv", meta.to_csv(index=False))  # read back as is: not escaped
    write_text(tmp / "boxes.csv", _cached_boxes(ds.boxes, meta, size, mode).to_csv(index=False))
    write_csv(tmp / "failures.csv", pd.DataFrame(failures, columns=["file", "reason"]), index=False)
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
        "files": {name: (tmp / name).stat().st_size for name in _FILES if name != "manifest.json"},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    write_text(tmp / "manifest.json", json.dumps(manifest, indent=1))  # written last
    return len(kept), failures


def _save_rows(path: Path, src: np.ndarray, rows: np.ndarray, block: int = 1024) -> None:
    """Write ``src[rows]`` as a .npy file a block of rows at a time (never all of it in memory)."""
    header = {
        "descr": np.lib.format.dtype_to_descr(src.dtype),
        "fortran_order": False,
        "shape": (len(rows), *src.shape[1:]),
    }

    def writer(fh: IO[bytes]) -> None:
        np.lib.format.write_array_header_1_0(fh, header)
        for a in range(0, len(rows), block):
            fh.write(np.ascontiguousarray(src[rows[a : a + block]]).tobytes())

    write_with(path, writer)


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace ``out`` by the finished ``tmp`` folder; an old cache is removed only after."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _read_table(path: Path, dtype: dict) -> pd.DataFrame:
    """A cache's CSV table, or CacheError naming it when it does not parse.

    Only empty cells are missing values (as written), so ids such as "NA" or "null" stay ids.
    """
    try:
        cols = pd.read_csv(path, nrows=0).columns
        return pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values={c: [""] for c in cols})
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise CacheError(f"{path}: unreadable ({type(err).__name__}: {err}); {REBUILD}") from None


class CachedDataset(XRayDataset):
    """A prepared cache: memory-mapped (N, S, S) uint8 images with the source's metadata and boxes."""

    source = "cache"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.images = np.load(self.path / "images.npy", mmap_mode="r")
        meta = _read_table(self.path / "meta.csv", {"image_id": str, "patient_id": str})
        boxes = _read_table(self.path / "boxes.csv", {"image_id": str, "label": str})
        if len(meta) != self.manifest["n_images"]:
            raise CacheError(
                f"{self.path / 'meta.csv'}: {len(meta):,} rows, the manifest says "
                f"{self.manifest['n_images']:,} images; {REBUILD}"
            )
        self.source = f"cache:{self.manifest['source']}"
        try:
            super().__init__(meta, self.manifest["labels"], task=self.manifest["task"], boxes=boxes)
        except ValueError as err:
            raise CacheError(f"{self.path / 'meta.csv'}: {err}; {REBUILD}") from None

    def load_image(self, i: int) -> np.ndarray:
        return np.array(self.images[i])

    def fingerprint(self) -> str:
        return self.manifest["key"]


def from_config(cfg) -> CachedDataset:
    """``data.source: cache``: a folder ``cxr prepare`` wrote."""
    from cxrkit.data.base import require_path

    return CachedDataset(require_path(cfg))
