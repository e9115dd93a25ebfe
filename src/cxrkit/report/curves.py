"""Training curves: loss (train and validation) and validation macro ROC-AUC per epoch."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cxrkit.outputs import write_bytes
from cxrkit.report.html import figure, figure_png


def plot_training_curves(history: pd.DataFrame, path: str | Path) -> Path:
    """Write a two-panel PNG of a run's history.csv rows (image-training stage)."""
    h = history[history.get("stage", "train") == "train"] if "stage" in history else history
    fig = figure(9, 3.4)
    ax1, ax2 = fig.subplots(1, 2)
    if len(h):
        ax1.plot(h["epoch"], h["train_loss"], "o-", label="train")
        ax1.plot(h["epoch"], h["val_loss"], "o-", label="validation")
        ax2.plot(h["epoch"], h["macro_auc"], "o-", color="C2")
        ax1.legend()
    else:  # e.g. a linear probe: the head trained on cached features only (epochs: 0)
        ax1.text(0.5, 0.5, "no epochs on images", ha="center", va="center", transform=ax1.transAxes)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation macro ROC-AUC")
    return write_bytes(path, figure_png(fig))
