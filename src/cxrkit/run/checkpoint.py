"""Checkpoints: state dict + model name, labels, config, run format and versions; written atomically.

Loaded with ``weights_only=True``: everything stored is tensors, numbers, strings, lists and dicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cxrkit import __version__
from cxrkit.outputs import write_with
from cxrkit.run.files import RUN_FORMAT


def save_checkpoint(path: str | Path, **payload: Any) -> Path:
    """Write a checkpoint (temp file then rename: a crash never leaves a half-written one)."""
    # the payload's keys are format 1 (the new ones are optional); model.json carries the format that matters
    payload = {"cxrkit_version": __version__, "run_format": 1, **payload}
    return write_with(path, lambda fh: torch.save(payload, fh))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely (no pickled code); a clear error for a missing, foreign or newer file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt/unsafe files
        raise ValueError(f"{path}: not a readable cxrkit checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or "model_state" not in ckpt:
        raise ValueError(f"{path}: not a cxrkit checkpoint (no model_state)")
    fmt = ckpt.get("run_format", 1)
    if not isinstance(fmt, int) or fmt > RUN_FORMAT:
        raise ValueError(
            f"{path}: checkpoint format {fmt} (written by cxrkit {ckpt.get('cxrkit_version', 'unknown')}) "
            f"is newer than this cxrkit {__version__} reads (format {RUN_FORMAT}); upgrade cxrkit"
        )
    return ckpt


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a module's state (not a live reference)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
