"""model.json: temperature scaling, thresholds and operating point fitted on validation, read back exactly."""

import json

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from cxrkit.data.transforms import InputSpec
from cxrkit.evaluate.calibration import (
    expected_calibration_error,
    fit_softmax_temperature,
    fit_temperature,
    logits_to_probs,
)
from cxrkit.evaluate.thresholds import choose_thresholds
from cxrkit.labels import NO_FINDING
from cxrkit.run import files
from cxrkit.run.checkpoint import load_checkpoint, save_checkpoint
from cxrkit.run.package import build_package, read_package, resolve_operating_point, write_package

LABELS = ("Effusion", "Mass", NO_FINDING)


def overconfident(n=600, seed=0):
    """Logits three times too large for the truth they were drawn from: calibration must shrink them."""
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(0, 1.5, (n, len(LABELS)))
    y = (rng.random((n, len(LABELS))) < 1 / (1 + np.exp(-true_logit))).astype(np.float32)
    y[::50, 1] = np.nan  # unknown labels are ignored
    return (3 * true_logit).astype(np.float32), y


def test_fit_temperature_matches_scipy_and_recovers_the_scale():
    z, y = overconfident()
    for j in range(len(LABELS)):
        keep = ~np.isnan(y[:, j])

        def nll(t, j=j, keep=keep):
            p = 1 / (1 + np.exp(-z[keep, j] / t))
            return -np.mean(y[keep, j] * np.log(p) + (1 - y[keep, j]) * np.log(1 - p))

        ref = minimize_scalar(nll, bounds=(0.25, 20), method="bounded", options={"xatol": 1e-8}).x
        t = fit_temperature(z[:, j], y[:, j])
        assert t == pytest.approx(ref, rel=1e-4)
        assert 2.3 < t < 3.8  # the logits were made 3x too confident
    assert fit_temperature(z[:, 0], np.zeros(len(z))) == 1.0  # one class: nothing to fit
    separable = np.r_[np.zeros(50), np.ones(50)]
    assert fit_temperature(np.r_[-np.ones(50), np.ones(50)], separable) == pytest.approx(0.25)  # bounded


def test_softmax_temperature_matches_torch_cross_entropy():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 4, (400, 2))
    cls = (rng.random(400) < 1 / (1 + np.exp(-(z[:, 1] - z[:, 0]) / 4))).astype(int)
    y = np.eye(2)[cls]
    t = fit_softmax_temperature(z, y)
    grid = np.linspace(0.5, 10, 2000)
    losses = [float(torch.nn.functional.cross_entropy(torch.tensor(z / g), torch.tensor(cls))) for g in grid]
    assert t == pytest.approx(grid[int(np.argmin(losses))], abs=0.02)


def test_logits_to_probs_is_sigmoid_or_softmax():
    z = np.array([[-800.0, 0.0, 3.0], [2.0, -1.0, 40.0]])
    assert np.allclose(logits_to_probs(z, "multilabel"), torch.sigmoid(torch.tensor(z)).numpy(), atol=1e-7)
    assert np.allclose(logits_to_probs(z, "multiclass"), torch.softmax(torch.tensor(z), 1).numpy(), atol=1e-7)
    t = np.array([2.0, 1.0, 4.0])
    assert np.allclose(
        logits_to_probs(z, "multilabel", t), torch.sigmoid(torch.tensor(z / t)).numpy(), atol=1e-7
    )
    assert 0 < logits_to_probs(np.array([[-60.0]]), "multilabel")[0, 0] < 1e-25  # tiny, not rounded to 0


def package(z, y, **kw):
    return build_package(
        model_name="cnn3_32_64_128_bn",
        model_config={"name": "cnn3_32_64_128_bn", "grey": "fold"},
        labels=LABELS,
        task="multilabel",
        input_spec=InputSpec(64, "crop"),
        val_logits=z,
        val_targets=y,
        **kw,
    )


def test_package_calibrates_and_decides_on_calibrated_validation(tmp_path):
    z, y = overconfident()
    pkg = package(z, y, target_sensitivity=0.9)
    cal = logits_to_probs(z, "multilabel", np.array(pkg.temperatures))
    raw = logits_to_probs(z, "multilabel")
    assert expected_calibration_error(y, cal) < 0.5 * expected_calibration_error(y, raw)
    assert pkg.validation["ece_after"] < pkg.validation["ece_before"]
    assert np.allclose(pkg.thresholds["max_f1"], choose_thresholds(y, cal, "max_f1"))
    op = pkg.operating_point
    assert op.score == "no_finding" and op.target_sensitivity == 0.9 and op.reached
    abnormal = 1 - y[:, 2]
    flagged = (1 - cal[:, 2]) >= op.threshold
    assert flagged[abnormal == 1].mean() == pytest.approx(op.val_sensitivity) and op.val_sensitivity >= 0.9
    assert pkg.validation["macro_auc_labels"] == 2  # the findings, not "No Finding"

    write_package(tmp_path, pkg)
    back = read_package(tmp_path)
    assert back == pkg
    assert np.array_equal(back.probs(z), cal)
    assert back.input == InputSpec(64, "crop")
    assert np.array_equal(back.thresholds_for("sens:0.95"), np.asarray(pkg.thresholds["sensitivity:0.95"]))
    assert back.thresholds_for("max_f2") is None


def test_operating_point_other_than_stored_needs_validation(tmp_path):
    z, y = overconfident()
    pkg = package(z, y)
    assert resolve_operating_point(pkg)[1] == "stored in the run"
    with pytest.raises(ValueError, match="needs its data"):
        resolve_operating_point(pkg, 0.8)
    cal = pkg.probs(z)
    point, source = resolve_operating_point(pkg, 0.8, val=(y, cal))
    assert source == "chosen on validation now" and point.val_sensitivity >= 0.8
    assert point.threshold >= pkg.operating_point.threshold  # a lower target allows a higher threshold
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            package(z, y, target_sensitivity=bad)


