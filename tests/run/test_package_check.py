"""A model.json that disagrees with its weights, or holds a NaN, wrong type or wrong length, is never used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_untrained_run

from cxrkit.cli import main
from cxrkit.run import files
from cxrkit.run.model import RunModel


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return make_untrained_run(tmp_path / "run")


def _tamper(run_dir: Path, change) -> None:
    path = run_dir / files.PACKAGE
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))  # Python writes NaN as a bare NaN, as a hand edit could


def test_the_untampered_run_loads_and_predicts(run_dir):
    run = RunModel.load(run_dir, "cpu")
    rng = np.random.default_rng(0)
    assert len(run.predict([rng.integers(0, 256, (64, 64)).astype(np.uint8)])) == 1


@pytest.mark.parametrize(
    ("field", "change", "json_value", "weights_value"),
    [
        ("input.size", lambda d: d["input"].update(size=64), "64", "32"),
        ("input.mode", lambda d: d["input"].update(mode="crop"), "'crop'", "'pad'"),
        (
            "input.intensity",
            lambda d: (
                d["input"].update(intensity="equalize"),
                d["model"]["config"].update(intensity="equalize"),
            ),
            "'equalize'",
            "'none'",
        ),
        (
            "labels",
            lambda d: d.update(labels=["No Finding", "Pneumonia", "Effusion"]),
            "Pneumonia",
            "Effusion",
        ),
        ("task", lambda d: d.update(task="multiclass"), "'multiclass'", "'multilabel'"),
        (
            "model.config.input_norm",
            lambda d: d["model"]["config"].update(input_norm=[0.125, 0.75]),
            "0.125",
            "0.",
        ),
        ("model.config.grey", lambda d: d["model"]["config"].update(grey="repeat"), "'repeat'", "'fold'"),
    ],
)
def test_a_prediction_changing_mismatch_is_refused_naming_field_and_values(
    run_dir, field, change, json_value, weights_value
):
    _tamper(run_dir, change)
    with pytest.raises(ValueError) as info:
        RunModel.load(run_dir, "cpu")
    msg = str(info.value)
    assert f"disagree on {field}:" in msg and json_value in msg and weights_value in msg, msg
    assert "cxr package" in msg


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d["thresholds"]["max_f1"].__setitem__(1, float("nan")), "thresholds.max_f1[1] nan"),
        (lambda d: d["thresholds"]["0.5"].__setitem__(0, float("inf")), "thresholds.0.5[0] inf"),
        (lambda d: d["thresholds"]["0.5"].__setitem__(2, 1.5), "thresholds.0.5[2] 1.5"),
        (lambda d: d["thresholds"]["0.5"].__setitem__(2, "0.5"), "expected a number in [0, 1], got str"),
        (lambda d: d["thresholds"].update(max_f1=[0.3, 0.4]), "thresholds.max_f1: expected 3 values"),
        (lambda d: d["operating_point"].update(threshold=float("nan")), "operating_point.threshold nan"),
        (
            lambda d: d["operating_point"].update(val_sensitivity=float("nan")),
            "operating_point.val_sensitivity",
        ),
        (lambda d: d["operating_point"].update(val_specificity=-0.1), "operating_point.val_specificity -0.1"),
        (lambda d: d["operating_point"].update(target_sensitivity="0.95"), "got str"),
        (lambda d: d["operating_point"].update(reached="yes"), "operating_point.reached 'yes'"),
        (lambda d: d.update(format="1"), "format '1': expected an integer"),
        (lambda d: d["input"].update(size="32"), "input.size '32': expected an integer"),
        (lambda d: d["input"].update(size=32.5), "input.size 32.5"),
        (lambda d: d["calibration"].update(temperatures=[1.0, 1.0]), "2 values for 3 labels"),
        (
            lambda d: d["calibration"].update(temperatures=[1.0, float("nan"), 1.0]),
            "calibration.temperatures",
        ),
        (lambda d: d.update(labels="No Finding"), "labels 'No Finding'"),
        (lambda d: d.update(operating_point=[]), "operating_point []: expected an object"),
        (lambda d: d["model"]["config"].pop("input_norm"), "lacks model.config.input_norm"),
        (lambda d: d["model"]["config"].pop("grey"), "lacks model.config.grey"),
        (lambda d: d["thresholds"].update(bogus=[0.5] * 3), "thresholds.bogus: not a threshold rule"),
        (lambda d: d["operating_point"].update(threshold=10**400), "operating_point.threshold 1000"),
        (lambda d: d["calibration"].update(temperatures=[10**400] * 3), "calibration.temperatures"),
        (lambda d: d["calibration"].update(temperatures=[1e300] * 3), "expected numbers in [0.25, 20]"),
        (lambda d: d["calibration"].update(temperatures=[999.0] * 3), "expected numbers in [0.25, 20]"),
        (lambda d: d["calibration"].update(temperatures=[0.1] * 3), "expected numbers in [0.25, 20]"),
        (lambda d: d["model"]["config"].update(input_norm=[0.5, 10**400]), "model.config.input_norm"),
        (lambda d: d.update(format=0), "format 0: expected an integer run format"),
        (lambda d: d.update(validation=[[[[[]]]]]), None),  # unused sections may hold anything
    ],
)
def test_unusable_values_are_refused_naming_the_key(run_dir, change, words):
    _tamper(run_dir, change)
    if words is None:
        RunModel.load(run_dir, "cpu")
        return
    with pytest.raises(ValueError) as info:
        RunModel.load(run_dir, "cpu")
    assert words in str(info.value) and str(run_dir) in str(info.value), str(info.value)


def test_a_deeply_nested_model_json_is_one_clear_error(run_dir):
    path = run_dir / files.PACKAGE
    path.write_text(path.read_text().rstrip()[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ValueError, match="nested too deeply"):
        RunModel.load(run_dir, "cpu")


def test_a_null_validation_rate_is_allowed_as_not_measurable(run_dir):
    """JSON null (what cxrkit writes for a rate it could not measure) is not a NaN typed into the file."""
    _tamper(run_dir, lambda d: d["operating_point"].update(val_specificity=None))
    assert np.isnan(RunModel.load(run_dir, "cpu").package.operating_point.val_specificity)


def test_cxr_export_on_a_tampered_run_gives_the_same_message(run_dir, capsys):
    pytest.importorskip("onnx")
    _tamper(run_dir, lambda d: d["input"].update(size=64))
    assert main(["export", str(run_dir)]) != 0
    err = capsys.readouterr().err
    assert "disagree on input.size" in err and "onnx" not in err.lower().replace(str(run_dir).lower(), "")
    assert not (run_dir / files.ONNX).exists()


def test_written_model_json_is_strict_json(run_dir):
    text = (run_dir / files.PACKAGE).read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in model.json"))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d["thresholds"]["max_f1"].__setitem__(1, None), "got NoneType"),  # null only for rates
        (lambda d: d["model"]["config"].update(input_norm=[0.5, 0.0]), "expected [mean, std] with std > 0"),
        (lambda d: d["model"]["config"].update(input_norm=[0.5]), "model.config.input_norm"),
        (lambda d: d["input"].update(channels=3), "input.channels 3"),
        (lambda d: d["input"].update(channels=True), "input.channels True"),
        (lambda d: d["input"].update(mode=5), "input.mode/intensity 5"),
        (lambda d: d["input"].update(intensity=["none"]), "expected strings"),
        (lambda d: d["input"].update(value_range=[0, 1, 2]), "input.value_range"),
        (lambda d: d["input"].update(value_range="01"), "input.value_range"),
        (lambda d: d["calibration"].update(temperatures=[0.0, 1.0, 1.0]), "calibration.temperatures"),
        (lambda d: d["operating_point"].update(val_images=-1), "operating_point.val_images -1"),
        (lambda d: d["operating_point"].update(val_images=True), "operating_point.val_images True"),
        (lambda d: d["operating_point"].update(val_images=2.5), "operating_point.val_images 2.5"),
        (lambda d: d["operating_point"].update(score=3), "operating_point.score 3"),
        (lambda d: d["operating_point"].update(target_sensitivity=0.0), "target_sensitivity 0.0"),
        (lambda d: d.update(task="regression"), "task 'regression'"),
        (lambda d: d.update(task=3), "task 3"),
        (lambda d: d["input"].update(size=7), "input 7 px"),
        (lambda d: d["input"].update(size=4097), "input 4097 px"),
        (lambda d: d["input"].update(mode="fill"), "mode 'fill'"),
        (lambda d: d["input"].update(intensity="sharpen"), "input intensity 'sharpen'"),
        (lambda d: d["input"].update(intensity="equalize"), "differs from the network's (none)"),
        (lambda d: d["model"]["config"].update(tta=6), "model.config.tta 6"),
        (lambda d: d["model"]["config"].update(tta=-1), "model.config.tta -1"),
        (lambda d: d["model"]["config"].update(tta=True), "model.config.tta True"),
        (lambda d: d["model"]["config"].update(tta=2.0), "model.config.tta 2.0"),
        (lambda d: d["model"]["config"].update(ensemble=[]), "model.config.ensemble []"),
        (lambda d: d["model"]["config"].update(ensemble="fold-1"), "model.config.ensemble 'fold-1'"),
        (lambda d: d["model"]["config"].update(ensemble=["fold-x"]), "model.config.ensemble"),
        (lambda d: d["model"]["config"].update(ensemble=[1]), "model.config.ensemble [1]"),
        (lambda d: d.update(model=[]), "model.config None"),
        (lambda d: d.update(input=[]), "input []: expected an object"),
        (lambda d: d.update(thresholds=[]), "thresholds []"),
    ],
)
def test_every_check_of_the_document_refuses_on_its_own(run_dir, change, words):
    from cxrkit.run.package import read_package

    _tamper(run_dir, change)
    with pytest.raises(ValueError) as info:
        read_package(run_dir)
    assert words in str(info.value), str(info.value)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["thresholds"]["max_f1"].__setitem__(0, 0.0),  # the ends of [0, 1] are in range
        lambda d: d["thresholds"]["max_f1"].__setitem__(0, 1.0),
        lambda d: d["operating_point"].update(threshold=1.0, target_sensitivity=1.0),
        lambda d: d["calibration"].update(temperatures=[20.0, 0.25, 2.0]),  # the fitter's bounds
        lambda d: d["calibration"].update(temperatures=[1.2]),  # one temperature for every label
        lambda d: d["input"].pop("channels"),  # older files: grey by default
        lambda d: d["input"].pop("value_range"),
        lambda d: d["operating_point"].pop("reached"),  # older files: reached
        lambda d: d["operating_point"].update(val_images=0),
        lambda d: d["input"].update(size=8),
        lambda d: d["input"].update(size=4096),
        lambda d: d["input"].update(mode="crop"),
        lambda d: (
            d["input"].update(intensity="equalize"),
            d["model"]["config"].update(intensity="equalize"),
        ),
        lambda d: d["model"]["config"].update(tta=5),
        lambda d: d["model"]["config"].update(tta=0),
        lambda d: d["model"]["config"].update(ensemble=["fold-1", "fold-12"]),
    ],
)
def test_values_at_the_edges_of_their_range_are_accepted(run_dir, change):
    from cxrkit.run.package import read_package

    _tamper(run_dir, change)
    read_package(run_dir)  # no error


def test_a_single_temperature_run_loads_against_its_weights(run_dir):
    _tamper(run_dir, lambda d: d["calibration"].update(temperatures=[1.2]))
    assert RunModel.load(run_dir, "cpu").package.temperatures == (1.2,)


def test_temperatures_have_a_millionth_of_rounding_room_at_the_fitters_bounds(run_dir):
    """The fitter's bounds, widened by one part in a million each way, are in; a hair beyond is out."""
    from cxrkit.evaluate.calibration import T_BOUNDS
    from cxrkit.run.package import read_package

    lo, hi = T_BOUNDS[0] * (1 - 1e-6), T_BOUNDS[1] * (1 + 1e-6)  # written out: the contract, not the code
    _tamper(run_dir, lambda d: d["calibration"].update(temperatures=[lo, hi, 1.0]))
    read_package(run_dir)  # no error
    for outside in (lo * (1 - 1e-9), hi * (1 + 1e-9)):
        _tamper(run_dir, lambda d, t=outside: d["calibration"].update(temperatures=[t, 1.0, 1.0]))
        with pytest.raises(ValueError, match=r"calibration\.temperatures"):
            read_package(run_dir)
