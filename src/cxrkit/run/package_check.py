"""Checks that keep a damaged or hand-edited ``model.json`` from ever being used.

``document_problem`` looks at the raw JSON (types, finiteness, ranges, lengths) before anything is
built from it; ``weights_problem`` compares the package with the checkpoint it ships beside, field
by field, for everything that changes predictions. Each returns one line naming the key and the
values, or None.
"""

from __future__ import annotations

import math
from typing import Any

from cxrkit.evaluate.calibration import T_BOUNDS
from cxrkit.evaluate.thresholds import parse_rule

INPUT_FIELDS = ("size", "mode", "channels", "value_range", "intensity")
# model config keys that change the network or its input; compared wherever both files hold them
NETWORK_FIELDS = (
    "grey",
    "transition",
    "hidden",
    "dropout",
    "input_norm",
    "intensity",
    "backbone_config",
    "tta",
)


# what the calibration fitter can return (evaluate.calibration.T_BOUNDS), with rounding room: outside it a
# hand-edited temperature would squash every probability towards 0.5 (one flag for every study)
MIN_TEMPERATURE, MAX_TEMPERATURE = T_BOUNDS[0] * (1 - 1e-6), T_BOUNDS[1] * (1 + 1e-6)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    """A JSON number that is finite as a float (an integer of 400 digits is not)."""
    try:
        return _is_number(v) and math.isfinite(float(v))
    except OverflowError:
        return False


def _probability_problem(key: str, v: Any, nullable: bool = False) -> str | None:
    """A value that must be a finite number in [0, 1] (or null when ``nullable``)."""
    if v is None and nullable:
        return None
    if not _is_number(v):
        return f"{key} {v!r}: expected a number in [0, 1], got {type(v).__name__}"
    if not _finite(v) or not 0.0 <= v <= 1.0:
        return f"{key} {v!r}: expected a finite number in [0, 1]"
    return None


def _first(problems) -> str | None:
    return next((p for p in problems if p), None)


def document_problem(d: dict) -> str | None:
    """Why a model.json document cannot be trusted (wrong type, NaN, out of range, wrong length), or None."""
    fmt = d.get("format")
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        return f"format {fmt!r}: expected an integer run format (1 or more), got {type(fmt).__name__}"
    labels = d.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        return f"labels {labels!r}: expected a non-empty list of label names"
    if not isinstance(d.get("task"), str):
        return f"task {d.get('task')!r}: expected a string"
    return _first(
        (
            _input_problem(d.get("input")),
            _numbers_problem(d, len(labels)),
            _point_problem(d),
            _ood_problem(d.get("ood")),
            _network_problem(
                (d.get("model") or {}).get("config") if isinstance(d.get("model"), dict) else None
            ),
        )
    )


def _network_problem(config: Any) -> str | None:
    if not isinstance(config, dict):
        return f"model.config {config!r}: expected an object"
    norm = config.get("input_norm")
    if norm is not None and not (
        isinstance(norm, list) and len(norm) == 2 and all(_finite(v) for v in norm) and float(norm[1]) > 0
    ):
        return f"model.config.input_norm {norm!r}: expected [mean, std] with std > 0"
    return None


def _input_problem(spec: Any) -> str | None:
    if not isinstance(spec, dict):
        return f"input {spec!r}: expected an object"
    size, channels = spec.get("size"), spec.get("channels", 1)
    vr = spec.get("value_range", [0, 1])  # pragma: no mutate (any two finite defaults pass the same check)
    if not isinstance(size, int) or isinstance(size, bool):
        return f"input.size {size!r}: expected an integer number of pixels, got {type(size).__name__}"
    if not isinstance(channels, int) or isinstance(channels, bool) or channels != 1:
        return f"input.channels {channels!r}: expected 1 (grey)"
    if not isinstance(spec.get("mode", "pad"), str) or not isinstance(spec.get("intensity", "none"), str):
        return f"input.mode/intensity {spec.get('mode')!r}/{spec.get('intensity')!r}: expected strings"
    if not (isinstance(vr, list) and len(vr) == 2 and all(_finite(v) for v in vr)):
        return f"input.value_range {vr!r}: expected two finite numbers"
    return None


