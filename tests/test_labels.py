"""The label schema: canonical names, every source's spelling, alignment by name with NaN."""

import numpy as np
import pytest

from cxrkit.labels import (
    CHESTMNIST_LABELS,
    FINDINGS,
    LABELS,
    NO_FINDING,
    TFRECORD_LABEL_FEATURES,
    UnknownLabelError,
    add_no_finding,
    align_by_name,
    canonical_label,
    encode_finding_labels,
    google2019_to_labels,
    parse_finding_labels,
)


def test_schema_is_14_findings_then_no_finding():
    assert len(FINDINGS) == 14 and LABELS[-1] == NO_FINDING and len(set(LABELS)) == 15


@pytest.mark.parametrize(
    "spelling, expected",
    [
        ("Pleural_Thickening", "Pleural_Thickening"),
        ("pleural", "Pleural_Thickening"),
        ("Pleural Thickening", "Pleural_Thickening"),
        ("NORMAL", NO_FINDING),
        ("no finding", NO_FINDING),
        ("Infiltrate", "Infiltration"),
        ("cardiomegaly", "Cardiomegaly"),
        ("PNEUMONIA", "Pneumonia"),
    ],
)
def test_every_source_spelling_maps_to_the_canonical_name(spelling, expected):
    assert canonical_label(spelling) == expected


def test_each_source_list_covers_the_schema_by_name():
    assert {canonical_label(n) for n in CHESTMNIST_LABELS} == set(FINDINGS)
    assert {canonical_label(n) for n in TFRECORD_LABEL_FEATURES} == set(LABELS)


def test_unknown_label_names_the_value_and_suggests():
    with pytest.raises(UnknownLabelError, match=r"'Cardiomegally'.*Cardiomegaly"):
        canonical_label("Cardiomegally")


def test_parse_finding_labels_multi_label_cell():
    v = parse_finding_labels("Cardiomegaly|Emphysema")
    assert v[LABELS.index("Cardiomegaly")] == 1 and v[LABELS.index("Emphysema")] == 1 and v.sum() == 2
    assert parse_finding_labels("No Finding")[-1] == 1


def test_encode_finding_labels_matches_per_cell_parsing():
    cells = ["Mass", "No Finding", "Mass|Nodule", "Mass"]
    assert np.array_equal(encode_finding_labels(cells), np.stack([parse_finding_labels(c) for c in cells]))


def test_align_by_name_reorders_and_marks_missing_as_nan():
    vals = np.array([[1, 0], [0, 1]], dtype=np.float32)
    out = align_by_name(vals, ["hernia", "Effusion"])
    assert out.shape == (2, 15)
    assert out[0, LABELS.index("Hernia")] == 1 and out[1, LABELS.index("Effusion")] == 1
    assert np.isnan(out[:, LABELS.index("Mass")]).all()


def test_align_by_name_rejects_two_spellings_of_one_label():
    with pytest.raises(ValueError, match="duplicates"):
        align_by_name(np.zeros((1, 2)), ["pleural", "Pleural_Thickening"])


def test_add_no_finding_only_when_every_finding_is_known_negative():
    y = np.full((3, 15), np.nan, dtype=np.float32)
    y[0, :14] = 0
    y[1, :14] = 0
    y[1, 3] = 1
    y[2, 0] = 0  # other findings unknown
    out = add_no_finding(y)
    assert out[0, -1] == 1 and out[1, -1] == 0 and np.isnan(out[2, -1])


def test_google2019_expert_labels():
    out = google2019_to_labels({"Pneumothorax": ["YES", "NO"], "Nodule or mass": ["YES", "NO"]})
    assert list(out[:, LABELS.index("Pneumothorax")]) == [1, 0]
    assert np.isnan(out[0, LABELS.index("Nodule")]) and out[1, LABELS.index("Mass")] == 0
    assert np.isnan(out[:, LABELS.index("Effusion")]).all()
    with pytest.raises(ValueError, match="MAYBE"):
        google2019_to_labels({"Pneumothorax": ["MAYBE"], "Nodule or mass": ["NO"]})
