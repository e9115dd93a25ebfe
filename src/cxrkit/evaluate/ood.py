"""Out-of-distribution scores of a study, from the network's pooled penultimate features or its logits.

A classifier answers every input, including a photograph, a lateral film or a child's X-ray given
to an adult model; these scores say how unlike the training images an input is (higher: more
unlike). Two published scores are implemented and compared in the README (bench/bench_ood.py):

- ``mahalanobis`` (Lee et al., NeurIPS 2018): the squared Mahalanobis distance of the pooled
  features to the nearest class mean (classes: normal / abnormal), under one covariance shared by
  the classes, fitted on training features. The covariance is shrunk towards a scaled identity
  (Ledoit & Wolf 2004) so that it stays invertible with fewer images than feature dimensions.
- ``energy`` (Liu et al., NeurIPS 2020; the multi-label "JointEnergy" of Wang et al., NeurIPS
  2021): minus the summed softplus of the logits (minus their log-sum-exp for single-label runs),
  from the logits alone.

The flag threshold is a quantile (default 0.995) of the scores of held-out validation images: 0.5%
of validation studies are flagged, and held-out test patients of the same sites measured 1-2% in
bench/bench_ood.py (the 99th percentile gave 2.6% on one). Pure numpy: the same numbers everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

METHODS = ("mahalanobis", "energy")
OUT_OF_DISTRIBUTION = "out of distribution"  # the flag of a scored study to read manually
QUANTILE = 0.995  # 0.99 flagged 2.6% of a Kermany run's test patients (bench_ood); 0.995: 1.8%
SUMMARY_DIMS = 8  # the low-dimensional feature summary the monitor log keeps (PCA of training features)


def ledoit_wolf(x: np.ndarray) -> np.ndarray:
    """The Ledoit-Wolf shrunk covariance of centred rows ``x`` (N, C), as scikit-learn computes it."""
    x = np.asarray(x, dtype=np.float64)
    n, p = x.shape
    emp = x.T @ x / n
    x2 = x**2
    trace = x2.sum(0) / n
    mu = trace.sum() / p
    beta_ = float((x2.T @ x2).sum())
    delta_ = float(((x.T @ x) ** 2).sum()) / n**2
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * trace.sum() + p * mu**2) / p
    shrink = 0.0 if delta == 0 else min(beta, delta) / delta
    return (1.0 - shrink) * emp + shrink * mu * np.eye(p)


@dataclass(frozen=True)
class OodReference:
    """What a run stores to score new studies: class means and shared precision of its training
    features, the method and threshold, and the validation distribution the monitor compares with."""

    method: str
    means: np.ndarray  # (K, C) class means of training features
    precision: np.ndarray  # (C, C) inverse of the shared shrunk covariance
    threshold: float  # flag above this score (a quantile of validation scores)
    quantile: float
    task: str  # multilabel, binary or multiclass: how the energy score reads logits
    center: np.ndarray  # (C,) training feature mean (the summary's origin)
    components: np.ndarray  # (C, k) principal directions of training features (the summary)
    val_scores: np.ndarray  # (N,) this method's scores of the validation images
    val_summary: np.ndarray  # (N, k) their feature summaries
    # what drift monitoring compares windows with (empty in a reference fitted without them)
    val_triage: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (N,) abnormality scores
    val_views: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="<U16"))  # (N,) "" unknown
    val_sexes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="<U16"))
    val_pixels: np.ndarray = field(default_factory=lambda: np.zeros((0, 8)))  # (N, 8) drift.pixel_stats

    def scores(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """(N,) this reference's OOD score of each study (higher: less like the training images)."""
        return ood_scores(self.method, features, logits, self)

    def relative(self, raw: np.ndarray) -> np.ndarray:
        """Scores on the scale users see: 1 at the threshold, above 1 flagged (Mahalanobis: raw /
        threshold; energy: 1 + raw - threshold). Engines agree on it to 1e-4 even far out of
        distribution, where raw squared distances run into the thousands."""
        raw = np.asarray(raw, dtype=np.float64)
        if self.method == "mahalanobis" and self.threshold > 0:
            return raw / self.threshold
        return 1.0 + raw - self.threshold

    def summary(self, features: np.ndarray) -> np.ndarray:
        """(N, k) low-dimensional projection of the features (for drift monitoring; no image content)."""
        return (np.asarray(features, np.float64) - self.center) @ self.components


