"""Subgroup slices by sex, age band and view carry counts and metrics; small slices show counts only."""

import numpy as np
import pandas as pd

from cxrkit.evaluate.fairness import subgroup_label_auc, subgroup_table


def test_subgroup_table():
    rng = np.random.default_rng(0)
    n = 400
    meta = pd.DataFrame(
        {
            "image_id": [f"i{k}" for k in range(n)],
            "patient_id": [f"p{k // 2}" for k in range(n)],
            "sex": rng.choice(["M", "F"], n),
            "age": np.r_[rng.integers(20, 90, n - 5), [5, 6, 7, 8, 9]],
            "view": rng.choice(["PA", "AP"], n),
        }
    )
    y = rng.integers(0, 2, (n, 2)).astype(float)
    p = np.clip(0.5 * y + 0.5 * rng.random((n, 2)), 0, 1)
    abn = y.max(1)
    t = subgroup_table(meta, y, p, np.array([0.5, 0.5]), abn, p.max(1), 0.6)
    for attr in ("sex", "age band", "view"):
        assert t.loc[t["attribute"] == attr, "images"].sum() == n
    kids = t[(t["attribute"] == "age band") & (t["group"] == "0-17")].iloc[0]
    assert kids["images"] == 5 and np.isnan(kids["macro_auc"])  # under 10 images: counts only
    men = t[(t["attribute"] == "sex") & (t["group"] == "M")].iloc[0]
    assert men["patients"] <= men["images"] and 0.5 < men["macro_auc"] <= 1
    assert 0 <= men["triage_sensitivity"] <= 1
    aucs = subgroup_label_auc(meta, y, p, ["A", "B"])
    assert set(aucs.columns) >= {"attribute", "group", "A", "B"}
    assert subgroup_table(meta[["image_id", "patient_id"]], y, p, np.array([0.5, 0.5])).empty
