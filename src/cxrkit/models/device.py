"""Device choice, in one place: ``auto`` is CUDA when available, else the CPU."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``/``cuda``/``cpu`` -> a torch device; ``cuda`` without a GPU is an error, not a silent CPU."""
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device {name!r}: expected auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda: no CUDA GPU is available here; use --device cpu or auto")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank)
    return torch.device("cpu")
