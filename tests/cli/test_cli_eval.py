"""cxr evaluate / triage / compare from the command line, including new images and bad input."""

import json
import shutil

import numpy as np
import pandas as pd
from conftest import phantom_image, png_bytes

from cxrkit.cli import main


def test_evaluate_cli_with_options(phantom_run, tmp_path, capsys):
    out = tmp_path / "ev"
    args = [
        "evaluate",
        str(phantom_run),
        "--split",
        "val",
        "--threshold",
        "sensitivity:0.9",
        "--bootstrap",
        "0",
    ]
    assert main([*args, "--out", str(out)]) == 0
    m = json.loads((out / "evaluation.json").read_text())
    assert m["split"] == "val" and m["config"]["threshold"] == "sensitivity:0.9"
    recalls = [r["recall"] for r in m["per_label"] if r["recall"] is not None and r["positives"] > 0]
    assert min(recalls) >= 0.9  # evaluated on val itself, the rule's promise holds exactly
    assert m["macro_auc"]["low"] is None  # no bootstrap asked
    assert "validation split itself" in (out / "report.html").read_text()
    assert "macro ROC-AUC" in capsys.readouterr().out


def test_bad_options_are_one_line_errors(phantom_run, tmp_path, capsys):
    assert main(["evaluate", str(phantom_run), "--threshold", "best", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "threshold rule 'best'" in err[0]
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a finished run folder" in capsys.readouterr().err


def test_triage_split_and_new_images(phantom_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(phantom_run, run)
    assert main(["triage", str(run), "--split", "test", "--target-sensitivity", "0.9"]) == 0
    out = capsys.readouterr().out
    assert "reads saved" in out and (run / "triage-test" / "triage_sweep.png").is_file()
    saved = json.loads((run / "triage-test" / "triage.json").read_text())
    point = saved["operating_point"]  # 0.9 is not the stored target (0.95): chosen on validation, and said so
    assert point["target_sensitivity"] == 0.9 and point["val_sensitivity"] >= 0.9
    assert saved["source"] == "chosen on validation now" and "chosen on validation now" in out
    folder = tmp_path / "new"
    folder.mkdir()
    for k in range(3):
        (folder / f"x{k}.png").write_bytes(png_bytes(phantom_image(k)))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    # an unreadable study heads the worklist and makes the command fail (tests/workflows/test_unscored.py)
    assert (
        main(["triage", str(run), str(folder), "--target-sensitivity", "0.9", "--out", str(tmp_path / "t")])
        == 1
    )
    out = capsys.readouterr().out
    assert "NOT SCORED" in out and "broken.png" in out
    w = pd.read_csv(tmp_path / "t" / "worklist.csv")
    assert w["image_id"][0] == "broken.png" and w["flag"][0] == "unreadable"
    assert sorted(w["image_id"][1:]) == ["x0.png", "x1.png", "x2.png"]
    assert w["score"][1:].is_monotonic_decreasing
    assert np.isclose(
        json.loads((tmp_path / "t" / "triage.json").read_text())["operating_point"]["threshold"],
        point["threshold"],
    )


def test_compare_two_runs(phantom_run, phantom_eval, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(phantom_run, other, ignore=shutil.ignore_patterns("eval-*", "triage-*"))
    out = tmp_path / "cmp"
    assert main(["compare", str(phantom_run), str(other), "--bootstrap", "50", "--out", str(out)]) == 0
    frame = pd.read_csv(out / "comparison.csv")
    assert list(frame["run"]) == ["phantom", "other"] and (other / "eval-test" / "evaluation.json").is_file()
    assert np.isclose(frame["macro_auc"][0], frame["macro_auc"][1])  # same weights, same images
    assert "auc:Effusion" in frame and "triage_sensitivity" in frame
    assert "Comparison of 2 runs" in (out / "comparison.html").read_text()
    assert "macro_auc" in capsys.readouterr().out


def test_package_rewrites_model_json_from_validation(phantom_run, tmp_path, capsys):
    """`cxr package` recomputes exactly what training stored, and takes a new triage target only."""
    run = tmp_path / "run"
    shutil.copytree(phantom_run, run, ignore=shutil.ignore_patterns("eval-*", "triage-*"))
    before = json.loads((run / "model.json").read_text())
    (run / "model.json").unlink()
    assert main(["evaluate", str(run)]) == 2 and "cxr package" in capsys.readouterr().err
    assert main(["package", str(run)]) == 0
    after = json.loads((run / "model.json").read_text())
    assert after["thresholds"] == before["thresholds"] and after["calibration"] == before["calibration"]
    assert after["operating_point"] == before["operating_point"]
    assert main(["package", str(run), "triage.target_sensitivity=0.8"]) == 0
    point = json.loads((run / "model.json").read_text())["operating_point"]
    assert point["target_sensitivity"] == 0.8 and point["threshold"] >= before["operating_point"]["threshold"]
    assert "target_sensitivity: 0.8" in (run / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["package", str(run), "prepare.size=128"]) == 2
    assert "triage.* settings only" in capsys.readouterr().err
