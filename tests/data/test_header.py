"""DICOM header facts for the OOD checks and the monitor log: ages in years, finite numbers only."""

from __future__ import annotations

import pydicom
import pytest
from conftest import chest_like, write_dicom

from cxrkit.data.header import header_fields, parse_age


@pytest.mark.parametrize(
    ("text", "years"),
    [("045Y", 45), ("006M", 0.5), ("026W", 26 * 7 / 365.25), ("010D", 10 / 365.25), ("70", 70)],
)
def test_ages_are_read_in_years(text, years):
    assert parse_age(text) == pytest.approx(years)


@pytest.mark.parametrize("text", ["", "abc", "45X", "-5Y"])
def test_a_malformed_age_is_none(text):
    assert parse_age(text) is None


def test_fields_are_read_and_a_nan_number_is_dropped(tmp_path):
    path = write_dicom(tmp_path / "a.dcm", chest_like(32, 32))
    ds = pydicom.dcmread(path)
    ds.PatientAge, ds.ViewPosition, ds.BodyPartExamined, ds.KVP = "004Y", "ll", "Chest", "NaN"
    ds.Manufacturer, ds.PatientName = "ACME", "Smith^John"
    ds.save_as(path)
    fields = header_fields(path)
    assert {k: fields[k] for k in ("age", "view", "body_part", "manufacturer")} == {
        "age": 4,
        "view": "LL",
        "body_part": "CHEST",
        "manufacturer": "ACME",
    }
    assert "kvp" not in fields and "Smith" not in str(fields)
    assert header_fields(path.read_bytes()) == fields
    assert header_fields(tmp_path / "missing.dcm") == {} and header_fields(b"not dicom at all") == {}