def mahalanobis(features: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """(N,) squared distance of each feature row to the nearest class mean under ``precision``."""
    f = np.asarray(features, dtype=np.float64)
    out = np.full(len(f), np.inf)
    for mu in np.asarray(means, dtype=np.float64):
        d = f - mu
        out = np.minimum(out, np.einsum("ij,jk,ik->i", d, precision, d))
    return out


def energy(logits: np.ndarray, task: str) -> np.ndarray:
    """(N,) minus the (joint) free energy: higher when no label is confidently present or absent."""
    z = np.asarray(logits, dtype=np.float64)
    if task in ("binary", "multiclass"):
        top = z.max(1, keepdims=True)
        return -(top[:, 0] + np.log(np.exp(z - top).sum(1)))
    return -np.logaddexp(0.0, z).sum(1)


def ood_scores(method: str, features: np.ndarray, logits: np.ndarray, ref: OodReference) -> np.ndarray:
    """(N,) OOD scores by ``method`` (see the module docstring)."""
    if method == "mahalanobis":
        return mahalanobis(features, ref.means, ref.precision)
    if method == "energy":
        return energy(logits, ref.task)
    raise ValueError(f"OOD method {method!r}: expected one of {', '.join(METHODS)}")


def fit_reference(
    train_features: np.ndarray,
    train_classes: np.ndarray,
    val_features: np.ndarray,
    val_logits: np.ndarray,
    task: str,
    method: str = "mahalanobis",
    quantile: float = QUANTILE,
    summary_dims: int = SUMMARY_DIMS,
) -> OodReference:
    """Fit the reference on training features (``train_classes``: each row's class, e.g. 0 normal /
    1 abnormal, NaN unknown -> pooled) and set the threshold at ``quantile`` of validation scores."""
    if method not in METHODS:
        raise ValueError(f"OOD method {method!r}: expected one of {', '.join(METHODS)}")
    if not 0.5 <= quantile < 1.0:
        raise ValueError(f"OOD quantile {quantile}: expected a value in [0.5, 1)")
    f = np.asarray(train_features, dtype=np.float64)
    if len(f) < 2 or len(val_features) < 1:
        raise ValueError(
            f"an OOD reference needs training and validation images (got {len(f)} and {len(val_features)})"
        )
    cls = np.asarray(train_classes, dtype=np.float64)
    known = sorted({c for c in cls[~np.isnan(cls)]})
    groups = [cls == c for c in known if (cls == c).sum() >= 2] or [np.ones(len(f), bool)]
    means = np.stack([f[g].mean(0) for g in groups])
    centred = np.concatenate([f[g] - m for g, m in zip(groups, means, strict=True)])
    precision = np.linalg.pinv(ledoit_wolf(centred), hermitian=True)
    center = f.mean(0)
    _, _, vt = np.linalg.svd(f - center, full_matrices=False)
    components = vt[: min(summary_dims, vt.shape[0])].T
    ref = OodReference(
        method, means, precision, np.inf, quantile, task, center, components, np.zeros(0), np.zeros((0, 0))
    )
    val = ref.scores(val_features, val_logits)
    return OodReference(
        method,
        means,
        precision,
        float(np.quantile(val, quantile)),
        quantile,
        task,
        center,
        components,
        val,
        ref.summary(val_features),
    )


CHEST = frozenset({"CHEST", "THORAX", "LUNG", "LUNGS", "CHEST_TO_PELVIS", "TORSO"})


def header_problems(fields: dict, population: dict) -> list[str]:
    """Why a DICOM header says a study is not one the model was trained for (empty: nothing found).

    ``fields``: ``data.header.header_fields``; ``population``: the run's ``ood`` section (its
    training ``age_range`` and ``views`` where the data had them). Checked only where both sides know.
    """
    out = []
    age, ages = fields.get("age"), population.get("age_range")
    if age is not None and ages and not ages[0] - 1.0 <= age <= ages[1] + 1.0:
        out.append(
            f"patient age {age:.3g} y is outside the training population's {ages[0]:.3g}-{ages[1]:.3g} y"
        )
    view, views = fields.get("view"), population.get("views")
    if view and views and view not in views:
        out.append(f"view {view} is not one the model was trained on ({', '.join(views)})")
    part = fields.get("body_part")
    if part and part not in CHEST:
        out.append(f"body part {part}, not chest")
    return out


def ood_decisions(
    scores: np.ndarray, threshold: float, headers: list[dict], population: dict
) -> tuple[np.ndarray, list[str]]:
    """(in distribution (N,) bool, the reason for each study that is not: "" for those that are)."""
    s = np.asarray(scores, dtype=np.float64)
    inside = np.ones(len(s), dtype=bool)
    reasons = []
    for k in range(len(s)):
        why = header_problems(headers[k] if k < len(headers) else {}, population)
        if not s[k] <= threshold:  # a NaN score is not "in distribution" either
            why.insert(
                0, f"unlike the images the model was trained on (OOD score {s[k]:.4g} > {threshold:.4g})"
            )
        inside[k] = not why
        reasons.append("; ".join(why))
    return inside, reasons
