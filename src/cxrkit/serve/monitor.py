"""The service's side of drift monitoring (``cxr serve --monitor DIR``): every scored study is
appended to DIR/monitor.jsonl, and the last ``window`` studies give the Prometheus gauges
``cxr_drift_signal`` / ``cxr_drift_alarm`` (same statistic and threshold as ``cxr monitor``)."""

from __future__ import annotations

import collections
import threading
from pathlib import Path

import numpy as np

from cxrkit.evaluate.drift import fit_drift, window_signal
from cxrkit.run.model import RunModel
from cxrkit.run.monitor_log import append_records, monitor_id
from cxrkit.workflows.monitor import record_window, val_window

REFRESH = 10  # recompute the gauges every this many new studies (a window statistic costs milliseconds)


class ServiceMonitor:
    """Appends records and keeps the drift signal of the most recent window."""

    def __init__(self, run: RunModel, folder: str | Path, window: int = 200) -> None:
        self.folder, self.window = Path(folder), int(window)
        self.run_id = monitor_id(run.path)
        self.drift = fit_drift(val_window(run), window=self.window)
        self.recent: collections.deque = collections.deque(maxlen=self.window)
        self.lock = threading.Lock()
        self.since = 0
        self.state = {"signal": float("nan"), "alarm": False, "driver": ""}

    def add(self, record: dict) -> None:
        """Log one study's record; refresh the gauges now and then."""
        append_records(self.folder, [record])
        with self.lock:
            self.recent.append(record)
            self.since += 1
            if self.since >= REFRESH and len(self.recent) == self.window:  # the null is fitted at this size
                self.since = 0
                w = record_window(list(self.recent))
                if len(w.ood) == self.window:
                    s = window_signal(w, self.drift)
                    self.state = {"signal": s["signal"], "alarm": s["alarm"], "driver": s["driver"]}

    def render(self) -> str:
        """Prometheus text lines of the drift gauges (NaN until a whole window of studies was scored)."""
        with self.lock:
            signal, alarm = self.state["signal"], self.state["alarm"]
        value = "NaN" if not np.isfinite(signal) else f"{signal:.6g}"
        return (
            "# HELP cxr_drift_signal drift of the last window of studies from validation (max z)\n"
            "# TYPE cxr_drift_signal gauge\n"
            f"cxr_drift_signal {value}\n"
            "# HELP cxr_drift_threshold the drift signal's alarm threshold (about 5% false alarms)\n"
            "# TYPE cxr_drift_threshold gauge\n"
            f"cxr_drift_threshold {self.drift.threshold:.6g}\n"
            "# HELP cxr_drift_alarm 1 while the last window's signal is above the threshold\n"
            "# TYPE cxr_drift_alarm gauge\n"
            f"cxr_drift_alarm {int(alarm)}\n"
        )
