"""``cxr predict``: a table of per-image predictions for files and folders of new studies.

One row per input: path, each label's calibrated probability, the triage score and flag at the
run's stored operating point, the top findings. A file that cannot be scored (unreadable, or too
small to assess) is a row at the top, flagged, with its reason and "read manually"; the others follow
in input order. Only the run folder is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cxrkit.outputs import make_out_dir, unique_stems, write_csv
from cxrkit.run.data import Log
from cxrkit.run.inputs import OUT_OF_DISTRIBUTION, expand_inputs, prepare_items
from cxrkit.run.model import RunModel
from cxrkit.run.monitor_log import append_records, monitor_id, table_records


def predict_files(
    run: str | Path | RunModel,
    paths: Sequence[str | Path],
    out: str | Path | None = None,
    heatmaps: str | Path | None = None,
    batch_size: int = 32,  # pragma: no mutate (a batch size changes speed, not the rows)
    device: str = "auto",
    progress: bool = True,  # pragma: no mutate (the default only: the bar on stderr is tested off and on)
    chunk: int = 256,  # pragma: no mutate (the chunk bounds memory; rows are chunk-independent, tested)
    log: Log = print,
    engine: str = "torch",
    tta: int | None = None,
    accept_missing_modality: bool = False,
    monitor: str | Path | None = None,
) -> pd.DataFrame:
    """Predict every image under ``paths``; write ``out`` (CSV) and, with ``heatmaps``, Grad-CAM overlays.

    Inputs are read, scored and drawn ``chunk`` at a time, so memory stays flat on folders of any size.
    ``engine``: torch, onnx, onnx-int8 or auto (see ``RunModel``); heatmaps always use PyTorch.
    ``tta``: test-time augmentation views averaged (default: the run's own ``model.tta``; 0: none).
    ``accept_missing_modality``: score DICOMs without a Modality tag (else not assessable).
    ``monitor``: a folder whose monitor.jsonl gets one record per input (``cxr monitor`` reads it).
    """
    from tqdm.auto import tqdm

    run = run if isinstance(run, RunModel) else RunModel.load(run, device, engine)
    run_id = monitor_id(run.path) if monitor is not None else ""
    items = expand_inputs(list(paths))
    sources = [source for source, _ in items]
    # pragma: no mutate (next line) -- one stem per source by construction: strict or not, the same pairs
    stems = dict(zip(sources, unique_stems(sources), strict=True))  # unique over all chunks
    parts = []
    with tqdm(total=len(items), desc="predict", unit="img", disable=not progress) as bar:
        for s in range(0, len(items), chunk):
            prepared = prepare_items(
                items[s : s + chunk], run.spec, heatmaps is not None, bar, accept_missing_modality
            )
            probs, ood = run.score_prepared(prepared, batch_size, tta=tta, pixels=monitor is not None)
            parts.append(run.table(prepared, probs, ood=ood))
            if monitor is not None:
                append_records(monitor, table_records(parts[-1], prepared, ood, run.labels, run_id))
            if heatmaps is not None and len(prepared.ok):
                from cxrkit.workflows.explain import explain_prepared

                explain_prepared(
                    run, prepared, probs, Path(heatmaps), log=lambda _m: None, grid=False, stems=stems
                )
    table = pd.concat(parts)  # re-indexed below
    unscored = (table["error"] != "").to_numpy()  # studies not scored go first, then input order
    table = pd.concat([table[unscored], table[~unscored]], ignore_index=True)
    if out is not None:
        make_out_dir(Path(out).parent)
        write_csv(Path(out), table, index=False, float_format="%.9g")
    return table


def summary_line(table: pd.DataFrame) -> str:
    """ "N images: K flagged abnormal, F not scored (read manually)" for the end of ``cxr predict``."""
    ood = int((table["triage_flag"] == OUT_OF_DISTRIBUTION).sum())
    failed = int((table["error"] != "").sum())
    flagged = int((table["triage_flag"] == "abnormal").sum())
    return (
        f"{len(table) - failed:,} of {len(table):,} images scored, {flagged:,} flagged abnormal"
        + (
            f"; {ood:,} OUT OF DISTRIBUTION (unlike the training images or a header that does not fit: read "
            "them manually; see the ood_note column)"
            if ood
            else ""
        )
        + (
            f"; {failed:,} NOT scored (unreadable or not assessable: read them manually; see the error "
            "column)"
            if failed
            else ""
        )
    )
