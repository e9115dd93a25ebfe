"""``cxr predict --shards N``: an archive scored in resumable parts, one table per shard and a manifest.

The inputs (files and folders, expanded recursively, as absolute paths) are cut into N contiguous
shards in input order. Each shard is scored by ``predict_files`` and written as ``DIR/part-00003.parquet``
(or ``.csv``) in one atomic rename, so a part on disk is always whole. ``DIR/_manifest.json`` names
the run (its weights and model.json digest), what changes the rows (engine, TTA, the modality rule),
the inputs (count and digest) and each shard (first input, count, digest, status). With ``resume``
a part whose rows are exactly its shard's inputs is kept and the other shards are scored: a job
killed at any point and resumed scores every input exactly once. The part files form a Parquet
dataset (``pd.read_parquet(DIR)``: the manifest's leading ``_`` keeps readers off it).

Who scores the shards is a ``Scorer``: ``local_scorer`` (this process, the run loaded once) or
``workflows.shards_ray.ray_scorer`` (actors on a Ray cluster); the plan and the files are the same.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from cxrkit.outputs import make_out_dir, read_csv, read_json, write_csv, write_json, write_with
from cxrkit.run.data import Log
from cxrkit.run.inputs import expand_inputs
from cxrkit.run.model import RunModel
from cxrkit.workflows.predict import predict_files

MANIFEST = "_manifest.json"  # "_": Parquet dataset readers skip it
MANIFEST_FORMAT = 1
FORMATS = ("parquet", "csv")
TEXT_COLUMNS = ("source", "image_id", "error", "triage_flag", "ood_note", "top_findings")
SUMMARY_COLUMNS = ["source", "image_id", "error", "triage_flag", "ood_note"]  # what the end line reads

T = TypeVar("T")


def plan_shards(items: Sequence[T], n: int) -> list[Sequence[T]]:
    """``items`` cut into ``n`` contiguous shards in order, sizes differing by at most one (never empty).

    ``n`` larger than the number of items gives one shard per item. Deterministic: the same inputs and
    ``n`` always give the same shards, which is what lets ``--resume`` keep finished parts.
    """
    if n < 1:
        raise ValueError(f"--shards {n}: expected a whole number >= 1")
    n = min(n, len(items)) or 1
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for k in range(n):
        stop = start + size + (k < extra)
        out.append(items[start:stop])
        start = stop
    return out


def sources_digest(sources: Sequence[str]) -> str:
    """sha256 of an ordered list of input names (any file name, undecodable bytes included)."""
    return hashlib.sha256(json.dumps(list(sources)).encode()).hexdigest()


def part_name(k: int, fmt: str) -> str:
    """``part-00003.parquet``: the file of shard ``k``."""
    return f"part-{k:05d}.{fmt}"


def default_format() -> str:
    """parquet when pyarrow is installed (``cxrkit[ray]``), else csv."""
    import importlib.util

    return "parquet" if importlib.util.find_spec("pyarrow") is not None else "csv"


def check_format(fmt: str) -> str:
    """``fmt`` checked: one of FORMATS, and parquet only with pyarrow (else the line naming the extra)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt == "parquet" and default_format() != "parquet":
        raise ModuleNotFoundError("No module named 'pyarrow'", name="pyarrow")
    return fmt


def write_part(path: Path, table: pd.DataFrame, fmt: str) -> Path:
    """One shard's rows to ``path`` atomically (a part on disk is whole or absent); CSV escaped as predict."""
    if fmt == "csv":
        return write_csv(path, table, index=False, float_format="%.9g")
    return write_with(path, lambda fh: table.to_parquet(fh, index=False))


