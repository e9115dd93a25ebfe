"""Real data end to end: a run on ../shared Kermany images is evaluated on validation; the report shows
its validation ROC-AUC, sensitivity and specificity."""

import json
import re

from conftest import shared_path

from cxrkit.config import build_run_config
from cxrkit.training.loop import fit
from cxrkit.workflows.evaluate import EvalConfig, evaluate_run


def test_kermany_run_report_shows_val_auc_sensitivity_specificity(tmp_path):
    root = shared_path("data", "kermany-pneumonia", "train")
    subset = tmp_path / "kermany"
    for cls, n in (("NORMAL", 150), ("PNEUMONIA", 150)):  # links, not copies: the data stays in ../shared
        (subset / cls).mkdir(parents=True)
        for f in sorted((root / cls).glob("*.jpeg"))[:n]:
            (subset / cls / f.name).symlink_to(f)
    cfg = build_run_config(
        {
            "data": {"source": "folder", "path": str(subset)},
            "prepare": {"size": 64},
            "split": {"train": 0.7, "val": 0.3, "test": 0.0},
            "model": {"name": "cnn4_32_64_128_256_bn"},
            "train": {"epochs": 3, "batch_size": 32, "lr": 2e-3, "labels": ["Pneumonia"], "progress": False},
            "out": str(tmp_path / "runs"),
            "cache_dir": str(tmp_path / "cache"),
        }
    )
    run = fit(cfg, log=lambda m: None)
    out = evaluate_run(run, EvalConfig(split="val", n_boot=100), log=lambda m: None)
    m = json.loads((out / "metrics.json").read_text())
    assert m["labels"] == ["Pneumonia"] and m["triage"]["score"] == "noisy_or"
    auc = m["per_label"][0]["auc"]
    sens, spec = m["triage"]["val"]["sensitivity"], m["triage"]["val"]["specificity"]
    assert auc > 0.75 and sens >= 0.95
    html = (out / "report.html").read_text()
    assert f"{auc:.3f} [" in html  # per-label ROC-AUC with its interval
    shown = re.search(
        r"Applied unchanged to <b>val</b>: sensitivity <b>([\d.]+)%</b>.*?specificity <b>([\d.]+)%", html
    )
    assert (
        shown
        and float(shown.group(1)) == round(100 * sens, 1)
        and float(shown.group(2)) == round(100 * spec, 1)
    )
