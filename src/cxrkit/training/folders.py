"""The new run's folder: claimed atomically, removed again when a start fails before its first checkpoint."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from cxrkit.config import RunConfig
from cxrkit.run import files
from cxrkit.training import distributed as ddp


def claim_folder(base: Path, reuse_empty: bool) -> tuple[Path, bool]:
    """A new folder ``base`` (or ``base-2``, ``base-3``...), made atomically; (path, made here).

    ``reuse_empty`` (a name the user chose): an existing empty ``base`` is taken as is. A generated
    (timestamp) name never reuses a folder, so two runs started in the same second get their own.
    """
    path, k = base, 2
    while True:
        try:
            path.mkdir(parents=True)
            return path, True
        except FileExistsError:
            if reuse_empty and path == base and path.is_dir() and not any(path.iterdir()):
                return path, False
        path, k = base.with_name(f"{base.name}-{k}"), k + 1


def new_run_dir(cfg: RunConfig, info: ddp.DistInfo) -> tuple[Path, bool]:
    """The new run's folder (rank 0 claims it, every rank gets it) and whether rank 0 created it."""
    made = False
    if info.main:
        base = Path(cfg.out) / (
            cfg.name or f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.model.name.replace(':', '-')}"
        )
        path, made = claim_folder(base, reuse_empty=bool(cfg.name))
        run = str(path)
    else:
        run = ""
    return Path(ddp.broadcast(info, run)), made


def check_out(out: str | Path) -> None:
    """Refuse, before any cache is built, an ``out`` that is (or lies under) a file."""
    for folder in (Path(out), *Path(out).parents):
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"out: {folder} is a file; expected a folder for run folders")


def discard_unstarted(run_dir: Path, made: bool) -> None:
    """Remove what a start that failed before its first checkpoint wrote (the folder too if made here)."""
    if (run_dir / files.LAST).exists() or (run_dir / files.BEST).exists():
        return  # a checkpoint is worth keeping (--resume continues from it)
    if made:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for child in run_dir.iterdir():  # the folder was empty before this run: only its own files are here
        shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)


def resumable(run_dir: Path) -> Path:
    """``run_dir`` when ``--resume`` can continue it; else one line saying what it is not."""
    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(
            f"--resume {run_dir}: is a file, not a run folder (give the folder cxr train wrote)"
        )
    if not run_dir.is_dir():
        raise FileNotFoundError(f"--resume {run_dir}: no such run folder")
    if not (run_dir / files.CONFIG).is_file():
        raise FileNotFoundError(
            f"--resume {run_dir}: not a run folder (no {files.CONFIG}); give a folder that cxr train wrote"
        )
    return run_dir
