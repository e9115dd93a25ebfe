"""``cxr predict``: a table of per-image predictions for files and folders of new studies.

One row per input: path, each label's calibrated probability, the triage score and flag at the
run's stored operating point, the top findings. A file that cannot be scored (unreadable, or too
small to assess) is a row at the top, flagged, with its reason and "read manually"; the others follow
in input order. Only the run folder is needed.

Reading overlaps scoring: decoding and resizing run in ``workers`` threads (Pillow, pydicom and numpy
release the GIL), a chunk or two ahead of the engine (a bounded queue: memory stays flat), and the
rows keep the input order.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from cxrkit.data.transforms import InputSpec
from cxrkit.outputs import make_out_dir, unique_stems, write_csv
from cxrkit.run.data import Log
from cxrkit.run.inputs import OUT_OF_DISTRIBUTION, Item, PreparedInputs, expand_inputs, prepare_items
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
    chunk: int = 128,  # pragma: no mutate (the chunk bounds memory; rows are chunk-independent, tested)
    log: Log = print,
    engine: str = "torch",
    tta: int | None = None,
    accept_missing_modality: bool = False,
    monitor: str | Path | None = None,
    workers: int | None = None,
) -> pd.DataFrame:
    """Predict every image under ``paths``; write ``out`` (CSV) and, with ``heatmaps``, Grad-CAM overlays.

    Inputs are read, scored and drawn ``chunk`` at a time, so memory stays flat on folders of any size.
    ``engine``: torch, onnx, onnx-int8, openvino, openvino-int8 or auto (see ``RunModel``); heatmaps
    always use PyTorch.
    ``tta``: test-time augmentation views averaged (default: the run's own ``model.tta``; 0: none).
    ``accept_missing_modality``: score DICOMs without a Modality tag (else not assessable).
    ``monitor``: a folder whose monitor.jsonl gets one record per input (``cxr monitor`` reads it).
    ``workers``: threads that decode ahead of the engine (default: one per CPU; 0: read, then score).
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
        chunks = prepared_chunks(
            items, run.spec, chunk, heatmaps is not None, bar, accept_missing_modality, workers
        )
        for prepared in chunks:
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


MIN_THREADED = 16  # fewer inputs are read in this thread: threads would save well under a second


def prepared_chunks(
    items: Sequence[Item],
    spec: InputSpec,
    chunk: int,
    keep_originals: bool = False,
    bar: object = False,
    accept_missing_modality: bool = False,
    workers: int | None = None,
) -> Iterator[PreparedInputs]:
    """``prepare_items`` chunk by chunk, in order, read by ``workers`` threads up to two chunks ahead.

    At most three chunks of model-size images exist at once (the one being scored, one ready, one
    being read), so memory is flat whatever the folder's size (peak: about ``workers`` decoded
    images at full size). ``workers`` 0, or fewer than ``MIN_THREADED`` inputs: no threads at all.
    """
    starts = list(range(0, len(items), max(1, int(chunk))))
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers <= 0 or len(items) < MIN_THREADED:
        for s in starts:
            yield prepare_items(items[s : s + chunk], spec, keep_originals, bar, accept_missing_modality)
        return
    pool = ThreadPoolExecutor(workers, thread_name_prefix="cxr-read")
    ahead = ThreadPoolExecutor(1, thread_name_prefix="cxr-ahead")  # one chunk read at a time, in order

    def submit(s: int):
        return ahead.submit(
            prepare_items, items[s : s + chunk], spec, keep_originals, bar, accept_missing_modality, pool
        )

    try:
        waiting = deque(starts)
        pending = deque(submit(waiting.popleft()) for _ in range(min(2, len(waiting))))
        while pending:
            done = pending.popleft().result()
            if waiting:
                pending.append(submit(waiting.popleft()))
            yield done
    finally:  # an error or Ctrl-C while scoring: stop reading at once, do not wait for the queue
        ahead.shutdown(wait=False, cancel_futures=True)
        pool.shutdown(wait=False, cancel_futures=True)


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
