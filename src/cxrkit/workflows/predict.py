"""``cxr predict``: a table of per-image predictions for files and folders of new studies.

One row per input, in input order: path, each label's calibrated probability, the triage score
and flag at the run's stored operating point, the top findings; a file that cannot be read is a
row with its reason and the rest goes on. Only the run folder is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cxrkit.run.checkpoint import atomic_write_text
from cxrkit.run.data import Log
from cxrkit.run.model import RunModel


def predict_files(
    run: str | Path | RunModel,
    paths: Sequence[str | Path],
    out: str | Path | None = None,
    heatmaps: str | Path | None = None,
    batch_size: int = 32,
    device: str = "auto",
    progress: bool = True,
    log: Log = print,
) -> pd.DataFrame:
    """Predict every image under ``paths``; write ``out`` (CSV) and, with ``heatmaps``, Grad-CAM overlays."""
    run = run if isinstance(run, RunModel) else RunModel.load(run, device)
    prepared = run.prepare(list(paths), keep_originals=heatmaps is not None, progress=progress)
    probs = run.probs(prepared.images, batch_size)
    table = run.table(prepared, probs)
    if out is not None:
        atomic_write_text(Path(out), table.to_csv(index=False, float_format="%.9g"))
    if heatmaps is not None and len(prepared.ok):
        from cxrkit.workflows.explain import explain_prepared

        explain_prepared(run, prepared, probs, Path(heatmaps), log=lambda _m: None)
    return table


def summary_line(table: pd.DataFrame) -> str:
    """ "N images: K flagged abnormal, F could not be read" for the end of ``cxr predict``."""
    failed = int((table["error"] != "").sum())
    flagged = int((table["triage_flag"] == "abnormal").sum())
    return f"{len(table) - failed:,} of {len(table):,} images scored, {flagged:,} flagged abnormal" + (
        f"; {failed:,} could not be read (see the error column)" if failed else ""
    )
