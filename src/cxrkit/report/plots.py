"""Evaluation figures (matplotlib ``Figure`` objects, no pyplot): curves, matrices, calibration, triage."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from cxrkit.evaluate.metrics import pr_curve_points, roc_curve_points
from cxrkit.report.html import figure


def _grid(n: int, cols: int = 5, cell: float = 2.5, shared: bool = False):
    """A grid of ``n`` panels; ``shared``: one x/y scale, tick labels only on the outer panels.

    Shared grids get fixed margins (in inches) instead of constrained layout, which spent about
    a second per 15-panel figure measuring every tick label.
    """
    rows = max(1, math.ceil(n / cols))
    cols = min(cols, max(n, 1))
    width, height = cell * cols + 0.4, cell * rows + 0.3
    fig = figure(width, height, layout=None if shared else "constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False, sharex=shared, sharey=shared).ravel())
    if shared:
        fig.subplots_adjust(
            left=0.6 / width,
            right=1 - 0.15 / width,
            bottom=0.5 / height,
            top=1 - 0.45 / height,
            wspace=0.12,
            hspace=0.45,
        )
    for ax in axes[n:]:
        ax.set_axis_off()
    return fig, axes


def plot_roc_grid(y: np.ndarray, p: np.ndarray, labels: Sequence[str], aucs: Sequence[float]):
    """One ROC panel per label with its AUC; the diagonal is chance."""
    fig, axes = _grid(len(labels), shared=True)
    for j, (ax, name) in enumerate(zip(axes, labels, strict=False)):
        fpr, tpr = roc_curve_points(y[:, j], p[:, j])
        ax.plot([0, 1], [0, 1], color="#bbb", lw=0.8, ls="--")
        if fpr.size:
            ax.plot(fpr, tpr, color="C0", lw=1.4)
        _unit_panel(ax, name, "AUC", aucs[j], "1 - specificity", "sensitivity")
    return fig


def _unit_panel(ax, name: str, metric: str, value: float, xlabel: str, ylabel: str) -> None:
    """Title with the panel's metric (or "undefined"), unit axes, small labels."""
    ax.set_title(
        f"{name}\n{metric} {value:.3f}" if value == value else f"{name}\n{metric} undefined", fontsize=8
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.tick_params(labelsize=6)
    ax.set_xlabel(xlabel, fontsize=7)
    ax.set_ylabel(ylabel, fontsize=7)
    ax.label_outer()  # shared scales: inner panels need no tick labels


def plot_pr_grid(y: np.ndarray, p: np.ndarray, labels: Sequence[str], aps: Sequence[float]):
    """One precision-recall panel per label with its AP; the dotted line is the prevalence (chance)."""
    fig, axes = _grid(len(labels), shared=True)
    for j, (ax, name) in enumerate(zip(axes, labels, strict=False)):
        rec, prec = pr_curve_points(y[:, j], p[:, j])
        known = y[:, j][~np.isnan(y[:, j])]
        if known.size:
            ax.axhline(float((known > 0.5).mean()), color="#bbb", lw=0.8, ls=":")
        if rec.size:
            ax.plot(np.r_[0.0, rec], np.r_[prec[0], prec], color="C1", lw=1.4, drawstyle="steps-post")
        _unit_panel(ax, name, "AP", aps[j], "recall", "precision")
    return fig


def plot_confusion_grid(confusion: dict[str, dict[str, int]]):
    """A 2x2 confusion matrix per label at its tuned threshold (rows truth, columns prediction)."""
    labels = list(confusion)
    fig, axes = _grid(len(labels), cols=5, cell=2.2, shared=True)
    for ax, name in zip(axes, labels, strict=False):
        c = confusion[name]
        m = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]], dtype=float)
        ax.imshow(m / max(m.sum(), 1), cmap="Blues", vmin=0, vmax=1)
        for (i, k), v in np.ndenumerate(m):
            ax.text(k, i, f"{int(v)}", ha="center", va="center", fontsize=8, color="black")
        ax.set_xticks([0, 1], ["pred -", "pred +"], fontsize=6)
        ax.set_yticks([0, 1], ["true -", "true +"], fontsize=6)
        ax.set_title(name, fontsize=8)
        ax.label_outer()
    return fig


