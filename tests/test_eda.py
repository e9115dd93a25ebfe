"""EDA statistics are exact on small hand-checked tables."""

import numpy as np
import pandas as pd

from cxrkit import eda

LABELS = ["A", "B", "No Finding"]


def meta() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": list("pqrst"),
            "patient_id": ["1", "1", "2", "3", "4"],
            "age": [30, 50, np.nan, 70, 90],
            "sex": ["M", "F", "F", None, "M"],
            "view": ["PA"] * 4 + ["AP"],
            "A": [1, 1, 0, 0, np.nan],
            "B": [1, 0, 0, 1, 0],
            "No Finding": [0, 0, 1, 0, 1],
        }
    )


def test_label_counts_use_known_images_for_shares():
    c = eda.label_counts(meta(), LABELS).set_index("label")
    assert c.loc["A", "count"] == 2 and c.loc["A", "known"] == 4 and c.loc["A", "share"] == 0.5
    assert c.loc["B", "share"] == 0.4


def test_multilabel_share_and_findings_per_image():
    m = eda.multilabel_share(meta(), LABELS)
    assert m["abnormal"] == 3 and m["multi_label"] == 1 and m["multi_label_share_of_abnormal"] == 1 / 3
    assert eda.findings_per_image(meta(), LABELS).to_dict() == {0: 2, 1: 2, 2: 1}


def test_cooccurrence_and_correlation():
    co = eda.cooccurrence(meta(), ["A", "B"])
    assert co.loc["A", "B"] == 1 and co.loc["A", "A"] == 2 and co.loc["B", "B"] == 2
    corr = eda.label_correlation(meta(), ["A", "B"])
    a = np.array([1, 1, 0, 0, 0.0])
    b = np.array([1, 0, 0, 1, 0.0])
    assert np.isclose(corr.loc["A", "B"], np.corrcoef(a, b)[0, 1])


def test_by_label_and_age():
    sex = eda.by_label(meta(), LABELS, "sex")
    assert sex.loc["All"].to_dict() == {"M": 2, "F": 2, "unknown": 1}
    assert sex.loc["A"].to_dict() == {"M": 1, "F": 1, "unknown": 0}
    age = eda.age_by_label(meta(), LABELS)
    assert age.loc["All", "n"] == 4 and age.loc["No Finding", "median"] == 90
