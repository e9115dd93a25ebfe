"""The monitor log: one JSON line per study a deployed run saw (``--monitor DIR``), for ``cxr monitor``.

A record holds what drift monitoring needs and nothing that names a patient: the time, a digest of
the image id (not the id: file names can hold names), the run's digest (weights and model.json), the status
(scored / out of distribution / unreadable / not assessable), the OOD score, the low-dimensional
feature summary, the image's acquisition statistics (grey level, contrast, sharpness: eight
numbers, no pixels), the calibrated probabilities and triage score, the flag, and the DICOM header
fields of ``data.header`` (age, sex, view, body part, manufacturer, model, kVp, exposure). Lines are
appended under an exclusive lock, so the service's workers and several processes can share a log.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np

LOG_FILE = "monitor.jsonl"


def monitor_id(run_dir: str | Path) -> str:
    """Which model a record came from: its weights and its model.json together (a site-calibrated run
    shares its parent's weights but not its decisions, and its records must not mix with the parent's)."""
    from cxrkit.run import files
    from cxrkit.run.onnx import weights_digest

    h = hashlib.sha256(weights_digest(Path(run_dir)).encode())
    h.update((Path(run_dir) / files.PACKAGE).read_bytes())
    return h.hexdigest()[:16]


def study_digest(image_id: str) -> str:
    """A short digest standing for an image id in the log (the id itself may carry a name)."""
    return hashlib.sha256(str(image_id).encode()).hexdigest()[:16]


def _num(v) -> float | None:
    v = float(v)
    return round(v, 6) if math.isfinite(v) else None


def record(
    *,
    image_id: str,
    run: str,
    status: str,
    flag: str,
    triage_score: float = float("nan"),
    ood_score: float = float("nan"),
    summary: np.ndarray | None = None,
    probs: np.ndarray | None = None,
    header: dict | None = None,
    when: float | None = None,
    pixels: np.ndarray | None = None,
) -> dict:
    """One study's monitor record (JSON-ready; NaN stored as null)."""
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when if when is not None else time.time())),
        "study": study_digest(image_id),
        "run": run,
        "status": status,
        "flag": flag,
        "triage_score": _num(triage_score),
        "ood_score": _num(ood_score),
        "summary": [_num(v) for v in summary] if summary is not None else None,
        "probs": [_num(v) for v in probs] if probs is not None else None,
        "pixels": [_num(v) for v in pixels] if pixels is not None else None,
        "header": {k: v for k, v in (header or {}).items()},
    }


def append_records(folder: str | Path, records: list[dict]) -> Path:
    """Append ``records`` to ``folder``/monitor.jsonl (created with the folder) under an exclusive lock."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOG_FILE
    text = "".join(json.dumps(r, allow_nan=False, separators=(",", ":")) + "\n" for r in records)
    with open(path, "a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            fh.write(text)
            fh.flush()
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    return path


def read_records(folder: str | Path) -> tuple[list[dict], int]:
    """(records in file order, number of malformed lines skipped) from ``folder``/monitor.jsonl."""
    path = Path(folder) / LOG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no monitor log (record one with `--monitor {folder}`)")
    out, bad = [], 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                r = json.loads(line)
            except ValueError:
                r = None
            if well_formed(r):
                out.append(r)
            else:
                bad += 1  # a torn or hand-edited line: counted and said, never fatal
    return out, bad


LIMIT = 1e6  # no summary, score or statistic the log holds is this large: a larger one is damage


def _number(x) -> bool:
    """A finite number of a sensible size (an int too large for a float, NaN, 1e308: not)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(float(x)) and abs(float(x)) < LIMIT
    except OverflowError:
        return False


def _numbers(v) -> bool:
    return isinstance(v, list) and bool(v) and all(x is None or _number(x) for x in v)


def well_formed(r) -> bool:
    """A record as ``record`` writes it: a UTC time, text fields, numbers where numbers go."""
    if not isinstance(r, dict) or not isinstance(r.get("time"), str) or not isinstance(r.get("status"), str):
        return False
    try:
        time.strptime(r["time"], "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return False
    for key in ("triage_score", "ood_score"):
        v = r.get(key)
        if v is not None and not _number(v):
            return False
    if not isinstance(r.get("header", {}), dict) or not isinstance(r.get("flag", ""), str):
        return False
    return all(r.get(k) is None or _numbers(r[k]) for k in ("summary", "probs", "pixels"))


def table_records(table, prepared, ood, labels, run_id: str) -> list[dict]:
    """Monitor records of one prediction table (``RunModel.table``'s rows, ``prepared`` and ``ood``
    as scored): every input, scored or not, in table order."""
    row_of_ok = {int(k): j for j, k in enumerate(prepared.ok)}
    now = time.time()
    out = []
    for k, r in enumerate(prepared.rows):
        j = row_of_ok.get(k)
        flag = str(table["triage_flag"].iat[k])
        status = (
            r["status"]
            if r["error"]
            else ("out of distribution" if flag == "out of distribution" else "scored")
        )
        out.append(
            record(
                image_id=r["image_id"],
                run=run_id,
                status=status,
                flag=flag,
                triage_score=float(table["triage_score"].iat[k]),
                ood_score=float(ood.scores[j]) if j is not None and ood is not None else float("nan"),
                summary=ood.summary[j]
                if j is not None and ood is not None and ood.summary is not None
                else None,
                probs=table.loc[k, list(labels)].to_numpy(np.float64) if j is not None else None,
                header=r.get("header"),
                when=now,
                pixels=ood.pixels[j]
                if j is not None and ood is not None and ood.pixels is not None
                else None,
            )
        )
    return out
