"""The warnings a viewer and a model card show, and the borderline band, from model.json's facts."""

import dataclasses

from conftest import make_untrained_run

from cxrkit.run.card import borderline_band, model_warnings
from cxrkit.run.package import read_package

FULL = {"reliability": {"bins": {}}, "macro_auc": 0.91, "macro_auc_ci": [0.88, 0.94], "images": 900}


def test_each_warning_appears_exactly_when_it_is_due(tmp_path):
    pkg = read_package(make_untrained_run(tmp_path / "run"))
    ok = dataclasses.replace(pkg, validation=FULL, data={"synthetic": False})
    assert model_warnings(ok) == []
    cases = {
        "includes 0.5": {"macro_auc": 0.56, "macro_auc_ci": [0.47, 0.64]},
        "weak model: validation macro AUC 0.550": {"macro_auc": 0.55, "macro_auc_ci": None},
        "temperature bound for Effusion": {"temperature_at_bound": ["Effusion"]},
        "validated on 120 images only": {"images": 120},
        "packaged by an older cxrkit": {"reliability": None},
        "threshold for Effusion: no positives": {"warnings": ["threshold for Effusion: no positives"]},
    }
    for text, change in cases.items():
        got = model_warnings(dataclasses.replace(ok, validation={**FULL, **change}))
        assert len(got) == 1 and text in got[0], (text, got)
    synthetic = model_warnings(dataclasses.replace(ok, data={"synthetic": True}))
    assert len(synthetic) == 1 and "synthetic phantoms" in synthetic[0]


def test_borderline_band_is_the_stored_interval_or_none(tmp_path):
    pkg = read_package(make_untrained_run(tmp_path / "run"))
    assert borderline_band(pkg) is None
    for stored, want in (([0.2, 0.4], (0.2, 0.4)), ([None, 0.4], None), ([0.5, 0.4], None), ("x", None)):
        assert borderline_band(dataclasses.replace(pkg, validation={"operating_point_ci": stored})) == want
