"""Every file cxrkit writes goes through here: a temporary file, then a rename.

The temporary file is created exclusively (``O_EXCL``) in the destination folder and never through
a symlink (``O_NOFOLLOW``), then renamed over the destination, which replaces a symlink there
rather than writing through it. A crash or a full disk leaves the old file (or none), never half
of one. CSV tables are escaped so that spreadsheets do not run cells as formulas: a text cell
starting with a formula character (``= + - @``, tab, carriage return), or with ``'``s before one,
gets one more ``'`` in front. ``read_csv`` strips exactly that one, so every table round-trips.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import stat
from collections.abc import Callable, Sequence
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
    try:
        mode = os.stat(path, follow_symlinks=False).st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):  # /dev/null, a FIFO, a socket
        raise ValueError(f"{path}: is a device, FIFO or socket, expected a regular file to write")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, flags, 0o644)
    except FileNotFoundError:
        if path.parent.is_dir():  # /proc, /sys: a pseudo file system that takes no new files
            raise PermissionError(
                f"{path.parent}: output folder is not writable (a pseudo file system)"
            ) from None
        raise FileNotFoundError(f"{path.parent}: output folder does not exist") from None
    except PermissionError:
        raise PermissionError(f"{path.parent}: output folder is not writable") from None
    except FileExistsError:
        raise
    except OSError as err:  # a read-only file system, a full disk, a name too long
        raise PermissionError(
            f"{path.parent}: output folder is not writable ({err.strerror or err})"
        ) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            try:  # a replaced file keeps its permissions (a 0600 file of patient data stays 0600)
                old = os.stat(path, follow_symlinks=False)
                if stat.S_ISREG(old.st_mode):
                    os.fchmod(fh.fileno(), stat.S_IMODE(old.st_mode))
            except FileNotFoundError:
                pass
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


NULL_REASON = "null: a value that cannot be computed here (e.g. ROC-AUC of a label with one class present)"


def json_safe(obj: Any) -> Any:
    """JSON-ready copy: NaN and +-inf -> None, numpy scalars and arrays -> Python, tuples -> lists."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _has_null(obj: Any) -> bool:
    if isinstance(obj, dict):
        return any(_has_null(v) for v in obj.values())
    if isinstance(obj, list):
        return any(_has_null(v) for v in obj)
    return obj is None


def write_json(path: str | Path, obj: Any, null_reason: str | None = NULL_REASON) -> Path:
    """Write ``obj`` as strict JSON (no bare NaN/Infinity), atomically.

    Non-finite numbers become null; when any value is null and ``obj`` is a dict, its ``nulls`` key
    says why (``null_reason``), so a reader never has to guess.
    """
    import json

    safe = json_safe(obj)
    if null_reason and isinstance(safe, dict) and "nulls" not in safe and _has_null(safe):
        safe["nulls"] = null_reason
    return write_text(path, json.dumps(safe, indent=1, allow_nan=False) + "\n")


def read_json(path: str | Path) -> Any:
    """A JSON file cxrkit wrote, as Python; one clear error naming the file when it is missing or broken."""
    import json

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise ValueError(f"{path}: not readable JSON ({type(err).__name__}: {err})") from None


def _formula_like(value: str) -> bool:
    """Text a spreadsheet would run as a formula, once any leading ``'`` are taken away."""
    return value.lstrip("'").startswith(FORMULA_START)


def csv_cell(value: Any) -> Any:
    """A formula-like text cell (also after leading ``'``) with one ``'`` prefixed; other values unchanged."""
    if isinstance(value, str) and _formula_like(value):
        return "'" + value
    return value


def uncsv_cell(value: Any) -> Any:
    """Undo ``csv_cell``: one leading ``'`` stripped from formula-like text; other values unchanged."""
    if isinstance(value, str) and value.startswith("'") and _formula_like(value):
        return value[1:]
    return value


def _is_text(values: Any) -> bool:
    """Whether a column or index holds text (object, string or categorical dtype)."""
    return values.dtype == object or str(values.dtype) in ("string", "str", "category")


