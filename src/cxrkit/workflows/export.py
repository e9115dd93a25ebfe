"""``cxr export RUN [--int8]``: the run's network as ONNX, checked against PyTorch before it is kept.

Writes ``model.onnx`` (float32, dynamic batch) into the run folder and ``export.json``: on real
images (the run's test split when its data is at hand, plus any ``images`` given) the largest
difference in calibrated probability between ONNX Runtime and PyTorch. A float32 export that
differs by more than ``FP32_TOLERANCE`` is deleted and the command fails: prediction must not
depend on the engine. ``int8`` adds ``model.int8.onnx`` (static QDQ, per-channel, ranges from the
run's validation images) and reports the macro ROC-AUC change on the held-out test split.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cxrkit import __version__
from cxrkit.data.cache import CacheError
from cxrkit.evaluate.metrics import finding_columns, macro_auc
from cxrkit.evaluate.triage import abnormal_truth, abnormality_score, triage_counts
from cxrkit.outputs import write_json
from cxrkit.run import files
from cxrkit.run.data import Log, TrainData, load_run_data
from cxrkit.run.inputs import Input
from cxrkit.run.model import RunModel
from cxrkit.run.onnx import OUTPUTS, OnnxEngine, export_onnx, quantize_int8, weights_digest

FP32_TOLERANCE = 1e-4  # max |probability difference| allowed between ONNX float32 and PyTorch


def _split_images(data: TrainData, part: str, limit: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``limit`` rows of split ``part`` (seeded choice, sorted), their images and targets."""
    idx = np.sort(np.asarray(data.partition.get(part, []), dtype=np.int64))
    if limit and len(idx) > limit:
        idx = np.sort(np.random.default_rng(seed).choice(idx, limit, replace=False))
    return np.asarray(data.cache.images[idx]), data.targets[idx]


def _parity(run: RunModel, engine: OnnxEngine, images: np.ndarray, name: str) -> dict:
    """Largest |probability| and |logit| differences between ``engine`` and PyTorch on ``images``."""
    ref = run.torch_logits(images)
    got = engine.logits(images)
    dp = np.abs(run.package.probs(got) - run.package.probs(ref))
    return {
        "images": name,
        "n": len(images),
        "max_abs_prob_diff": float(dp.max()) if dp.size else 0.0,
        "max_abs_logit_diff": float(np.abs(got - ref).max()) if dp.size else 0.0,
    }


def _scores(run: RunModel, probs: np.ndarray, targets: np.ndarray) -> dict:
    """Macro ROC-AUC over the findings and triage sensitivity/specificity at the stored point."""
    labels = list(run.labels)
    cols = finding_columns(labels)
    point = run.package.operating_point
    score, _ = abnormality_score(probs, labels, point.score)
    tri = triage_counts(abnormal_truth(targets, labels), score, point.threshold)
    return {
        "macro_auc": macro_auc(targets[:, cols], probs[:, cols]),
        "triage_sensitivity": tri["sensitivity"],
        "triage_specificity": tri["specificity"],
    }


