"""``robustness_run``: a run's held-out images under acquisition shifts, each at severities 1..5.

Every shift of ``cxrkit.data.shifts`` is applied to the split's cached images (already prepared by
the run's input spec) and the changed images are scored by the run's own scorers
(``split_scorers``), a chunk of images at a time so memory stays bounded. Per shift and severity:
the macro ROC-AUC (findings, "No Finding" excluded) and the triage sensitivity/specificity at the
run's *stored* operating point, applied unchanged. The clean row (severity 0) scores the untouched
images, so it equals what ``cxr evaluate`` reports. Writes ``RUN/robustness-SPLIT/``:
robustness.csv, robustness.json, robustness.png and report.html. An existing ``eval-SPLIT`` page is
never edited: re-run ``cxr evaluate`` to include the results there.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from cxrkit.data.shifts import SEVERITIES, SHIFTS, apply_shift
from cxrkit.evaluate.metrics import summary_metrics
from cxrkit.evaluate.robustness import CLEAN, robustness_summary
from cxrkit.evaluate.triage import abnormal_truth, abnormality_score, is_flagged, triage_counts
from cxrkit.outputs import make_out_dir, read_csv, read_json, write_bytes, write_csv, write_json
from cxrkit.run import files
from cxrkit.run.data import Log, TrainData, load_run_data
from cxrkit.run.model import RunModel, Scorer, split_scorers
from cxrkit.run.onnx import weights_digest

SUMMARY, TABLE, PLOT = files.ROBUSTNESS_SUMMARY, files.ROBUSTNESS_TABLE, files.ROBUSTNESS_PLOT
robustness_dir = files.robustness_dir  # kept importable from here
SPLITS = ("train", "val", "test")
Transform = Callable[[np.ndarray, int], np.ndarray]  # (chunk of images, its first position) -> images

__all__ = ["RobustnessConfig", "load_robustness", "robustness_dir", "robustness_run"]


@dataclass(frozen=True)
class RobustnessConfig:
    """What ``cxr robustness`` scores: a split, shifts (empty: all), severities, seed, chunk size, device."""

    split: str = "test"
    shifts: tuple[str, ...] = ()  # names in cxrkit.data.shifts.SHIFTS; () means all, in SHIFTS order
    severities: tuple[int, ...] = SEVERITIES
    seed: int = 0
    # images shifted and scored at once (bounds memory); the shifts do not depend on it, and a multiple
    # of the scorer's batch (64) keeps the scores bit-identical to scoring the whole split at once
    chunk: int = 512
    device: str = "auto"
    out: str | None = None
    tta: int | None = None  # test-time augmentation views (None: the run's own model.tta; 0: none)

    def __post_init__(self) -> None:
        if self.tta is not None and (isinstance(self.tta, bool) or self.tta not in range(6)):
            raise ValueError(f"robustness tta {self.tta!r}: expected 0..5 views")
        if self.split not in SPLITS:
            raise ValueError(f"robustness split {self.split!r}: expected one of {', '.join(SPLITS)}")
        shifts = self.shifts.split(",") if isinstance(self.shifts, str) else self.shifts  # "gamma,blur"
        object.__setattr__(self, "shifts", tuple(s.strip() for s in shifts if s.strip()))
        object.__setattr__(self, "severities", tuple(self.severities))
        unknown = [s for s in self.shifts if s not in SHIFTS]
        if unknown:
            raise ValueError(
                f"unknown shift(s) {', '.join(map(repr, unknown))}: expected names from {', '.join(SHIFTS)}"
            )
        if len(set(self.shifts)) != len(self.shifts):
            raise ValueError(f"shifts {', '.join(self.shifts)}: a shift is named twice")
        if (
            not self.severities
            or any(
                isinstance(s, bool) or not isinstance(s, int) or s not in SEVERITIES for s in self.severities
            )
            or len(set(self.severities)) != len(self.severities)
        ):
            raise ValueError(
                f"severities {list(self.severities)}: expected distinct values from {list(SEVERITIES)}"
            )
        object.__setattr__(self, "severities", tuple(sorted(self.severities)))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"robustness seed {self.seed!r}: expected a non-negative integer")
        if isinstance(self.chunk, bool) or not isinstance(self.chunk, int) or self.chunk < 1:
            raise ValueError(f"robustness chunk {self.chunk!r}: expected a positive number of images")

    @property
    def shift_names(self) -> tuple[str, ...]:
        """The shifts scored, in SHIFTS order when all."""
        return self.shifts or tuple(SHIFTS)


def score_split(
    pairs: Sequence[tuple[np.ndarray, Scorer]], data: TrainData, transform: Transform | None, chunk: int
) -> np.ndarray:
    """Logits (N, L) of the pairs' rows in order, each chunk of images changed by ``transform`` first.

    ``transform(images, start)`` gets a chunk and its first image's position in the split;
    ``None`` scores the untouched images.
    """
    parts, start = [], 0
    for rows, score_fn in pairs:
        for s in range(0, len(rows), chunk):
            images = np.asarray(data.cache.images[rows[s : s + chunk]])
            parts.append(score_fn(images if transform is None else transform(images, start)))
            start += len(images)
    return np.concatenate(parts) if parts else np.zeros((0, len(data.labels)), np.float32)


def pixel_digests(data: TrainData, rows: np.ndarray, chunk: int) -> list[bytes]:
    """A digest of each image's pixels (cache ``rows`` in order): what tells identical images apart."""
    out = []
    for s in range(0, len(rows), chunk):
        images = np.ascontiguousarray(data.cache.images[rows[s : s + chunk]])
        out += [hashlib.blake2b(img, digest_size=16).digest() for img in images]
    return out


