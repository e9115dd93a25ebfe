"""Decision thresholds: chosen on validation, applied unchanged to test.

A rule is written as a string, as on the command line:
``0.5`` / ``0.2`` (fixed), ``max_f1``, ``max_f3`` (F-beta with beta 3, any beta), ``youden``
(max sensitivity + specificity - 1) or ``sensitivity:0.95`` (the highest threshold whose
validation recall is still >= 0.95). Tuned thresholds are validation scores themselves and a
score counts as positive when ``score >= threshold``, so the validation numbers are exact.
A label whose validation set lacks positives (or negatives, where needed) falls back to 0.5
with a warning naming it.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cxrkit.evaluate.metrics import Ranked

FALLBACK = 0.5


@dataclass(frozen=True)
class ThresholdRule:
    """How to pick a threshold: ``method`` in fixed/max_fbeta/youden/sensitivity with its ``value``."""

    method: str
    value: float

    def __str__(self) -> str:
        if self.method == "fixed":
            return f"{self.value:g}"
        if self.method == "max_fbeta":
            return f"max_f{self.value:g}"
        if self.method == "sensitivity":
            return f"sensitivity:{self.value:g}"
        return self.method


def parse_rule(text: str | float) -> ThresholdRule:
    """Parse ``0.5``, ``max_f1``, ``max_f3``, ``youden`` or ``sensitivity:0.95``."""
    t = str(text).strip().lower()
    try:
        v = float(t)
    except ValueError:
        pass
    else:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"threshold {text!r}: a fixed threshold must lie in [0, 1]")
        return ThresholdRule("fixed", v)
    if t == "youden":
        return ThresholdRule("youden", 0.0)  # pragma: no mutate (youden has no parameter)
    m = re.fullmatch(r"max_f(\d+(?:\.\d+)?)", t)
    if m and float(m.group(1)) > 0:
        return ThresholdRule("max_fbeta", float(m.group(1)))
    m = re.fullmatch(r"sens(?:itivity)?:(\d*\.?\d+)", t)
    if m and 0.0 < float(m.group(1)) <= 1.0:
        return ThresholdRule("sensitivity", float(m.group(1)))
    raise ValueError(
        f"threshold rule {text!r}: expected a number in [0, 1], max_f1, max_f<beta>, youden "
        "or sensitivity:<target in (0, 1]>"
    )


SENSITIVITY_SLACK = 1e-12  # a sensitivity this close below its target counts as reaching it (float rounding)


def reaches(sensitivity: float, target: float) -> bool:
    """Whether a measured sensitivity reaches ``target`` (NaN never does): the one "reached" rule."""
    return bool(sensitivity == sensitivity and sensitivity >= target - SENSITIVITY_SLACK)


def choose_threshold(
    y_true: np.ndarray, score: np.ndarray, rule: ThresholdRule | str, name: str = "label"
) -> float:
    """The threshold ``rule`` picks for one label from validation truth and scores."""
    rule = parse_rule(rule) if isinstance(rule, str) else rule
    if rule.method == "fixed":
        return rule.value
    r = Ranked.build(y_true, score)
    pos, neg = (c[0] for c in r.counts())
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or (n_neg == 0 and rule.method == "youden"):
        warnings.warn(
            f"threshold {rule} for {name}: validation has {int(n_pos)} positives and {int(n_neg)} negatives; "
            f"using {FALLBACK}",
            RuntimeWarning,
            stacklevel=2,
        )
        return FALLBACK
    tp, fp = np.cumsum(pos), np.cumsum(neg)  # predicted positive when score >= scores[k]
    recall = tp / n_pos
    if rule.method == "sensitivity":
        # pragma: no mutate (next line) -- with the 1e-12 slack, > and >= agree on every reachable recall
        k = int(np.argmax(recall >= rule.value - SENSITIVITY_SLACK))  # scores descend: first k is the highest
    elif rule.method == "youden":
        k = int(np.argmax(recall - fp / n_neg))
    else:
        b2 = rule.value**2
        # F-beta = (1 + b2) tp / (tp + fp + b2 n_pos) is highest where tp / (fp + b2 n_pos) is
        k = int(np.argmax(tp / (fp + b2 * n_pos)))
    return float(r.scores[k])


def choose_thresholds(
    y_true: np.ndarray, scores: np.ndarray, rule: ThresholdRule | str, labels: Sequence[str] | None = None
) -> np.ndarray:
    """Per-label thresholds (L,) picked by ``rule`` on validation (N, L) truth and scores."""
    y, s = np.atleast_2d(y_true), np.atleast_2d(scores)
    names = list(labels) if labels else [str(j) for j in range(y.shape[1])]
    return np.array([choose_threshold(y[:, j], s[:, j], rule, names[j]) for j in range(y.shape[1])])
