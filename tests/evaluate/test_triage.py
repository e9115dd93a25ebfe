"""Triage scores, truth, operating point, sweep and worklist."""

import numpy as np
import pandas as pd
import pytest

from cxrkit.evaluate.triage import (
    abnormal_truth,
    abnormality_score,
    build_worklist,
    operating_point,
    triage_counts,
    triage_sweep,
)
from cxrkit.labels import NO_FINDING

LABELS = ["Effusion", "Mass", NO_FINDING]


def test_scores():
    p = np.array([[0.5, 0.2, 0.3], [0.0, 0.0, 0.9]])
    s, m = abnormality_score(p, LABELS)
    assert m == "no_finding" and np.allclose(s, [0.7, 0.1])
    s, _ = abnormality_score(p, LABELS, "noisy_or")
    assert np.allclose(s, [1 - 0.5 * 0.8, 0.0])
    assert np.allclose(abnormality_score(p, LABELS, "max")[0], [0.5, 0.0])
    s, m = abnormality_score(p[:, :2], LABELS[:2])
    assert m == "noisy_or"
    with pytest.raises(ValueError, match="No Finding"):
        abnormality_score(p[:, :2], LABELS[:2], "no_finding")
    with pytest.raises(ValueError, match="expected one of"):
        abnormality_score(p, LABELS, "mean")


def test_truth_from_no_finding_or_any_finding():
    t = np.array([[1, 0, 0], [0, 0, 1], [np.nan, 0, np.nan], [np.nan, 1, np.nan]], dtype=float)
    assert np.allclose(abnormal_truth(t, LABELS), [1, 0, np.nan, np.nan], equal_nan=True)
    assert np.allclose(abnormal_truth(t[:, :2], LABELS[:2]), [1, 0, np.nan, 1], equal_nan=True)


def test_operating_point_counts_and_sweep():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400).astype(float)
    s = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1)
    t = operating_point(y, s, 0.9)
    c = triage_counts(y, s, t)
    assert c["sensitivity"] >= 0.9
    assert c["reads_saved"] == ((s < t) & (y == 0)).sum() and c["missed"] == ((s < t) & (y == 1)).sum()
    assert c["flagged"] + c["reads_saved"] + c["missed"] == 400 and c["abnormal"] == y.sum()
    sweep = triage_sweep(y, s, t)
    assert sweep["chosen"].sum() == 1 and np.isclose(sweep.loc[sweep["chosen"], "threshold"].iloc[0], t)
    assert sweep["reads_saved"].is_monotonic_increasing and sweep["missed"].is_monotonic_increasing
    assert sweep["flagged"].iloc[0] == 400 and sweep["flagged"].iloc[-1] == 0


def test_worklist_most_urgent_first():
    meta = pd.DataFrame({"image_id": ["a", "b", "c"], "patient_id": ["1", "2", "3"]})
    p = np.array([[0.1, 0.1, 0.9], [0.9, 0.6, 0.05], [0.4, 0.2, 0.5]])
    s, _ = abnormality_score(p, LABELS)
    w = build_worklist(meta, p, LABELS, s, 0.5, truth=np.array([0, 1, np.nan]))
    assert list(w["image_id"]) == ["b", "c", "a"] and list(w["rank"]) == [1, 2, 3]
    assert list(w["flag"]) == ["abnormal", "abnormal", "normal"]
    assert w["top_findings"].iloc[0].startswith("Effusion 0.90; Mass 0.60")
    assert list(w["truth"]) == ["abnormal", "", "normal"]