def shift_transform(
    name: str, severity: int, seed: int, data: TrainData, rows: np.ndarray, digests: Sequence[bytes]
) -> Transform:
    """``apply_shift`` of ``name`` at ``severity`` on chunks of the split ``rows``, as if on all at once.

    An image's random draws depend on its pixels and on how many identical images precede it in the
    batch (cxrkit.data.shifts); a chunk is therefore shifted behind the split's earlier copies of its
    images, if any, so a duplicate gets the same draws however the split is chunked.
    """
    earlier: dict[bytes, list[int]] = {}
    for pos, d in enumerate(digests):
        earlier.setdefault(d, []).append(pos)

    def transform(images: np.ndarray, start: int) -> np.ndarray:
        mine = dict.fromkeys(digests[start : start + len(images)])
        prefix = sorted(p for d in mine for p in earlier[d] if p < start)
        if not prefix:
            return apply_shift(images, name, severity, seed)
        copies = np.asarray(data.cache.images[rows[prefix]])
        return apply_shift(np.concatenate([copies, images]), name, severity, seed)[len(prefix) :]

    return transform


def _row(run: RunModel, targets: np.ndarray, abn: np.ndarray, logits: np.ndarray, clean: dict) -> dict:
    """Macro AUC, triage rates at the stored operating point, and how far the outputs moved from clean."""
    probs = run.package.probs(logits)
    point = run.package.operating_point
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        auc = summary_metrics(targets, probs, 0.5, labels=run.labels)["macro_auc"]
    score, _ = abnormality_score(probs, run.labels, point.score)
    tri = triage_counts(abn, score, point.threshold)
    flags = is_flagged(score, point.threshold)
    return {
        "macro_auc": auc,
        "triage_sensitivity": tri["sensitivity"],
        "triage_specificity": tri["specificity"],
        "flagged_share": float(flags.mean()) if len(flags) else float("nan"),
        "flags_changed_share": float((flags != clean["flags"]).mean()) if len(flags) else float("nan"),
        "mean_abs_logit_change": float(np.abs(logits - clean["logits"]).mean()) if len(flags) else 0.0,
        "images": len(logits),
    }


