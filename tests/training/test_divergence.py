"""Training that produced nothing is refused: no model.json, a clear line, and it stops early."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cxrkit.cli import main
from cxrkit.config import build_run_config
from cxrkit.run import files
from cxrkit.run.package import OperatingPoint, degenerate_point_warnings
from cxrkit.training import loop
from cxrkit.training.loop import TrainingDiverged, fit


def _cfg(tmp_path, **train):
    t = {"epochs": 4, "batch_size": 8, "lr": 1e30, "progress": False, "patience": 0, **train}
    return build_run_config(
        {
            "data": {"source": "phantom", "n": 96, "size": 32},
            "prepare": {"size": 32},
            "model": {"name": "cnn2_64_128_bn"},
            "train": t,
            "out": str(tmp_path / "runs"),
            "name": "nan",
            "cache_dir": str(tmp_path / "cache"),
        }
    )


def test_a_run_with_no_finite_validation_metric_is_refused_and_never_packaged(tmp_path):
    logs: list[str] = []
    with pytest.raises(TrainingDiverged, match="training diverged: no epoch gave a finite validation metric"):
        fit(_cfg(tmp_path), log=logs.append)
    run = tmp_path / "runs" / "nan"
    assert not (run / files.PACKAGE).exists() and not (run / files.BEST).exists()
    assert (run / files.LAST).exists()  # kept for debugging
    history = pd.read_csv(run / files.HISTORY)
    assert len(history) == 1, "divergence in the first epoch must stop the run, not run all 4 epochs"
    summary = json.loads((run / files.SUMMARY).read_text(), parse_constant=lambda c: pytest.fail(c))
    assert "no model.json" in summary["diverged"] and summary["best_value"] is None
    assert any("training diverged in epoch 1" in line for line in logs)


def test_divergence_is_detected_within_the_epoch(tmp_path, monkeypatch):
    """With more steps than the limit, the epoch stops after DIVERGED_STEPS non-finite losses."""
    seen: list[int] = []
    real = loop.augment_batch

    def counting(x, *args, **kwargs):
        seen.append(len(x))
        return real(x, *args, **kwargs)

    monkeypatch.setattr(loop, "augment_batch", counting)
    monkeypatch.setattr(loop, "DIVERGED_STEPS", 3)
    with pytest.raises(TrainingDiverged):
        fit(_cfg(tmp_path, batch_size=2, epochs=2), log=lambda m: None)
    assert 3 <= len(seen) <= 4  # the first loss may be finite; then 3 bad steps, not the epoch's ~34


def test_the_cli_exits_non_zero_with_one_line(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(_cfg(tmp_path).to_yaml())
    assert main(["train", "--config", str(cfg), "train.epochs=2"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("cxr train: error: training diverged: no epoch gave a finite validation metric")


def test_a_learning_rate_no_float32_optimiser_can_hold_is_refused_at_config_time(tmp_path):
    with pytest.raises(ValueError, match=r"0 < lr <= 1e30 needed .*1e\+38"):
        _cfg(tmp_path, lr=1e38)
    with pytest.raises(ValueError, match=r"0 < lr <= 1e30 needed .*1e\+308"):
        _cfg(tmp_path, lr=1e308)


def test_zero_epochs_without_a_head_stage_is_refused_at_config_time(tmp_path):
    with pytest.raises(ValueError, match=r"train\.epochs 0 with no train\.bottleneck_epochs"):
        _cfg(tmp_path, epochs=0)
    assert _cfg(tmp_path, epochs=0, bottleneck_epochs=2).train.epochs == 0  # a linear probe is fine


def test_a_degenerate_operating_point_is_named():
    flat = OperatingPoint("no_finding", 0.95, 0.0, 1.0, 0.0, 40, True)
    (warning,) = degenerate_point_warnings(flat)
    assert "degenerate" in warning and "specificity 0" in warning
    assert degenerate_point_warnings(OperatingPoint("no_finding", 0.95, 0.3, 0.96, 0.2, 40)) == []
    assert degenerate_point_warnings(OperatingPoint("no_finding", 0.95, 0.0, 0.5, 0.0, 40, False)) == []


def test_a_monitor_that_is_nan_every_epoch_is_refused_not_shipped_as_the_start(tmp_path, monkeypatch):
    """Finite validation loss, but macro_auc NaN in every epoch: no best epoch, so no model.json."""
    real = loop.evaluate

    def no_auc(*args, **kwargs):
        return {**real(*args, **kwargs), "macro_auc": float("nan")}

    monkeypatch.setattr(loop, "evaluate", no_auc)
    with pytest.raises(TrainingDiverged, match="validation macro_auc was NaN"):
        fit(_cfg(tmp_path, lr=1e-3, epochs=2), log=lambda m: None)
    assert not (tmp_path / "runs" / "nan" / files.PACKAGE).exists()
