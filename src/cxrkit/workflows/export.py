"""``cxr export RUN [--openvino] [--int8]``: the run's network as ONNX (and OpenVINO IR), checked first.

Writes ``model.onnx`` (float32, dynamic batch) into the run folder and ``export.json``: on real
images (the run's test split when its data is at hand, plus any ``images`` given) the largest
difference in calibrated probability between ONNX Runtime and PyTorch. A float32 export that
differs by more than ``FP32_TOLERANCE`` is deleted and the command fails: prediction must not
depend on the engine. ``int8`` adds ``model.int8.onnx`` (static QDQ, per-channel, ranges from the
run's validation images) and reports the macro ROC-AUC change on the held-out test split; a copy
that loses more than ``MAX_AUC_DROP`` is not kept. ``openvino`` adds ``model.xml`` (OpenVINO IR from
model.onnx, the same float32 parity check) and, with ``int8``, ``model.int8.xml`` (NNCF).
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

FP32_TOLERANCE = 1e-4  # max |probability difference| allowed between a float32 export and PyTorch
MAX_AUC_DROP = 0.005  # an int8 copy whose test macro ROC-AUC falls by more is not kept


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
    openvino: bool = False,
    max_auc_drop: float = MAX_AUC_DROP,
) -> dict:
    """Export, check parity, optionally quantize; write export.json and return its content.

    ``check``: at most this many test-split images for parity and the int8 AUC; ``calibration``:
    validation images used to calibrate int8 ranges; ``openvino``: also OpenVINO IR (and its int8
    copy with ``int8``); ``max_auc_drop``: the largest macro ROC-AUC loss an int8 copy may have.
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
    if openvino:
        from cxrkit.run.openvino import _ov

        _ov()  # a missing extra is one line, before anything is replaced
    for stale in STALE:  # what is left must describe this export only
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
    parity = _checked(run, fp32, sets, onnx_path, "ONNX", log)
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
        "versions": _versions(openvino),
    }
    if openvino:
        report["openvino"] = _openvino(run, onnx_path, sets, log)
    if int8 and data is not None:
        cal, _ = _split_images(data, "val", calibration, seed=1)
        report["int8"] = _int8(run, data, check, cal, "onnx", max_auc_drop, log)
        if openvino:
            report["openvino_int8"] = _int8(run, data, check, cal, "openvino", max_auc_drop, log)
    write_json(run.path / files.EXPORT, report)
    return report


STALE = (  # removed when an export starts, so nothing left over describes an older one
    files.EXPORT,
    files.ONNX_INT8,
    files.OPENVINO,
    files.OPENVINO_INT8,
    Path(files.OPENVINO).with_suffix(".bin").name,
    Path(files.OPENVINO_INT8).with_suffix(".bin").name,
)


def _remove(path: Path) -> None:
    """Delete an export (an OpenVINO IR's .bin too)."""
    path.unlink(missing_ok=True)
    if path.suffix == ".xml":
        path.with_suffix(".bin").unlink(missing_ok=True)


def _checked(run: RunModel, engine, sets: list, path: Path, kind: str, log: Log) -> list[dict]:
    """Parity of a float32 engine on every image set; past tolerance the file is deleted, an error raised."""
    parity = [_parity(run, engine, imgs, name) for name, imgs in sets]
    for p in parity:
        log(
            f"parity on {p['n']} {p['images']}: max |Δprob| {p['max_abs_prob_diff']:.2e} "
            f"({kind} float32 vs PyTorch)"
        )
    worst = max(p["max_abs_prob_diff"] for p in parity)
    if worst > FP32_TOLERANCE:
        _remove(path)
        raise ValueError(
            f"{run.path}: the {kind} export differs from PyTorch by {worst:.2e} in probability "
            f"(allowed {FP32_TOLERANCE:g}); {path.name} was not kept"
        )
    return parity


def _openvino(run: RunModel, onnx_path: Path, sets: list, log: Log) -> dict:
    """model.xml from model.onnx, checked against PyTorch like the ONNX export."""
    from cxrkit.run.openvino import OpenVinoEngine, compile_options, export_openvino

    t0 = time.perf_counter()
    xml = export_openvino(onnx_path, run.path / files.OPENVINO)
    log(f"wrote {xml} (OpenVINO IR, float32) in {time.perf_counter() - t0:.1f} s")
    parity = _checked(run, OpenVinoEngine(xml), sets, xml, "OpenVINO", log)
    return {
        "xml": files.OPENVINO,
        "precision": compile_options()["INFERENCE_PRECISION_HINT"],
        "parity": parity,
    }


def _int8(
    run: RunModel, data: TrainData, check: int, cal: np.ndarray, kind: str, max_drop: float, log: Log
) -> dict:
    """Quantize (``kind``: onnx or openvino) with validation images ``cal``, then compare macro ROC-AUC
    with PyTorch on the test split; a copy that loses more than ``max_drop`` is deleted (``kept``: false)."""
    t0 = time.perf_counter()
    if kind == "openvino":
        from cxrkit.run.openvino import OpenVinoEngine, quantize_openvino

        path = quantize_openvino(run.path / files.OPENVINO, run.path / files.OPENVINO_INT8, cal)
        engine = OpenVinoEngine(path)
    else:
        path = quantize_int8(run.path / files.ONNX, run.path / files.ONNX_INT8, cal)
        engine = OnnxEngine(path)
    log(
        f"wrote {path} ({kind} int8), calibrated on {len(cal)} validation images "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    part = "test" if len(data.partition.get("test", [])) else "val"
    imgs, targets = _split_images(data, part, check)
    ref = run.package.probs(run.torch_logits(imgs))
    got = run.package.probs(engine.logits(imgs))
    before, after = _scores(run, ref, targets), _scores(run, got, targets)
    change = after["macro_auc"] - before["macro_auc"]
    out = {
        "file": path.name,
        "calibration": {"split": "val", "images": len(cal)},
        "split": part,
        "images": len(imgs),
        "pytorch": before,
        "int8": after,
        "macro_auc_change": change,
        "max_auc_drop": max_drop,
        "kept": bool(change >= -max_drop),
        "max_abs_prob_diff": float(np.abs(got - ref).max()),
    }
    log(
        f"{kind} int8 on the {part} split ({len(imgs)} images): macro ROC-AUC {before['macro_auc']:.4f} -> "
        f"{after['macro_auc']:.4f} (change {change:+.4f}); "
        f"max |Δprob| {out['max_abs_prob_diff']:.3f}; "
        f"triage sensitivity {before['triage_sensitivity']:.3f} -> "
        f"{after['triage_sensitivity']:.3f}, specificity {before['triage_specificity']:.3f} -> "
        f"{after['triage_specificity']:.3f}"
    )
    if not out["kept"]:
        _remove(path)
        log(
            f"{path.name} NOT kept: it loses {-change:.4f} macro ROC-AUC (allowed {max_drop:g}; "
            "--max-auc-drop to accept more); the float32 export is unchanged"
        )
    if part != "test":
        log("note: the run has no test split; the int8 change was measured on validation images")
    return out


def _versions(openvino: bool = False) -> dict:
    import onnxruntime

    out = {"cxrkit": __version__, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
    if openvino:
        from cxrkit.run.openvino import openvino_version

        out["openvino"] = openvino_version()
    return out