def compute_robustness(
    run: RunModel, data: TrainData, cfg: RobustnessConfig, log: Log = print
) -> pd.DataFrame:
    """The robustness table: the clean row (severity 0) then one row per shift and severity."""
    pairs = split_scorers(run, data, cfg.split)
    if cfg.tta is not None:  # every scorer is a run's logits: ask it for these views
        pairs = [(rows, partial(score, tta=cfg.tta)) for rows, score in pairs]
    rows = np.concatenate([r for r, _ in pairs])
    targets = data.targets[rows]
    abn = abnormal_truth(targets, run.labels)
    point = run.package.operating_point
    digests = pixel_digests(data, rows, cfg.chunk)
    logits = score_split(pairs, data, None, cfg.chunk)
    score, _ = abnormality_score(run.package.probs(logits), run.labels, point.score)
    clean = {"logits": logits, "flags": is_flagged(score, point.threshold)}
    table = [
        {
            "shift": CLEAN,
            "kind": "none",
            "severity": 0,
            "level": float("nan"),
            **_row(run, targets, abn, logits, clean),
        }
    ]
    for name in cfg.shift_names:
        t0, shift = time.perf_counter(), SHIFTS[name]
        for sev in cfg.severities:
            shifted = score_split(
                pairs, data, shift_transform(name, sev, cfg.seed, data, rows, digests), cfg.chunk
            )
            table.append(
                {
                    "shift": name,
                    "kind": shift.kind,
                    "severity": sev,
                    "level": shift.levels[sev - 1],
                    **_row(run, targets, abn, shifted, clean),
                }
            )
        aucs = " ".join(f"{r['macro_auc']:.3f}" for r in table[-len(cfg.severities) :])
        log(f"{name}: macro ROC-AUC by severity {aucs} ({time.perf_counter() - t0:.1f} s)")
    return pd.DataFrame(table)


def robustness_run(run_dir: str | Path, cfg: RobustnessConfig | None = None, log: Log = print) -> Path:
    """Score ``cfg.split`` under each shift and severity; write CSV, JSON, PNG and report.html there."""
    from cxrkit.report.robustness import robustness_png, write_robustness_report

    cfg = cfg or RobustnessConfig()
    t0 = time.perf_counter()
    run = RunModel.load(run_dir, cfg.device)
    out = Path(cfg.out) if cfg.out else robustness_dir(run.path, cfg.split)
    if cfg.tta is not None and not cfg.out:  # other views than the run's own: not what its evaluation shows
        out = out.with_name(f"{out.name}-tta{cfg.tta}")
    data = load_run_data(run.path, log)
    n = sum(len(r) for r, _ in split_scorers(run, data, cfg.split))  # a missing split fails before any output
    out = make_out_dir(out)
    log(
        f"robustness of {run.path.name} on {cfg.split}: {n:,} images, {len(cfg.shift_names)} shifts x "
        f"{len(cfg.severities)} severities (seed {cfg.seed})"
    )
    table = compute_robustness(run, data, cfg, log)
    seconds = time.perf_counter() - t0
    head = robustness_summary(table)
    digest = weights_digest(run.path)
    summary = {
        "run": str(run.path),
        "model": run.package.model_name,
        "weights_sha256": digest,  # the evaluation report shows these results only for the same weights
        "split": cfg.split,
        "images": n,
        "seed": cfg.seed,
        "severities": list(cfg.severities),
        **head,
        "operating_point": run.package.operating_point.as_dict(),
        "shifts": {
            name: {
                "kind": SHIFTS[name].kind,
                "simulates": SHIFTS[name].simulates,
                "levels": list(SHIFTS[name].levels),
            }
            for name in cfg.shift_names
        },
        "config": asdict(cfg),
        "seconds": round(seconds, 2),
    }
    png = robustness_png(table)
    write_csv(out / TABLE, table, index=False)
    write_json(out / SUMMARY, summary)
    write_bytes(out / PLOT, png)
    write_robustness_report(out / files.REPORT, summary, table, png)
    log(
        f"clean macro ROC-AUC {head['clean_auc']:.3f}, mCA {head['mca']:.3f} "
        f"(mean over {len(table) - 1} shifted conditions), relative drop {head['relative_drop']:.1%} "
        f"({seconds:.1f} s)"
    )
    log(f"wrote {out}: report.html, robustness.csv/json/png")
    if files.eval_dir(run.path, cfg.split).is_dir():
        log(
            f"note: {files.eval_dir(run.path, cfg.split)}/report.html was not changed; "
            f"run `cxr evaluate {run.path} --split {cfg.split}` to add these results to it"
        )
    return out


def load_robustness(run_dir: str | Path, split: str) -> tuple[dict, pd.DataFrame, bytes | None] | None:
    """(robustness.json content, robustness.csv, robustness.png bytes or None) of the run's split, or None."""
    folder = robustness_dir(run_dir, split)
    if not (folder / SUMMARY).is_file() or not (folder / TABLE).is_file():
        return None
    summary = read_json(folder / SUMMARY)
    table = read_csv(folder / TABLE, text=["shift", "kind"])
    png = (folder / PLOT).read_bytes() if (folder / PLOT).is_file() else None
    return summary, table, png