def test_unreachable_target_is_recorded_as_not_reached(tmp_path):
    z, y = overconfident()
    y[:, 2] = 1.0  # no abnormal study in validation: sensitivity is undefined, the target cannot be met
    pkg = package(z, y)
    assert not pkg.operating_point.reached
    assert any("0 positives" in w for w in pkg.validation["warnings"])  # kept, for the log and reports
    assert pkg.operating_point.val_sensitivity != pkg.operating_point.val_sensitivity  # NaN: no abnormal
    write_package(tmp_path, pkg)
    back = read_package(tmp_path)  # NaN survives the JSON round trip (as null), not None
    assert np.isnan(back.operating_point.val_sensitivity) and not back.operating_point.reached


def test_newer_formats_are_refused_naming_both_versions(tmp_path):
    z, y = overconfident()
    write_package(tmp_path, package(z, y))
    assert (
        json.loads((tmp_path / files.PACKAGE).read_text())["format"] == 1
    )  # plain runs: old readers read them
    doc = json.loads((tmp_path / files.PACKAGE).read_text())
    doc["format"] = files.RUN_FORMAT + 1
    doc["versions"]["cxrkit"] = "9.0"
    (tmp_path / files.PACKAGE).write_text(json.dumps(doc))
    with pytest.raises(
        ValueError, match=r"format 3 \(written by cxrkit 9.0\) is newer than this cxrkit .* \(format 2\)"
    ):
        read_package(tmp_path)
    save_checkpoint(tmp_path / "x.pt", model_state={}, run_format=files.RUN_FORMAT + 1, cxrkit_version="9.0")
    with pytest.raises(ValueError, match=r"checkpoint format 3 .*9\.0.* newer"):
        load_checkpoint(tmp_path / "x.pt")
    (tmp_path / files.PACKAGE).unlink()
    with pytest.raises(FileNotFoundError, match="cxr package"):
        read_package(tmp_path)


def test_a_point_reached_only_with_specificity_zero_is_reported_as_degenerate():
    z, y = overconfident()
    flat = np.zeros_like(z)  # a model that outputs the same for every image separates nothing
    pkg = package(flat, y, target_sensitivity=0.9)
    op = pkg.operating_point
    assert op.reached and op.val_specificity == 0.0
    assert any("degenerate" in w and "specificity 0" in w for w in pkg.validation["warnings"])
    assert not any("degenerate" in w for w in package(z, y, target_sensitivity=0.9).validation["warnings"])


def test_the_target_sensitivity_and_tta_bounds_are_checked_where_a_package_is_made_and_read():
    import dataclasses

    from cxrkit.run.package import choose_operating_point, package_problem

    z, y = overconfident()
    pkg = package(z, y, target_sensitivity=1.0)  # the top of (0, 1] is allowed
    assert pkg.operating_point.target_sensitivity == 1.0 and package_problem(pkg) is None
    cal = pkg.probs(z)
    assert choose_operating_point(LABELS, y, cal, 1.0).target_sensitivity == 1.0
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            choose_operating_point(LABELS, y, cal, bad)
        edited = dataclasses.replace(
            pkg, operating_point=dataclasses.replace(pkg.operating_point, target_sensitivity=bad)
        )
        assert package_problem(edited) == (
            f"operating_point.target_sensitivity {bad!r}: expected a value in (0, 1]"
        )
    assert "tta" not in pkg.model_config and package_problem(pkg) is None  # absent: no views
    for tta, ok in ((0, True), (5, True), (6, False), (-1, False), (True, False), ("3", False)):
        edited = dataclasses.replace(pkg, model_config={**pkg.model_config, "tta": tta})
        assert (package_problem(edited) is None) == ok, tta


def test_package_stores_what_a_reader_of_one_prediction_needs(tmp_path):
    """Reliability bins that count the validation pairs, intervals around the macro AUC and the
    operating threshold, and the training data's summary, all read back from model.json."""
    from cxrkit.evaluate.metrics import macro_auc
    from cxrkit.evaluate.triage import abnormality_score

    z, y = overconfident()
    groups = np.arange(len(y)) // 2  # two images per patient
    pkg = package(z, y, target_sensitivity=0.9, groups=groups, data={"source": "phantom", "synthetic": True})
    v, cal = pkg.validation, logits_to_probs(z, "multilabel", np.array(pkg.temperatures))
    for j, label in enumerate(pkg.labels):
        bins = v["reliability"]["bins"][label]
        known = ~np.isnan(y[:, j])  # unknown labels are no evidence
        assert sum(n for *_, n, _ in bins) == known.sum()
        for lo, hi, n, pos in bins:  # recounted here
            inside = known & (cal[:, j] >= lo) & ((cal[:, j] < hi) | (hi == 1.0))
            assert n == inside.sum() and pos == y[inside, j].sum()
    lo, hi = v["macro_auc_ci"]
    point = macro_auc(y[:, :2], cal[:, :2])  # the findings' columns (No Finding is the third)
    assert point == pytest.approx(v["macro_auc"]) and lo < point < hi and hi - lo < 0.1
    t_lo, t_hi = v["operating_point_ci"]
    assert t_lo <= pkg.operating_point.threshold <= t_hi
    assert v["bootstrap_unit"] == "patient" and v["temperature_at_bound"] == []
    score, _ = abnormality_score(cal, pkg.labels, "no_finding")
    assert score.min() <= t_lo < t_hi <= score.max()
    write_package(tmp_path, pkg)
    assert read_package(tmp_path).data == {"source": "phantom", "synthetic": True}
