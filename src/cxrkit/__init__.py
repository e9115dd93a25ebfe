"""cxrkit: chest X-ray disease classification on NIH ChestX-ray14 and ChestMNIST.

The public API, imported lazily (``import cxrkit`` loads neither torch nor any data):
``train``, ``load_run``, ``Run``, ``create_model``, ``build_dataset``, ``RunConfig``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.2.0"

_API = {
    "train": "cxrkit.api",
    "load_run": "cxrkit.api",
    "Run": "cxrkit.api",
    "create_model": "cxrkit.models",
    "build_dataset": "cxrkit.data",
    "RunConfig": "cxrkit.config",
}

__all__ = ["Run", "RunConfig", "__version__", "build_dataset", "create_model", "load_run", "train"]


def __getattr__(name: str) -> Any:
    """Import the public names on first use (PEP 562)."""
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'cxrkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
