"""``model.json``: what a run needs to predict besides its weights, computed once at the end of training.

It holds the model spec, labels, task, input spec, per-label temperatures (calibration), the
per-label thresholds of every rule evaluation offers, the triage operating point and the
cxrkit/torch versions. All decisions are taken on the *validation* split, from calibrated
probabilities, and stored; evaluation, triage and prediction read them and never recompute
them silently.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxrkit import __version__
from cxrkit.config import INTENSITY
from cxrkit.data.transforms import InputSpec
from cxrkit.evaluate.bootstrap import ranking_cis
from cxrkit.evaluate.calibration import (
    T_BOUNDS,
    expected_calibration_error,
    fit_softmax_temperature,
    fit_temperatures,
    logits_to_probs,
    reliability_bins,
)
from cxrkit.evaluate.metrics import finding_columns, summary_metrics
from cxrkit.evaluate.thresholds import choose_thresholds, parse_rule, reaches
from cxrkit.evaluate.triage import (
    abnormal_truth,
    abnormality_score,
    operating_point,
    threshold_interval,
    triage_counts,
)
from cxrkit.run import files
from cxrkit.run.package_check import document_problem

ALPHA = 0.05  # the intervals model.json stores for readers are 95% ones
THRESHOLD_RULES = ("0.5", "0.2", "max_f1", "max_f3", "youden", "sensitivity:0.95")


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold on the abnormality score for a target sensitivity, and what it gave on validation."""

    score: str
    target_sensitivity: float
    threshold: float
    val_sensitivity: float
    val_specificity: float
    val_images: int
    reached: bool = True

    def as_dict(self) -> dict:
        """JSON-ready form."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class ModelPackage:
    """The content of ``model.json`` (see the module docstring)."""

    model_name: str
    model_config: dict
    labels: tuple[str, ...]
    task: str
    input: InputSpec
    temperatures: tuple[float, ...]
    thresholds: dict[str, tuple[float, ...]]
    operating_point: OperatingPoint
    validation: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    ood: dict = field(default_factory=dict)  # the OOD reference's section (run.ood); {}: none yet
    data: dict = field(default_factory=dict)  # the training data's summary (source, counts, prevalence)

    def probs(self, logits: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """Probabilities (N, L) from the network's logits, temperature-scaled unless ``calibrated=False``."""
        return logits_to_probs(logits, self.task, np.asarray(self.temperatures) if calibrated else None)

    def thresholds_for(self, rule: str) -> np.ndarray | None:
        """The stored per-label thresholds of ``rule`` (any spelling parse_rule accepts), or None."""
        key = str(parse_rule(rule))
        stored = {str(parse_rule(k)): v for k, v in self.thresholds.items()}
        return np.asarray(stored[key], dtype=np.float64) if key in stored else None

    def display_thresholds(self, rule: str = "max_f1") -> tuple[str, np.ndarray]:
        """(rule, per-label thresholds) shown beside probabilities: ``rule``'s stored ones (chosen on
        validation), else 0.5 for every label (rule "0.5")."""
        stored = self.thresholds_for(rule)
        return (rule, stored) if stored is not None else ("0.5", np.full(len(self.labels), 0.5))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, as written to model.json."""
        return {
            "format": files.package_format(self.model_config, self.input.intensity),
            "versions": self.versions,
            "model": {"name": self.model_name, "config": self.model_config},
            "labels": list(self.labels),
            "task": self.task,
            "input": self.input.as_dict(),
            "calibration": {"method": "temperature", "temperatures": list(self.temperatures)},
            "thresholds": {k: list(v) for k, v in self.thresholds.items()},
            "operating_point": self.operating_point.as_dict(),
            "validation": self.validation,
            **({"ood": self.ood} if self.ood else {}),
            **({"data": self.data} if self.data else {}),
        }


def build_package(
    *,
    model_name: str,
    model_config: dict,
    labels: Sequence[str],
    task: str,
    input_spec: InputSpec,
    val_logits: np.ndarray,
    val_targets: np.ndarray,
    target_sensitivity: float = 0.95,
    score_method: str = "auto",
    rules: Sequence[str] = THRESHOLD_RULES,
    groups: np.ndarray | None = None,
    n_boot: int = 200,
    data: dict | None = None,
) -> ModelPackage:
    """Fit calibration, thresholds and the operating point on validation logits and targets.

    Also stored for readers of single predictions (the viewer, the model card): per-label reliability
    bins, the macro AUC's bootstrap interval and the operating threshold's (``groups``: patient IDs of
    the validation rows, resampled together; ``n_boot=0``: none), and ``data``, the training data's summary.
    """
    import torch

    if not 0.0 < target_sensitivity <= 1.0:
        raise ValueError(f"target sensitivity {target_sensitivity}: expected a value in (0, 1]")
    labels = tuple(labels)
    y = np.asarray(val_targets, dtype=np.float64)
    if task in ("binary", "multiclass"):
        temps = np.full(len(labels), fit_softmax_temperature(val_logits, y))
    else:
        temps = fit_temperatures(val_logits, y)
    raw = logits_to_probs(val_logits, task)
    cal = logits_to_probs(val_logits, task, temps if task not in ("binary", "multiclass") else temps[0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        thresholds = {r: tuple(float(t) for t in choose_thresholds(y, cal, r, labels)) for r in rules}
        summary = summary_metrics(y, cal, 0.5, labels=labels)
        point = choose_operating_point(labels, y, cal, target_sensitivity, score_method)
    validation = {
        "images": len(y),
        "macro_auc": summary["macro_auc"],
        "macro_auc_labels": summary["macro_labels"],
        "no_finding_auc": summary.get("no_finding_auc"),
        "ece_before": expected_calibration_error(y, raw),
        "ece_after": expected_calibration_error(y, cal),
        # kept for the user: training logs them, every evaluation report lists them
        "warnings": sorted({str(w.message) for w in caught if "threshold" in str(w.message)})
        + degenerate_point_warnings(point),
        **reader_aids(labels, y, cal, point, temps, groups, n_boot),
    }
    versions = {
        "cxrkit": __version__,
        "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    return ModelPackage(
        model_name,
        dict(model_config),
        labels,
        task,
        input_spec,
        tuple(float(v) for v in temps),
        thresholds,
        point,
        validation,
        versions,
        data=dict(data or {}),
    )


def reader_aids(
    labels: Sequence[str],
    y: np.ndarray,
    cal: np.ndarray,
    point: OperatingPoint,
    temps: np.ndarray,
    groups: np.ndarray | None,
    n_boot: int,
) -> dict[str, Any]:
    """What a reader of one prediction needs from validation: what each probability has meant
    (reliability bins), how sure the AUC is, the scores too close to the threshold to call, and the
    labels whose temperature stopped at a bound (calibration there is not trustworthy)."""
    labels = list(labels)
    g = np.arange(len(y)) if groups is None else np.asarray(groups)
    out: dict[str, Any] = {
        "reliability": {
            "split": "validation (also used to fit the temperatures)",
            "bins": dict(zip(labels, reliability_bins(y, cal), strict=True)),
        },
        "temperature_at_bound": [
            lab for lab, t in zip(labels, temps, strict=True) if np.isclose(t, T_BOUNDS, rtol=1e-3).any()
        ],
    }
    if n_boot <= 0:
        return out
    cols = finding_columns(labels)  # the columns of the stored macro AUC
    if cols:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ci = ranking_cis(y, cal, g, n_boot=n_boot, seed=0, alpha=ALPHA, average=cols).macro_auc
        out["macro_auc_ci"] = [ci.low, ci.high]
    score, _ = abnormality_score(cal, labels, point.score)
    truth = abnormal_truth(y, labels)
    lo, hi = threshold_interval(truth, score, point.target_sensitivity, g, n_boot, alpha=ALPHA)
    out["operating_point_ci"] = [lo, hi]
    out["n_boot"] = n_boot
    out["ci_level"] = 1 - ALPHA
    out["bootstrap_unit"] = "image" if groups is None else "patient"
    return out


def write_package(run_dir: Path, pkg: ModelPackage) -> Path:
    """Write ``run_dir/model.json`` atomically."""
    from cxrkit.outputs import write_json

    return write_json(Path(run_dir) / files.PACKAGE, pkg.as_dict(), null_reason=None)


def read_package(run_dir: Path) -> ModelPackage:
    """Read ``run_dir/model.json``; clear errors for a missing, corrupt or newer-format file."""
    path = Path(run_dir) / files.PACKAGE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: this run was trained before runs became self-contained; "
            f"run `cxr package {run_dir}` once (it needs the run's training data) to write it"
        )
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not readable JSON ({err})") from None
    except RecursionError:
        raise ValueError(f"{path}: not a usable model.json (nested too deeply)") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(d).__name__}")
    fmt = d.get("format")
    written = (
        (d.get("versions") or {}).get("cxrkit", "unknown") if isinstance(d.get("versions"), dict) else "?"
    )
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > files.RUN_FORMAT:
        raise ValueError(
            f"{path}: run format {fmt} (written by cxrkit {written}) is newer than this cxrkit "
            f"{__version__} reads (format {files.RUN_FORMAT}); upgrade cxrkit"
        )
    try:
        problem = document_problem(d)
    except (AttributeError, TypeError, OverflowError) as err:  # a section of the wrong JSON type
        problem = f"malformed ({type(err).__name__}: {err})"
    if problem:  # a NaN threshold would read every study normal: never built, never used
        raise ValueError(f"{path}: {problem}")
    try:
        pkg = ModelPackage(
            model_name=d["model"]["name"],
            model_config=d["model"]["config"],
            labels=tuple(d["labels"]),
            task=d["task"],
            input=InputSpec.from_dict(d["input"]),
            temperatures=tuple(float(v) for v in d["calibration"]["temperatures"]),
            thresholds={k: tuple(float(x) for x in v) for k, v in d["thresholds"].items()},
            operating_point=OperatingPoint(
                **{k: float("nan") if v is None else v for k, v in d["operating_point"].items()}
            ),
            validation=d.get("validation", {}),
            versions=d.get("versions", {}),
            ood=d.get("ood") or {},
            data=d.get("data") if isinstance(d.get("data"), dict) else {},
        )
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise ValueError(f"{path}: incomplete model.json ({type(err).__name__}: {err})") from None
    problem = package_problem(pkg)
    if problem:  # a hand-edited or damaged file must not flag every study normal
        raise ValueError(f"{path}: {problem}")
    return pkg


def package_problem(pkg: ModelPackage) -> str | None:
    """Why a model package is unsafe to predict with, beyond the types and ranges that
    ``package_check.document_problem`` already refused (a NaN threshold, a bad temperature), or None."""
    target = pkg.operating_point.target_sensitivity
    if not 0.0 < target <= 1.0:
        return f"operating_point.target_sensitivity {target!r}: expected a value in (0, 1]"
    if pkg.task not in ("multilabel", "binary", "multiclass"):
        return f"task {pkg.task!r}: expected multilabel, binary or multiclass"
    spec = pkg.input
    if not 8 <= spec.size <= 4096 or spec.mode not in ("pad", "crop"):
        return f"input {spec.size} px, mode {spec.mode!r}: expected 8..4096 px, pad or crop"
    if spec.intensity not in INTENSITY:
        return f"input intensity {spec.intensity!r}: expected none, standardize or equalize"
    if spec.intensity != pkg.model_config.get("intensity", "none"):
        return f"intensity {spec.intensity!r} differs from the network's ({pkg.model_config['intensity']})"
    tta = pkg.model_config.get("tta")  # absent: no test-time views
    if tta is not None and (not isinstance(tta, int) or isinstance(tta, bool) or not 0 <= tta <= 5):
        return f"model.config.tta {tta!r}: expected 0..5 views"
    members = pkg.model_config.get("ensemble")
    if members is not None and (
        not isinstance(members, list)
        or not members
        or not all(isinstance(m, str) and re.fullmatch(r"fold-\d+", m) for m in members)
    ):
        return f"model.config.ensemble {members!r}: expected fold folder names (fold-1, fold-2, ...)"
    return None


class NeedsValidation(ValueError):
    """A threshold rule or triage target the run does not store: it must be chosen on validation data."""


def choose_operating_point(
    labels: Sequence[str], y_val: np.ndarray, p_val: np.ndarray, target: float, score: str = "auto"
) -> OperatingPoint:
    """The highest threshold on the abnormality score reaching ``target`` sensitivity on validation."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target sensitivity {target}: expected a value in (0, 1]")
    s, method = abnormality_score(p_val, labels, score)
    truth = abnormal_truth(y_val, labels)
    t = operating_point(truth, s, target)
    c = triage_counts(truth, s, t)
    reached = reaches(c["sensitivity"], target)
    return OperatingPoint(
        method, float(target), float(t), c["sensitivity"], c["specificity"], int(c["images"]), reached
    )


