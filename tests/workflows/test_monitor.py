"""``--monitor DIR`` and ``cxr monitor``: records without names, windows of clean studies that do not
alarm, a shifted stream that does (exit 3), the service's drift gauges, and bad logs handled."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import phantom_image, png_bytes

from cxrkit.cli import main


def _stream(folder, k0: int, n: int, shift: str | None = None):
    from cxrkit.data.shifts import apply_shift

    folder.mkdir(parents=True)
    images = np.stack([phantom_image(k) for k in range(k0, k0 + n)])
    if shift:
        images = apply_shift(images, shift, 5)
    for k, im in enumerate(images):
        (folder / f"patient-smith-{k0 + k:04d}.png").write_bytes(png_bytes(im))
    return folder


@pytest.fixture(scope="module")
def logged(phantom_run, tmp_path_factory):
    base = tmp_path_factory.mktemp("monitor")
    log = base / "log"
    for name, k0, shift in (("a", 0, None), ("b", 60, None), ("c", 120, "gamma")):
        folder = _stream(base / name, k0, 60, shift)
        assert (
            main(
                [
                    "predict",
                    str(phantom_run),
                    str(folder),
                    "--monitor",
                    str(log),
                    "--quiet",
                    "--out",
                    str(base / f"{name}.csv"),
                ]
            )
            == 0
        )
    return base, log


def test_records_hold_no_names_and_one_line_per_study(logged):
    _, log = logged
    text = (log / "monitor.jsonl").read_text()
    lines = [json.loads(x) for x in text.splitlines()]
    assert len(lines) == 180 and "smith" not in text
    first = lines[0]
    assert set(first) >= {"time", "study", "run", "status", "flag", "ood_score", "summary", "probs", "header"}
    assert len(first["summary"]) == 8 and len(first["probs"]) == 15


def test_clean_windows_pass_and_the_shifted_one_alarms(logged, phantom_run, capsys):
    base, log = logged
    assert main(["monitor", str(phantom_run), str(log), "--window", "60", "--out", str(base / "m")]) == 3
    frame = pd.read_csv(base / "m" / "monitor.csv")
    assert len(frame) == 3 and frame["alarm"].tolist() == [False, False, True]
    assert frame["driver"].iloc[-1] in ("features", "pixels", "ood", "scores", "flag_rate")
    assert "ALARM" in capsys.readouterr().out
    page = (base / "m" / "monitor.html").read_text()
    assert "Drift monitor" in page and "<img" in page and "Example studies from alarmed windows" in page
    only_clean = base / "clean"
    only_clean.mkdir()
    lines = (log / "monitor.jsonl").read_text().splitlines()[:120]
    odd = [
        "{torn line",
        json.dumps({**json.loads(lines[0]), "time": "yesterday"}),
        json.dumps({**json.loads(lines[0]), "summary": "x"}),
        json.dumps({**json.loads(lines[0]), "header": ["a"]}),
        json.dumps({**json.loads(lines[0]), "ood_score": "high"}),
        lines[0].replace('"ood_score":', '"ood_score":1' + "0" * 400 + ',"x":'),  # an int too big for a float
        lines[0].replace('"summary":[', '"summary":[NaN,'),  # a bare NaN token
    ]
    (only_clean / "monitor.jsonl").write_text("\n".join(lines + odd) + "\n")
    assert main(["monitor", str(phantom_run), str(only_clean), "--window", "60"]) == 0
    assert "7 malformed lines skipped" in capsys.readouterr().out


def test_bad_windows_and_empty_logs_are_clear_errors(logged, phantom_run, tmp_path, capsys):
    _, log = logged
    assert main(["monitor", str(phantom_run), str(log), "--window", "5"]) == 2
    assert "at least 20 studies" in capsys.readouterr().err
    assert main(["monitor", str(phantom_run), str(log), "--window", "1w"]) == 2
    assert main(["monitor", str(phantom_run), str(tmp_path)]) == 2
    assert "no monitor log" in capsys.readouterr().err
    assert main(["monitor", str(phantom_run), str(log), "--window", "1000"]) == 2
    assert "not one window" in capsys.readouterr().err


def test_the_service_logs_studies_and_serves_drift_gauges(phantom_run, tmp_path):
    from fastapi.testclient import TestClient

    from cxrkit.config import ServeConfig
    from cxrkit.run.model import RunModel
    from cxrkit.serve.app import create_app

    run = RunModel.load(phantom_run, "cpu")
    app = create_app(run, ServeConfig(monitor=str(tmp_path / "log"), monitor_window=20))
    with TestClient(app) as client:
        assert "cxr_drift_signal NaN" in client.get("/metrics").text
        for k in range(25):
            body = png_bytes(phantom_image(k))
            assert (
                client.post("/v1/predict", files={"file": (f"{k}.png", body, "image/png")}).status_code == 200
            )
        text = client.get("/metrics").text
    value = float(next(line for line in text.splitlines() if line.startswith("cxr_drift_signal ")).split()[1])
    assert np.isfinite(value) and "cxr_drift_alarm 0" in text and "cxr_drift_threshold" in text
    assert len((tmp_path / "log" / "monitor.jsonl").read_text().splitlines()) == 25
