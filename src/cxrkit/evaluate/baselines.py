"""Naive baselines, scored with the same metrics as models, so a model's numbers have a floor.

- ``majority``: each label's majority class in training, for every image. On ChestX-ray14 this is
  "No Finding" for everyone: binary accuracy near 0.9 and every AUC exactly 0.5.
- ``prevalence``: each label drawn at random with its training prevalence (seeded).
- ``always_abnormal``: every finding present, "No Finding" absent: the triage floor
  (sensitivity 1, no reads saved).
Scores are 0/1, so thresholds do not matter for them (0.5 is used).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cxrkit.labels import NO_FINDING

BASELINES = ("majority", "prevalence", "always_abnormal")


def training_prevalence(train_targets: np.ndarray) -> np.ndarray:
    """Share of positives per label among known training entries (L,); 0 where nothing is known."""
    t = np.asarray(train_targets, dtype=np.float64)
    known = (~np.isnan(t)).sum(0)
    return np.nansum(t, 0) / np.maximum(known, 1)  # 0 / 1 where nothing is known


def baseline_scores(
    kind: str, train_targets: np.ndarray, n: int, labels: Sequence[str], seed: int = 0
) -> np.ndarray:
    """(n, L) 0/1 scores of baseline ``kind`` for ``n`` images."""
    prev = training_prevalence(train_targets)
    if kind == "majority":
        return np.tile((prev > 0.5).astype(np.float32), (n, 1))
    if kind == "prevalence":
        draws = np.random.default_rng(seed).random((n, len(labels)))
        return (draws < prev).astype(np.float32)  # pragma: no mutate (continuous draws: < and <= agree)
    if kind == "always_abnormal":
        row = np.array([0.0 if name == NO_FINDING else 1.0 for name in labels], dtype=np.float32)
        return np.tile(row, (n, 1))
    raise ValueError(f"baseline {kind!r}: expected one of {', '.join(BASELINES)}")
