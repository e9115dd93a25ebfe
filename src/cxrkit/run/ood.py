"""A run's out-of-distribution reference: ``ood.npz`` beside model.json, and the header checks.

Written at packaging (the end of training, ``cxr package``) from the run's own model through
``RunModel.outputs``, the path every prediction takes, so a score computed later by PyTorch, ONNX,
``cxr predict`` or the service is the same number. model.json's ``ood`` section names the method,
the threshold, the file's sha256 (a changed file is refused) and the training population's age
range and views, which the DICOM header checks compare against.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from pathlib import Path

import numpy as np

from cxrkit.evaluate.drift import pixel_stats
from cxrkit.evaluate.ood import QUANTILE, OodReference, fit_reference
from cxrkit.evaluate.triage import abnormal_truth, abnormality_score
from cxrkit.outputs import write_bytes

OOD_FILE = "ood.npz"
MAX_TRAIN = 4000  # training images the reference is fitted on (a seeded sample beyond that)
ARRAYS = ("means", "precision", "center", "components", "val_scores", "val_summary")
MONITOR_ARRAYS = ("val_triage", "val_views", "val_sexes", "val_pixels")  # optional: absent in the first files


def save_reference(run_dir: Path, ref: OodReference, population: dict) -> dict:
    """Write ``ood.npz``; return model.json's ``ood`` section (with the file's sha256)."""
    buf = io.BytesIO()
    arrays = {k: np.asarray(getattr(ref, k), dtype=np.float64) for k in ARRAYS}
    arrays.update({k: np.asarray(getattr(ref, k)) for k in MONITOR_ARRAYS})
    np.savez(buf, **arrays)  # numbers and fixed-width text: loads without pickle
    data = buf.getvalue()
    write_bytes(Path(run_dir) / OOD_FILE, data)
    return {
        "method": ref.method,
        "threshold": ref.threshold,
        "quantile": ref.quantile,
        "task": ref.task,
        "file": OOD_FILE,
        "sha256": hashlib.sha256(data).hexdigest(),
        "features": int(ref.means.shape[1]),
        "val_images": len(ref.val_scores),
        "val_flag_rate": float((ref.val_scores > ref.threshold).mean()),
        **population,
    }


def load_reference(run_dir: Path, section: dict) -> OodReference:
    """The reference model.json's ``ood`` section describes; a missing or changed file is an error."""
    path = Path(run_dir) / str(section.get("file", OOD_FILE))
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (model.json names it); run `cxr package {run_dir}`")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != section.get("sha256"):
        raise ValueError(f"{path} does not match model.json (sha256); run `cxr package {run_dir}`")
    with np.load(io.BytesIO(data)) as z:
        arrays = {k: z[k] for k in ARRAYS}
        arrays.update({k: z[k] for k in MONITOR_ARRAYS if k in z.files})
    return OodReference(
        method=section["method"],
        threshold=float(section["threshold"]),
        quantile=float(section["quantile"]),
        task=section["task"],
        **arrays,
    )


def population(meta, rows: np.ndarray) -> dict:
    """The training population the header checks compare with: age range and views (where known)."""
    out: dict = {}
    if "age" in meta:
        ages = meta["age"].to_numpy(dtype=np.float64)[rows]
        ages = ages[np.isfinite(ages)]
        if len(ages):
            out["age_range"] = [float(np.quantile(ages, 0.005)), float(np.quantile(ages, 0.995))]
    if "view" in meta:
        views = sorted({str(v).upper() for v in meta["view"].iloc[rows] if isinstance(v, str) and v})
        if views:
            out["views"] = views
    return out


def fit_run_reference(
    run, data, method: str = "mahalanobis", quantile: float = QUANTILE, seed: int = 0
) -> dict:
    """Fit and save ``run``'s reference from its data's train (sampled) and val parts; return the section.

    A run without a train part (a K-fold parent, a site-calibrated run) fits on its val part twice:
    callers copy the parent's reference instead where one exists.
    """
    train = np.sort(data.partition.get("train", data.partition["val"]))
    if len(train) > MAX_TRAIN:
        train = np.sort(np.random.default_rng(seed).choice(train, MAX_TRAIN, replace=False))
    val = np.sort(data.partition["val"])
    _, f_train = run.outputs(np.asarray(data.cache.images[train]))
    val_images = np.asarray(data.cache.images[val])
    z_val, f_val = run.outputs(val_images)
    classes = abnormal_truth(data.targets[train], data.labels)
    ref = fit_reference(f_train, classes, f_val, z_val, run.task, method, quantile)
    triage, _ = abnormality_score(run.package.probs(z_val), run.labels, run.package.operating_point.score)
    ref = dataclasses.replace(
        ref,
        val_triage=triage,
        val_views=_text(data.cache.meta, "view", val),
        val_sexes=_text(data.cache.meta, "sex", val),
        val_pixels=pixel_stats(val_images),
    )
    return save_reference(run.path, ref, population(data.cache.meta, train))


def _text(meta, column: str, rows: np.ndarray) -> np.ndarray:
    """A categorical meta column at ``rows`` as upper-case text ("" where unknown)."""
    if column not in meta:
        return np.full(len(rows), "", dtype="<U16")
    values = meta[column].iloc[rows]
    return np.array([str(v).upper()[:16] if isinstance(v, str) else "" for v in values], dtype="<U16")


def refit_monitor_reference(run, data, part: str = "val") -> dict:
    """Keep ``run``'s OOD reference (training means, precision, threshold) but make split ``part`` of
    ``data`` the distribution drift monitoring compares with; save it; return the new section.

    A site-calibrated run watches for drift from the site's own calibration images, scored with its
    own temperatures and operating point, not from the parent's validation images.
    """
    rows = np.sort(data.partition[part])
    images = np.asarray(data.cache.images[rows])
    z, f = run.outputs(images)
    ref = run.ood
    triage, _ = abnormality_score(run.package.probs(z), run.labels, run.package.operating_point.score)
    ref = dataclasses.replace(
        ref,
        val_scores=ref.scores(f, z),
        val_summary=ref.summary(f),
        val_triage=triage,
        val_views=_text(data.cache.meta, "view", rows),
        val_sexes=_text(data.cache.meta, "sex", rows),
        val_pixels=pixel_stats(images),
    )
    keep = {k: run.package.ood[k] for k in ("age_range", "views") if k in run.package.ood}
    return {**save_reference(run.path, ref, keep), "monitor_reference": f"{part} part of {data.cache.path}"}
