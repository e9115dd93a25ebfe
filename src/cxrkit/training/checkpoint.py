"""Checkpoints: state dict + model name, labels, config and version; written atomically.

Loaded with ``weights_only=True``: everything stored is tensors, numbers, strings, lists and dicts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from cxrkit import __version__


def save_checkpoint(path: str | Path, **payload: Any) -> Path:
    """Write a checkpoint (temp file then rename: a crash never leaves a half-written one)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"cxrkit_version": __version__, **payload}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely (no pickled code); a clear error for a missing or foreign file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt/unsafe files
        raise ValueError(f"{path}: not a readable cxrkit checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(ckpt, dict) or "model_state" not in ckpt:
        raise ValueError(f"{path}: not a cxrkit checkpoint (no model_state)")
    return ckpt


def cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a module's state (not a live reference)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
