"""``cxr monitor RUN DIR``: drift of what a deployed run received, window by window, without labels.

Reads DIR/monitor.jsonl (written by ``cxr predict --monitor DIR`` and ``cxr serve --monitor DIR``),
cuts the run's records into windows (``--window 200``: consecutive studies; ``1d``/``12h``/``30m``:
calendar periods), and scores each window against the run's validation reference with
``evaluate.drift`` (feature MMD, KS on OOD and triage scores, the flag rate, chi-squared on header
categories; one signal, an alarm threshold set for about 5% false alarms on validation windows).
Writes monitor.csv and monitor.html; the caller exits 3 when the last window alarms.
"""

from __future__ import annotations

import calendar
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cxrkit.evaluate.drift import COMPONENTS, PIXEL_STATS, DriftReference, Window, fit_drift, window_signal
from cxrkit.outputs import make_out_dir, write_csv, write_text
from cxrkit.run.data import Log
from cxrkit.run.model import RunModel
from cxrkit.run.monitor_log import monitor_id, read_records

MONITOR_CSV, MONITOR_HTML = "monitor.csv", "monitor.html"
PERIOD = {"m": 60, "h": 3600, "d": 86400}
SCORED = ("scored", "out of distribution")


def val_window(run: RunModel) -> Window:
    """The run's validation images as a window: the reference every monitored window is compared with."""
    ref = run.ood
    if ref is None or not len(ref.val_triage):
        raise ValueError(
            f"{run.path}: no monitoring reference in its OOD reference (a run packaged before cxrkit stored "
            f"one); run `cxr package {run.path}` (it needs the run's data)"
        )
    threshold = (run.members[0].package if run.members else run.package).operating_point.threshold
    relative = ref.relative(ref.val_scores)  # the scale the log records
    return Window(
        ref.val_summary,
        relative,
        ref.val_triage,
        (ref.val_triage >= threshold)
        & (relative <= 1.0),  # as logged: a study out of distribution is not "abnormal"
        {"view": [str(v) for v in ref.val_views], "sex": [str(v) for v in ref.val_sexes]},
        ref.val_pixels if ref.val_pixels.shape == (len(ref.val_scores), len(PIXEL_STATS)) else None,
    )


def parse_window(spec: str) -> tuple[str, int]:
    """``200`` -> ("count", 200); ``1d``/``12h``/``30m`` -> ("time", seconds)."""
    m = re.fullmatch(r"\s*(\d+)\s*([mhd]?)\s*", str(spec))
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"--window {spec!r}: expected a number of studies (200) or a period (1d, 12h, 30m)")
    n, unit = int(m.group(1)), m.group(2)
    if not unit and n < 20:
        raise ValueError(f"--window {n}: a window needs at least 20 studies for its statistics")
    return ("time", n * PERIOD[unit]) if unit else ("count", n)


def _seconds(r: dict) -> float:
    """The record's UTC time in seconds (calendar days are UTC days, whatever the host's zone)."""
    return float(calendar.timegm(time.strptime(r["time"], "%Y-%m-%dT%H:%M:%SZ")))