def _numbers_problem(d: dict, n_labels: int) -> str | None:
    temps = (d.get("calibration") or {}).get("temperatures")
    if not isinstance(temps, list) or not all(
        _finite(t) and MIN_TEMPERATURE <= t <= MAX_TEMPERATURE for t in temps
    ):
        return f"calibration.temperatures {temps!r}: expected numbers in [{T_BOUNDS[0]:g}, {T_BOUNDS[1]:g}]"
    if len(temps) not in (1, n_labels):
        return f"calibration.temperatures: {len(temps)} values for {n_labels} labels"
    thresholds = d.get("thresholds")
    if not isinstance(thresholds, dict):
        return f"thresholds {thresholds!r}: expected an object of per-label lists"
    for rule, values in thresholds.items():
        try:
            parse_rule(rule)
        except ValueError:
            return f"thresholds.{rule}: not a threshold rule (e.g. 0.5, max_f1, youden, sensitivity:0.95)"
        if not isinstance(values, list) or len(values) != n_labels:
            return f"thresholds.{rule}: expected {n_labels} values, one per label, got {values!r}"
        problem = _first(_probability_problem(f"thresholds.{rule}[{j}]", v) for j, v in enumerate(values))
        if problem:
            return problem
    return None


def _ood_problem(ood: Any) -> str | None:
    """The ``ood`` section (absent in older runs): a known method, a finite threshold, a plain file name."""
    if ood is None:
        return None
    if not isinstance(ood, dict):
        return f"ood {ood!r}: expected an object"
    if ood.get("method") not in ("mahalanobis", "energy"):
        return f"ood.method {ood.get('method')!r}: expected mahalanobis or energy"
    if not _finite(ood.get("threshold")):
        return f"ood.threshold {ood.get('threshold')!r}: expected a finite number"
    name = ood.get("file")
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name.startswith("."):
        return f"ood.file {name!r}: expected a file name in the run folder"
    if not isinstance(ood.get("sha256"), str):
        return f"ood.sha256 {ood.get('sha256')!r}: expected the file's digest"
    return None


def _point_problem(d: dict) -> str | None:
    op = d.get("operating_point")
    if not isinstance(op, dict):
        return f"operating_point {op!r}: expected an object"
    if not isinstance(op.get("score"), str):
        return f"operating_point.score {op.get('score')!r}: expected a score rule name"
    if "reached" in op and not isinstance(op["reached"], bool):  # absent in older files
        return f"operating_point.reached {op['reached']!r}: expected true or false"
    images = op.get("val_images")
    if not isinstance(images, int) or isinstance(images, bool) or images < 0:
        return f"operating_point.val_images {images!r}: expected a count"
    return _first(
        _probability_problem(f"operating_point.{key}", op.get(key), nullable=key.startswith("val_"))
        for key in ("threshold", "target_sensitivity", "val_sensitivity", "val_specificity")
    )


def weights_problem(pkg, ckpt: dict) -> str | None:
    """The first prediction-changing field where model.json (``pkg``) and best.pt (``ckpt``) disagree."""
    pairs = [
        ("labels", list(pkg.labels), ckpt.get("labels")),
        ("task", pkg.task, ckpt.get("task")),
        ("model name", pkg.model_name, ckpt.get("model_name")),
    ]
    spec, stored = pkg.input.as_dict(), ckpt.get("input") or {}
    pairs += [(f"input.{k}", spec[k], stored.get(k)) for k in INPUT_FIELDS]
    config, stored_config = pkg.model_config, ckpt.get("model_config") or {}
    pairs += [(f"model.config.{k}", config.get(k), stored_config.get(k)) for k in NETWORK_FIELDS]
    for field, in_json, in_weights in pairs:
        if in_weights is None:
            continue  # older checkpoints do not store every field
        if in_json is None:  # deleted from model.json: the network would be built with a default
            return f"model.json lacks {field}; the weights were trained with {in_weights!r}"
        if _plain(in_json) != _plain(in_weights):
            return (
                f"model.json and best.pt disagree on {field}: model.json says {in_json!r}, "
                f"the weights were trained with {in_weights!r}"
            )
    n = len(ckpt.get("labels") or pkg.labels)  # pragma: no mutate (the labels agree here: either length)
    if len(pkg.temperatures) not in (1, n):
        return f"model.json has {len(pkg.temperatures)} temperatures; best.pt has {n} outputs"
    return None


def _plain(v: Any) -> Any:
    """Tuples as lists and numbers as floats, so JSON and checkpoint values compare by value."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if _is_number(v):
        return float(v)
    return v
