"""Every file cxrkit writes goes through here: a temporary file, then a rename.

The temporary file is created exclusively (``O_EXCL``) in the destination folder and never through
a symlink (``O_NOFOLLOW``), then renamed over the destination, which replaces a symlink there
rather than writing through it. A crash or a full disk leaves the old file (or none), never half
of one. CSV tables are escaped so that spreadsheets do not run cells as formulas.
"""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what Excel/LibreOffice/Sheets read as a formula


def write_with(path: str | Path, writer: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``writer(fileobj)`` on a fresh temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder, expected a file name to write")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, flags, 0o644)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path.parent}: output folder does not exist") from None
    except PermissionError:
        raise PermissionError(f"{path.parent}: output folder is not writable") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            writer(fh)
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` safely (see the module docstring)."""
    return write_with(path, lambda fh: fh.write(data))


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` safely."""
    return write_bytes(path, text.encode("utf-8"))


def csv_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula, prefixed with ``'``; other values unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells and column names cannot start a spreadsheet formula."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object or str(out[col].dtype) in ("string", "str"):
            out[col] = out[col].map(csv_cell)
    out.columns = [csv_cell(c) for c in out.columns]
    return out


def write_csv(path: str | Path, frame: pd.DataFrame, **kwargs: Any) -> Path:
    """Write a DataFrame as CSV safely, formula-like cells escaped (``to_csv`` keyword arguments pass on)."""
    buf = io.StringIO()
    csv_safe(frame).to_csv(buf, **kwargs)
    return write_text(path, buf.getvalue())