def read_part(path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A part file as written (CSV text columns exact), ``columns`` only when given."""
    if path.suffix == ".csv":
        frame = read_csv(
            path, text=TEXT_COLUMNS if columns is None else [c for c in TEXT_COLUMNS if c in columns]
        )
        return frame if columns is None else frame[[c for c in columns if c in frame.columns]]
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    wanted = None if columns is None else [c for c in columns if c in names]
    return pq.read_table(path, columns=wanted).to_pandas()


def part_is_complete(path: Path, sources: Sequence[str]) -> bool:
    """Whether ``path`` holds exactly one row per input of its shard (a part from another plan does not)."""
    if not path.is_file():
        return False
    try:
        found = read_part(path, ["source"])["source"].tolist()
    except Exception:  # a file that is no table of ours: scored again
        return False
    return sorted(found) == sorted(sources)


@dataclass
class ShardJob:
    """A sharded prediction: where it writes, its inputs cut into shards, what makes its rows."""

    out: Path
    run: Path
    shards: list[list[str]]  # absolute input names, per shard
    fmt: str
    options: dict[str, Any]  # engine, tta, accept_missing_modality: what the rows depend on
    manifest: dict[str, Any]

    def part(self, k: int) -> Path:
        """The part file of shard ``k``."""
        return self.out / part_name(k, self.fmt)

    def save(self) -> None:
        """The manifest, rewritten atomically."""
        write_json(self.out / MANIFEST, self.manifest, null_reason=None)


def score_shard(
    model: RunModel,
    sources: Sequence[str],
    part: Path,
    fmt: str,
    options: dict[str, Any],
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, int]:
    """Score one shard's ``sources`` with an already loaded run and write its ``part``; its counts."""
    table = predict_files(
        model,
        list(sources),
        progress=progress,
        log=lambda _m: None,
        batch_size=batch_size,
        tta=options["tta"],
        accept_missing_modality=options["accept_missing_modality"],
    )
    write_part(part, table, fmt)
    return {
        "rows": len(table),
        "not_scored": int((table["error"] != "").sum()),
        "flagged": int((table["triage_flag"] == "abnormal").sum()),
    }


Scorer = Callable[[ShardJob, list[int], RunModel], Iterable[dict[str, Any]]]


def local_scorer(batch_size: int = 32, progress: bool = True) -> Scorer:
    """A ``Scorer`` that scores the shards one after another in this process (the run loaded once)."""

    def score(job: ShardJob, todo: list[int], model: RunModel) -> Iterator[dict[str, Any]]:
        for k in todo:
            stats = score_shard(model, job.shards[k], job.part(k), job.fmt, job.options, batch_size, progress)
            yield {"shard": k, **stats}

    return score


def _manifest(run_id: str, run: Path, options: dict, fmt: str, shards: list[list[str]]) -> dict[str, Any]:
    """A fresh manifest: the run, what the rows depend on, the inputs and every shard (all pending)."""
    from cxrkit import __version__

    sources = [s for shard in shards for s in shard]
    parts, first = [], 0
    for k, shard in enumerate(shards):
        parts.append(
            {
                "part": part_name(k, fmt),
                "first": first,
                "count": len(shard),
                "sources_sha256": sources_digest(shard),
                "status": "pending",
            }
        )
        first += len(shard)
    return {
        "what": "cxr predict --shards: one part file per shard; parts named here are whole when present",
        "manifest_format": MANIFEST_FORMAT,
        "cxrkit": __version__,
        "run": str(run),
        "run_id": run_id,
        **options,
        "format": fmt,
        "inputs": len(sources),
        "inputs_sha256": sources_digest(sources),
        "shards": parts,
    }


def _resume_problem(old: dict, new: dict) -> str | None:
    """Why a job cannot resume ``old`` (its manifest) as ``new``; None when the rows would be the same."""
    if old.get("manifest_format") != MANIFEST_FORMAT:
        return f"manifest format {old.get('manifest_format')!r}, this cxrkit writes {MANIFEST_FORMAT}"
    if old.get("run_id") != new["run_id"]:
        return (
            f"it was scored by run {old.get('run')} ({old.get('run_id')}), not {new['run']} ({new['run_id']})"
        )
    for key in ("engine", "tta", "accept_missing_modality", "format"):
        if old.get(key) != new[key]:
            return f"it was scored with {key} {old.get(key)!r}, this call asks for {new[key]!r}"
    if (old.get("inputs"), old.get("inputs_sha256")) != (new["inputs"], new["inputs_sha256"]):
        if old.get("inputs") == new["inputs"]:
            return f"the inputs differ: {new['inputs']:,} files as before, but not the same ones (or order)"
        was, now = old.get("inputs", 0), new["inputs"]
        return f"the inputs differ: it was started on {was:,} files, this call lists {now:,}"
    if len(old.get("shards", [])) != len(new["shards"]):
        return f"it has {len(old.get('shards', []))} shards, this call asks for {len(new['shards'])}"
    return None


def _remove_stale_temporaries(out: Path) -> None:
    """Half-written parts of a killed job (``.part-*.tmp``: hidden, never read) are deleted."""
    for tmp in out.glob(".part-*.tmp"):
        tmp.unlink(missing_ok=True)


def plan_job(
    model: RunModel,
    paths: Sequence[str | Path],
    out: str | Path,
    shards: int | None = None,
    resume: bool = False,
    fmt: str | None = None,
    tta: int | None = None,
    accept_missing_modality: bool = False,
    log: Log = print,
) -> tuple[ShardJob, list[int]]:
    """The job for ``paths`` in ``out`` and the shards still to score; the manifest written first.

    Without ``resume`` an ``out`` that holds a manifest or parts is refused (nothing is overwritten).
    With it, the manifest must describe the same run, options, inputs and shard count (``shards``
    None: the manifest's), and shards whose part is complete are kept.
    """
    from cxrkit.run.monitor_log import monitor_id

    out = make_out_dir(Path(out).absolute())
    old = read_json(out / MANIFEST) if (out / MANIFEST).exists() else None
    if old is not None and not resume:
        raise FileExistsError(
            f"{out}: holds a sharded prediction already ({MANIFEST}); pass --resume to finish it, "
            "or choose another --out"
        )
    if old is None and next(out.glob("part-*"), None) is not None:
        raise FileExistsError(f"{out}: holds part files but no {MANIFEST}; choose another --out")
    if shards is None:
        if old is None:
            raise ValueError(f"{out}: no {MANIFEST} to resume; give --shards N to start a sharded prediction")
        shards = len(old.get("shards", []))
    fmt = fmt or (old.get("format") if old else None) or default_format()
    check_format(fmt)
    sources = [src for src, _ in expand_inputs([Path(p).absolute() for p in paths])]
    plan = [list(s) for s in plan_shards(sources, shards)]
    options = {"engine": model.engine, "tta": tta, "accept_missing_modality": bool(accept_missing_modality)}
    manifest = _manifest(monitor_id(model.path), model.path.absolute(), options, fmt, plan)
    if old is not None:
        problem = _resume_problem(old, manifest)
        if problem:
            raise ValueError(f"{out / MANIFEST}: cannot resume: {problem}; choose another --out")
    elif resume:
        log(f"{out}: nothing to resume ({MANIFEST} absent): starting")
    job = ShardJob(out, model.path.absolute(), plan, fmt, options, manifest)
    _remove_stale_temporaries(out)
    todo = []
    for k, entry in enumerate(manifest["shards"]):
        previous = old["shards"][k] if old is not None else {}
        if old is not None and part_is_complete(job.part(k), plan[k]):
            entry.update({key: previous[key] for key in ("rows", "not_scored", "flagged") if key in previous})
            entry["status"] = "done"
        else:
            todo.append(k)
    job.save()
    return job, todo


def read_parts(out: str | Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Every part of the sharded prediction in ``out``, in shard order (``columns`` only when given)."""
    out = Path(out)
    manifest = read_json(out / MANIFEST)
    frames = [read_part(out / entry["part"], columns) for entry in manifest["shards"]]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(columns or []))


def predict_shards(
    run: str | Path,
    paths: Sequence[str | Path],
    out: str | Path,
    shards: int | None = None,
    resume: bool = False,
    fmt: str | None = None,
    batch_size: int = 32,
    device: str = "auto",
    engine: str = "torch",
    tta: int | None = None,
    accept_missing_modality: bool = False,
    scorer: Scorer | None = None,
    progress: bool = True,
    log: Log = print,
) -> pd.DataFrame:
    """Score ``paths`` in ``shards`` parts under ``out`` (see the module docstring); the summary columns
    (source, image_id, error, triage_flag, ood_note) of every input, each exactly once, in shard order.

    ``scorer``: who scores the shards (default: this process, ``local_scorer``). ``fmt``: parquet or
    csv (default: the manifest's when resuming, else parquet when pyarrow is installed). Every part is
    checked against its shard at the end, so a scorer that lost or repeated an input is an error.
    """
    model = RunModel.load(run, device if scorer is None else "cpu", engine)  # a Ray driver needs no GPU
    job, todo = plan_job(model, paths, out, shards, resume, fmt, tta, accept_missing_modality, log)
    kept = len(job.shards) - len(todo)
    log(
        f"{job.manifest['inputs']:,} inputs in {len(job.shards):,} shards"
        + (f": {kept:,} already done, {len(todo):,} to score" if kept else "")
    )
    scorer = scorer or local_scorer(batch_size, progress)
    results = iter(scorer(job, todo, model))
    try:
        for stats in results:
            k = int(stats["shard"])
            job.manifest["shards"][k].update(
                {key: int(stats[key]) for key in ("rows", "not_scored", "flagged")}, status="done"
            )
            job.save()
            if progress:
                done = sum(entry["status"] == "done" for entry in job.manifest["shards"])
                total = len(job.shards)
                log(f"{job.part(k).name}: {int(stats['rows']):,} rows; {done:,} of {total:,} shards done")
    finally:  # a Ray scorer shuts its cluster connection down, also on Ctrl-C
        getattr(results, "close", lambda: None)()
    missing = [k for k in range(len(job.shards)) if not part_is_complete(job.part(k), job.shards[k])]
    if missing:
        raise RuntimeError(
            f"{job.out}: {len(missing)} shard(s) not complete after scoring "
            f"(first: {job.part(missing[0]).name}); run again with --resume"
        )
    return read_parts(job.out, SUMMARY_COLUMNS)