def degenerate_point_warnings(point: OperatingPoint) -> list[str]:
    """A warning when the triage point "reaches" its sensitivity only by flagging every normal study."""
    if point.reached and point.val_specificity == 0.0:
        return [
            f"triage operating point is degenerate: it reaches sensitivity {point.val_sensitivity:.3f} "
            f"on validation only with specificity 0 (threshold {point.threshold:.6g} flags every study "
            "abnormal, so it saves no reads); the model does not separate normal from abnormal here"
        ]
    return []


def resolve_operating_point(
    pkg: ModelPackage,
    target: float | None = None,
    score: str | None = None,
    val: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[OperatingPoint, str]:
    """(operating point, where it came from): the stored one when it matches, else chosen on ``val``.

    ``val`` is (targets, calibrated probabilities) of the validation split; without it a point
    other than the stored one is an error that says so.
    """
    from cxrkit.evaluate.triage import resolve_score_method

    stored = pkg.operating_point
    target = stored.target_sensitivity if target is None else float(target)
    method = resolve_score_method(pkg.labels, score or stored.score)
    if target == stored.target_sensitivity and method == stored.score:
        return stored, "stored in the run"
    if val is None:
        raise NeedsValidation(
            f"the run stores a triage point for sensitivity {stored.target_sensitivity:g} "
            f"({stored.score} score); sensitivity {target:g} ({method}) must be chosen on the run's "
            "validation split, which needs its data"
        )
    return choose_operating_point(pkg.labels, val[0], val[1], target, method), "chosen on validation now"


def resolve_thresholds(
    pkg: ModelPackage, rule: str, val: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[np.ndarray, str]:
    """(per-label thresholds, where they came from) for ``rule``: stored, else chosen on ``val`` now."""
    stored = pkg.thresholds_for(rule)
    if stored is not None:
        return stored, "stored in the run"
    if val is None:
        raise NeedsValidation(
            f"threshold rule {rule!r} is not stored in the run (it has {', '.join(pkg.thresholds)}); "
            "another rule needs the run's validation data"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return choose_thresholds(val[0], val[1], rule, pkg.labels), "chosen on validation now"