def plot_calibration(
    curve: pd.DataFrame, ece: float, before: pd.DataFrame | None = None, ece_before: float | None = None
):
    """Reliability diagram (observed rate against mean predicted probability) with bin counts.

    ``before``: the curve of the uncalibrated outputs, drawn beside the calibrated one.
    """
    fig = figure(7.5, 3.4)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot([0, 1], [0, 1], color="#bbb", ls="--", lw=0.8, label="perfect")
    if before is not None and len(before):
        ax1.plot(
            before["mean_predicted"],
            before["observed"],
            "s--",
            color="C1",
            alpha=0.8,
            label=f"before calibration (ECE {ece_before:.3f})",
        )
    ax1.plot(
        curve["mean_predicted"], curve["observed"], "o-", color="C2", label=f"calibrated (ECE {ece:.3f})"
    )
    ax1.set_xlabel("mean predicted probability")
    ax1.set_ylabel("observed positive rate")
    ax1.set_xlim(0, 1)
    ax1.set_ylim(0, 1)
    ax1.legend(fontsize=8)
    ax2.bar((curve["bin_low"] + curve["bin_high"]) / 2, curve["count"], width=0.09, color="C2")
    ax2.set_yscale("log")
    ax2.set_xlabel("predicted probability (bin)")
    ax2.set_ylabel("image-label pairs")
    return fig


def plot_triage_sweep(sweep: pd.DataFrame, split: str):
    """Reads saved (true negatives) against missed abnormal studies, threshold by threshold."""
    fig = figure(7.5, 3.4)
    ax1, ax2 = fig.subplots(1, 2)
    s = sweep.sort_values("threshold")
    ax1.plot(s["missed_share"] * 100, s["reads_saved_share"] * 100, "o-", ms=3, color="C0")
    ax2.plot(s["threshold"], s["sensitivity"], label="sensitivity", color="C3")
    ax2.plot(s["threshold"], s["specificity"], label="specificity", color="C0")
    ax2.plot(s["threshold"], s["reads_saved_share"], label="reads saved (share)", color="C2")
    chosen = s[s["chosen"]]
    if len(chosen):
        c = chosen.iloc[0]
        ax1.plot(
            [c["missed_share"] * 100],
            [c["reads_saved_share"] * 100],
            "*",
            ms=14,
            color="C3",
            label=f"operating point (t={c['threshold']:.3f})",
        )
        ax1.legend(fontsize=8, loc="lower right")
        ax2.axvline(c["threshold"], color="C3", ls="--", lw=0.8)
    ax1.set_xlabel(f"abnormal studies missed (% of abnormal, {split})")
    ax1.set_ylabel("reads saved (% of all studies)")
    ax2.set_xlabel("threshold on abnormality score")
    ax2.set_ylim(0, 1.02)
    ax2.legend(fontsize=7)
    return fig


def plot_auc_forest(table: pd.DataFrame):
    """Per-label ROC-AUC with its 95% patient-bootstrap interval."""
    t = table.iloc[::-1].copy()
    for col in ("auc", "auc_low", "auc_high"):  # None (read back from JSON) = not estimable
        t[col] = pd.to_numeric(t[col], errors="coerce").astype(float)
    fig = figure(6.5, 0.28 * len(t) + 1.0)
    ax = fig.subplots()
    y = np.arange(len(t))
    lo = (t["auc"] - t["auc_low"]).clip(lower=0).fillna(0)
    hi = (t["auc_high"] - t["auc"]).clip(lower=0).fillna(0)
    ax.errorbar(t["auc"], y, xerr=[lo, hi], fmt="o", color="C0", ms=4, capsize=2)
    ax.axvline(0.5, color="#bbb", ls="--", lw=0.8)
    ax.set_yticks(y, t["label"], fontsize=8)
    ax.set_xlabel("ROC-AUC (95% CI, patients resampled)")
    ax.set_xlim(min(0.45, float(np.nanmin(t["auc_low"])) - 0.02) if t["auc_low"].notna().any() else 0.45, 1.0)
    return fig


def plot_sample_grid(images: Sequence[np.ndarray], captions: Sequence[str], cols: int = 4):
    """Images with their captions (true labels, top predictions)."""
    fig, axes = _grid(len(images), cols=cols, cell=2.9)
    for ax, img, cap in zip(axes, images, captions, strict=False):
        ax.imshow(img, cmap="gray", vmin=0, vmax=255)
        ax.set_title(cap, fontsize=6.5, loc="left")
        ax.set_axis_off()
    return fig
