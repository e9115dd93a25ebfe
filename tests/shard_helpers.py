"""An archive of PNGs and a row-by-row comparison for the sharded prediction's tests (one process, Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from conftest import chest_like, png_bytes


def make_archive(root: Path, n: int, size: int = 64) -> Path:
    """``n`` PNGs in two sub-folders plus an empty file (a row that is not scored)."""
    for k in range(n):
        folder = root / ("ab"[k % 2])
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"x{k:04d}.png").write_bytes(png_bytes(chest_like(size, size, seed=k)))
    (root / "a" / "empty.png").write_bytes(b"")
    return root


def assert_same_rows(parts: pd.DataFrame, plain: pd.DataFrame) -> None:
    """Every input once in ``parts``, each row equal to plain predict's (numbers to 1e-6)."""
    assert parts["source"].is_unique and sorted(parts["source"]) == sorted(plain["source"])
    parts = parts.set_index("source").loc[plain["source"]]
    assert list(parts.columns) == [c for c in plain.columns if c != "source"]
    for col in parts.columns:
        if pd.api.types.is_float_dtype(plain[col]):
            np.testing.assert_allclose(parts[col].to_numpy(float), plain[col].to_numpy(float), atol=1e-6)
        else:
            text = [("" if v is None or v != v else str(v)) for v in parts[col]]
            assert text == [("" if v is None or v != v else str(v)) for v in plain[col]], col