def cut_windows(records: list[dict], spec: str) -> list[list[dict]]:
    """Records (in time order) cut into windows by ``spec`` (see ``parse_window``); a trailing count
    window with fewer than half the studies is left for the next run."""
    kind, size = parse_window(spec)
    records = sorted(records, key=_seconds)
    if kind == "count":
        chunks = [records[s : s + size] for s in range(0, len(records), size)]
        return [c for c in chunks if len(c) >= max(20, size // 2)]
    buckets: dict[int, list[dict]] = {}
    for r in records:
        buckets.setdefault(int(_seconds(r) // size), []).append(r)
    return [buckets[k] for k in sorted(buckets)]


def record_window(records: list[dict]) -> Window:
    """The scored studies of a window as arrays (records of unreadable / not assessable studies have none;
    a record whose numbers are missing, non-finite or of another length than the rest is left out)."""
    scored = [r for r in records if r.get("status") in SCORED and r.get("summary")]
    if scored:
        k = max({len(r["summary"]) for r in scored}, key=[len(r["summary"]) for r in scored].count)
        scored = [
            r
            for r in scored
            if len(r["summary"]) == k
            and all(v is not None for v in r["summary"])
            and r.get("ood_score") is not None
            and r.get("triage_score") is not None
        ]
    return Window(
        np.array([[np.nan if v is None else v for v in r["summary"]] for r in scored], np.float64).reshape(
            len(scored), -1
        ),
        np.array([np.nan if r.get("ood_score") is None else r["ood_score"] for r in scored], np.float64),
        np.array(
            [np.nan if r.get("triage_score") is None else r["triage_score"] for r in scored], np.float64
        ),
        np.array([r.get("flag") == "abnormal" for r in scored], bool),
        {k: [str((r.get("header") or {}).get(k, "")).upper() for r in scored] for k in ("view", "sex")},
        np.array([[np.nan if v is None else v for v in r["pixels"]] for r in scored], np.float64)
        if scored and all(r.get("pixels") and len(r["pixels"]) == len(PIXEL_STATS) for r in scored)
        else None,
    )


def window_row(k: int, records: list[dict], drift: DriftReference) -> dict:
    """One row of monitor.csv: the window's span and counts, its drift signal and components."""
    w = record_window(records)
    row = {
        "window": k + 1,
        "start": min(r["time"] for r in records),
        "end": max(r["time"] for r in records),
        "studies": len(records),
        "scored": len(w.ood),
        "not_scored": sum(r.get("status") not in SCORED for r in records),
        "out_of_distribution": sum(r.get("status") == "out of distribution" for r in records),
        "flagged_abnormal": int(w.flagged.sum()),
    }
    row["threshold"] = drift.threshold  # fitted at this window's size
    if len(w.ood) >= 20:
        row.update(window_signal(w, drift))
    else:
        row.update(signal=float("nan"), driver="", alarm=False)
    return row


def alarm_examples(windows: list[list[dict]], frame: pd.DataFrame, per_window: int = 5) -> pd.DataFrame:
    """The most unusual studies (highest OOD score) of each alarmed window: digest, status, flag, score
    and header facts, for a reader to pull up in the PACS."""
    rows = []
    for k in np.flatnonzero(frame["alarm"].to_numpy(bool)):
        scored = [r for r in windows[k] if r.get("ood_score") is not None]
        for r in sorted(scored, key=lambda r: -r["ood_score"])[:per_window]:
            head = r.get("header") or {}
            rows.append(
                {
                    "window": k + 1,
                    "time": r["time"],
                    "study": r["study"],
                    "status": r["status"],
                    "ood_score": r["ood_score"],
                    "triage_score": r.get("triage_score"),
                    **{f: head.get(f, "") for f in ("view", "manufacturer", "model", "age")},
                }
            )
    return pd.DataFrame(rows)


def monitor_run(
    run_dir: str | Path,
    folder: str | Path,
    window: str = "200",
    out: str | Path | None = None,
    simulations: int = 200,
    log: Log = print,
) -> tuple[pd.DataFrame, Path]:
    """Score every window of ``folder``'s monitor log for ``run_dir``; write monitor.csv/html to ``out``."""
    run = RunModel.load(run_dir, "cpu")
    reference = val_window(run)
    records, bad = read_records(folder)
    run_id = monitor_id(run.path)
    mine = [r for r in records if r.get("run") == run_id]
    if bad or len(mine) < len(records):
        log(
            f"note: {len(records) - len(mine):,} records of other runs (or older weights) and {bad:,} "
            "malformed lines skipped"
        )
    windows = cut_windows(mine, window)
    if not windows:
        raise ValueError(
            f"{folder}: {len(mine):,} records of this run; not one window of {window} (too few studies yet)"
        )
    fits: dict[int, DriftReference] = {}  # the null depends on the window's size: one fit per size

    def drift_for(n: int) -> DriftReference:
        if n not in fits:
            fits[n] = fit_drift(reference, window=n, simulations=simulations)
        return fits[n]

    frame = pd.DataFrame(
        [window_row(k, w, drift_for(max(20, len(record_window(w).ood)))) for k, w in enumerate(windows)]
    )
    drift = drift_for(max(20, int(np.median([len(record_window(w).ood) for w in windows]))))
    examples = alarm_examples(windows, frame)
    out = make_out_dir(Path(out) if out else Path(folder))
    write_csv(out / MONITOR_CSV, frame, index=False)
    from cxrkit.report.monitor import monitor_page

    write_text(out / MONITOR_HTML, monitor_page(frame, drift.threshold, run.path.name, window, examples))
    last = frame.iloc[-1]
    alarms = int(frame["alarm"].sum())
    log(
        f"{len(frame)} windows of {window} ({len(mine):,} studies): {alarms} alarm(s); drift signal "
        f"threshold {drift.threshold:.3g} at the median window size (about 5% false alarms on validation "
        "windows of each size)"
    )
    log(
        f"last window ({last['start']} to {last['end']}, {last['studies']} studies): "
        f"signal {last['signal']:.3g}"
        + (f", ALARM (moved most: {last['driver']})" if last["alarm"] else ", no alarm")
    )
    log(f"wrote {out / MONITOR_CSV} and {out / MONITOR_HTML}")
    return frame, out


__all__ = ["COMPONENTS", "monitor_run"]