def export_run(
    run_dir: str | Path,
    int8: bool = False,
    images: Sequence[Input] = (),
    check: int = 500,
    calibration: int = 300,
    log: Log = print,
) -> dict:
    """Export, check parity, optionally quantize; write export.json and return its content.

    ``check``: at most this many test-split images for parity and the int8 AUC; ``calibration``:
    validation images used to calibrate int8 ranges.
    """
    run = RunModel.load(run_dir, "cpu")
    if run.members:
        raise ValueError(
            f"{run.path} is a K-fold ensemble of {len(run.members)} runs; export one fold "
            f"(e.g. cxr export {run.members[0].path}) or predict with PyTorch"
        )
    data: TrainData | None = None
    try:
        data = load_run_data(run.path)
    except (FileNotFoundError, ValueError, CacheError) as err:
        log(f"note: the run's data is not available ({err}); checking on the given images only")
    if int8 and (data is None or not len(data.partition.get("val", []))):  # before anything is replaced
        raise ValueError(
            f"{run.path}: int8 calibration needs the run's validation images, which are not available"
        )
    for stale in (files.EXPORT, files.ONNX_INT8):  # what is left must describe this export only
        (run.path / stale).unlink(missing_ok=True)
    t0 = time.perf_counter()
    onnx_path = export_onnx(run.model, run.spec.size, run.path / files.ONNX)
    log(f"wrote {onnx_path} ({onnx_path.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")
    fp32 = OnnxEngine(onnx_path)
    sets: list[tuple[str, np.ndarray]] = []
    if data is not None:
        for part in ("test", "val"):
            if len(data.partition.get(part, [])):
                sets.append((f"{part} split", _split_images(data, part, check)[0]))
                break
    if images:
        prepared = run.prepare(list(images))
        for source, reason in prepared.failures:
            log(f"skipped {source}: {reason}")
        if len(prepared.images):
            sets.append(("given images", prepared.images))
    if not sets:
        onnx_path.unlink(missing_ok=True)
        raise ValueError(
            f"{run.path}: no images to check the export on: pass --images or keep the run's data"
        )
    parity = [_parity(run, fp32, imgs, name) for name, imgs in sets]
    worst = max(p["max_abs_prob_diff"] for p in parity)
    for p in parity:
        log(
            f"parity on {p['n']} {p['images']}: max |Δprob| {p['max_abs_prob_diff']:.2e} (float32 vs PyTorch)"
        )
    if worst > FP32_TOLERANCE:
        onnx_path.unlink(missing_ok=True)
        raise ValueError(
            f"{run.path}: the ONNX export differs from PyTorch by {worst:.2e} in probability "
            f"(allowed {FP32_TOLERANCE:g}); model.onnx was not kept"
        )
    report: dict = {
        "onnx": files.ONNX,
        "input": {
            "name": fp32.input,
            "shape": ["batch", 1, run.spec.size, run.spec.size],
            "dtype": "float32",
        },
        "weights_sha256": weights_digest(run.path),
        "outputs": list(OUTPUTS),
        "fp32_tolerance": FP32_TOLERANCE,
        "parity": parity,
        "versions": _versions(),
    }
    if int8 and data is not None:
        report["int8"] = _int8(run, data, check, calibration, log)
    write_json(run.path / files.EXPORT, report)
    return report


def _int8(run: RunModel, data: TrainData, check: int, calibration: int, log: Log) -> dict:
    """Quantize with validation images, then compare macro ROC-AUC with PyTorch on the test split."""
    cal, _ = _split_images(data, "val", calibration, seed=1)
    t0 = time.perf_counter()
    path = quantize_int8(run.path / files.ONNX, run.path / files.ONNX_INT8, cal)
    log(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB), calibrated on {len(cal)} validation images "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    part = "test" if len(data.partition.get("test", [])) else "val"
    imgs, targets = _split_images(data, part, check)
    q = OnnxEngine(path)
    ref = run.package.probs(run.torch_logits(imgs))
    got = run.package.probs(q.logits(imgs))
    before, after = _scores(run, ref, targets), _scores(run, got, targets)
    out = {
        "onnx": files.ONNX_INT8,
        "calibration": {"split": "val", "images": len(cal)},
        "split": part,
        "images": len(imgs),
        "pytorch": before,
        "int8": after,
        "macro_auc_change": after["macro_auc"] - before["macro_auc"],
        "max_abs_prob_diff": float(np.abs(got - ref).max()),
    }
    log(
        f"int8 on the {part} split ({len(imgs)} images): macro ROC-AUC {before['macro_auc']:.4f} -> "
        f"{after['macro_auc']:.4f} (change {out['macro_auc_change']:+.4f}); "
        f"max |Δprob| {out['max_abs_prob_diff']:.3f}; "
        f"triage sensitivity {before['triage_sensitivity']:.3f} -> "
        f"{after['triage_sensitivity']:.3f}, specificity {before['triage_specificity']:.3f} -> "
        f"{after['triage_specificity']:.3f}"
    )
    if part != "test":
        log("note: the run has no test split; the int8 change was measured on validation images")
    return out


def _versions() -> dict:
    import onnxruntime

    return {"cxrkit": __version__, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