def csv_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells, index and column names cannot start a spreadsheet formula."""
    import pandas as pd

    out = frame.copy()
    for i in range(out.shape[1]):
        col = out.iloc[:, i]
        if _is_text(col):
            out.isetitem(
                i, col.astype(object).map(csv_cell) if col.dtype == "category" else col.map(csv_cell)
            )
    out.columns = [csv_cell(c) for c in out.columns]
    if not isinstance(out.index, pd.MultiIndex) and _is_text(out.index):
        out.index = pd.Index([csv_cell(v) for v in out.index], name=csv_cell(out.index.name))
    return out


def write_csv(path: str | Path, frame: pd.DataFrame, **kwargs: Any) -> Path:
    """Write a DataFrame as CSV safely, formula-like cells escaped (``to_csv`` keyword arguments pass on)."""
    buf = io.StringIO()
    csv_safe(frame).to_csv(buf, **kwargs)
    return write_text(path, buf.getvalue())


def read_csv(path: str | Path, text: Sequence[str] = (), **kwargs: Any) -> pd.DataFrame:
    """Read a CSV that ``write_csv`` wrote, un-escaped; ``text``: columns kept as exact strings.

    A ``text`` column (e.g. ``image_id``) is never missing: "NA", "null" and "" stay as written. Other
    columns follow ``kwargs`` (``pandas.read_csv`` keyword arguments); without ``na_values`` or
    ``keep_default_na`` there, only an empty cell is missing, as ``write_csv`` writes it.
    """
    import pandas as pd

    na_args = {"na_values", "keep_default_na", "na_filter"} & kwargs.keys()
    if text and na_args:
        raise TypeError(
            f"read_csv({path}): text columns set missing values themselves; drop {sorted(na_args)}"
        )
    if text:
        header = pd.read_csv(path, nrows=0, sep=kwargs.get("sep", ","), encoding=kwargs.get("encoding"))
        raw = {uncsv_cell(c): c for c in header.columns}
        absent = [c for c in text if c not in raw]
        if absent:
            raise ValueError(f"{path}: no column(s) {absent}; expected them among {list(raw)}")
        exact = {raw[c] for c in text}
        dtype = kwargs.get("dtype") or {}
        if not isinstance(dtype, dict):
            raise TypeError(f"read_csv({path}): with text columns dtype must be a dict, got {dtype!r}")
        kwargs["dtype"] = {**dtype, **{raw[c]: str for c in text}}
        kwargs["na_values"] = {c: ([] if c in exact else [""]) for c in header.columns}
        kwargs["keep_default_na"] = False
    elif not na_args:
        kwargs.update(na_values=[""], keep_default_na=False)
    frame = pd.read_csv(path, **kwargs)
    for i in range(frame.shape[1]):
        col = frame.iloc[:, i]
        if _is_text(col):
            frame.isetitem(i, col.map(uncsv_cell))
    frame.columns = [uncsv_cell(c) for c in frame.columns]
    if not isinstance(frame.index, pd.MultiIndex) and _is_text(frame.index):
        frame.index = pd.Index([uncsv_cell(v) for v in frame.index], name=uncsv_cell(frame.index.name))
    return frame


def make_out_dir(path: str | Path) -> Path:
    """Create an output folder (and parents); one clear error when a file is in the way or it is read-only."""
    path = Path(path)
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            raise NotADirectoryError(f"{parent}: exists and is a file, expected a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise PermissionError(f"{path}: cannot create the output folder (permission denied)") from None
    except FileNotFoundError:  # /proc, /sys: a pseudo file system takes no new folders
        raise PermissionError(f"{path}: output folder is not writable (a pseudo file system)") from None
    except OSError as err:  # a read-only file system
        raise PermissionError(f"{path}: output folder is not writable ({err.strerror or err})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"{path}: output folder is not writable")
    return path


def printable(name: object) -> str:
    """A file name safe to print on one line: control characters (newlines, terminal escapes) escaped."""
    text = str(name)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def unique_stems(sources: list[str], limit: int = 80) -> list[str]:
    """File-name-safe stems for output files, one per input, never two alike.

    ``/a/x.png`` and ``/b/x.png``, or ``ä.png`` and ``ö.png`` (both ``_`` once made ASCII-safe), get
    a short hash of their full source path appended; a plain, unique name is kept as it is.
    """
    import hashlib

    def clean(source: str) -> str:
        return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(source).stem).strip("._")[:limit] or "image"

    stems = [clean(s) for s in sources]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    out = []
    for source, stem in zip(sources, stems, strict=True):
        if counts[stem] > 1 or stem != Path(source).stem:
            stem = f"{stem}-{hashlib.sha1(source.encode('utf-8', 'surrogateescape')).hexdigest()[:8]}"
        out.append(stem)
    return out
