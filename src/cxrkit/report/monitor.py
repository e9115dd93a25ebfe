"""``monitor.html``: the drift signal window by window with its alarm threshold, and which component
moved (standardised: 0 is a typical validation window)."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from cxrkit.evaluate.drift import COMPONENTS
from cxrkit.report.html import Section, fig_tag, figure, kpis, render_page, table_html


def _plot(frame: pd.DataFrame, threshold: float):
    fig = figure(8.0, 5.0)
    top, bottom = fig.subplots(2, 1, sharex=True)
    x = frame["window"].to_numpy()
    top.plot(x, frame["signal"], marker="o", color="#0969da", label="drift signal")
    if "threshold" in frame:  # one per window size (time windows differ in size)
        top.step(x, frame["threshold"], where="mid", color="#cf222e", ls="--", label="alarm threshold")
    else:
        top.axhline(threshold, color="#cf222e", ls="--", label=f"alarm threshold {threshold:.3g}")
    alarm = frame["alarm"].to_numpy(bool)
    top.scatter(x[alarm], frame["signal"].to_numpy()[alarm], color="#cf222e", zorder=3, label="alarm")
    top.set_ylabel("signal (max z)")
    top.legend(loc="upper left", fontsize=8)
    for k in COMPONENTS:
        if f"z_{k}" in frame and np.isfinite(frame[f"z_{k}"].to_numpy(float)).any():
            bottom.plot(x, frame[f"z_{k}"], marker=".", label=k)
    bottom.set_xlabel("window")
    bottom.set_ylabel("component z")
    bottom.legend(loc="upper left", fontsize=8, ncol=5)
    return fig


def monitor_page(
    frame: pd.DataFrame, threshold: float, run: str, window: str, examples: pd.DataFrame | None = None
) -> str:
    """The whole page: headline numbers, the plot, and the table of windows."""
    last = frame.iloc[-1]
    head = kpis(
        [
            ("windows", f"{len(frame)}"),
            ("alarms", f"{int(frame['alarm'].sum())}"),
            ("last window", "ALARM" if last["alarm"] else "no alarm"),
            ("studies", f"{int(frame['studies'].sum()):,}"),
        ]
    )
    note = (
        f"<p>Run <code>{html.escape(run)}</code>, windows of {html.escape(window)}. Each window is compared "
        "with the run's validation images without labels; components are standardised so that 0 is a "
        "typical validation window, and the signal is the largest. The threshold gives about 5% false alarms "
        "on validation windows. A drift alarm says the input changed, not that accuracy fell: check the "
        "driver (features: the images look different; ood: more unusual studies; scores or flag_rate: the "
        "model answers differently; categories: other views or patients) and, where labels exist, run "
        "<code>cxr validate</code> on recent studies.</p>"
    )
    cols = [
        c
        for c in (
            "window",
            "start",
            "end",
            "studies",
            "not_scored",
            "out_of_distribution",
            "flagged_abnormal",
            "signal",
            "driver",
            "alarm",
        )
        if c in frame
    ]
    return render_page(
        "Drift monitor",
        [
            Section("Summary", head + note),
            Section("Drift signal", fig_tag(_plot(frame, threshold), "drift signal by window")),
            Section("Windows", table_html(frame[cols], index=False)),
            Section(
                "Example studies from alarmed windows",
                "<p>The most unusual studies (highest OOD score) of each window that alarmed; the study "
                "column is the digest the log keeps instead of the file name.</p>"
                + table_html(examples, index=False)
                if examples is not None and len(examples)
                else "<p>No window alarmed.</p>",
            ),
        ],
    )
