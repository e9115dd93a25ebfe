"""``cxr demo``: the embedded default, offline: phantoms -> EDA -> split + cache -> train -> evaluate.

The recipe is ``configs/demo.yaml`` (shipped inside the package as ``cxrkit/recipes/demo.yaml``).
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

import yaml

from cxrkit.config import EvalConfig, RunConfig, build_run_config
from cxrkit.outputs import read_json
from cxrkit.run import files
from cxrkit.run.data import Log


def demo_config(out: str | Path = "cxr-out/demo", overrides: dict | None = None) -> RunConfig:
    """The demo recipe with ``section.key`` overrides, writing under ``out`` (runs/ and cache/)."""
    doc = yaml.safe_load(resources.files("cxrkit").joinpath("recipes/demo.yaml").read_text())
    out = Path(out)
    return build_run_config(
        doc, {"out": str(out / "runs"), "cache_dir": str(out / "cache"), **(overrides or {})}
    )


def run_demo(cfg: RunConfig, out: str | Path, n_boot: int = 500, log: Log = print) -> Path:
    """EDA, training and test-split evaluation of ``cfg``; returns the run folder."""
    from cxrkit.data import build_dataset
    from cxrkit.report.eda import build_eda_report
    from cxrkit.training.loop import fit
    from cxrkit.workflows.evaluate import evaluate_run
    from cxrkit.workflows.model_card import CARD_HTML, write_card

    t0 = time.perf_counter()
    ds = build_dataset(cfg.data)
    report, _ = build_eda_report(ds, Path(out) / "eda.html", title="cxrkit demo — phantom EDA")
    log(f"1/3 data: {ds.summary()} (synthetic phantoms, {cfg.data.size}px); EDA report: {report}")
    log(f"2/3 training {cfg.model.name} for {cfg.train.epochs} epochs on a patient-grouped split:")
    run = fit(cfg, log=lambda msg: log("    " + msg))
    val = read_json(run / files.SUMMARY)["val"]
    log(
        f"validation: macro ROC-AUC {val['macro_auc']:.3f} over {int(val['macro_labels'])} findings, "
        f"micro {val['micro_auc']:.3f}, No Finding {val.get('no_finding_auc', float('nan')):.3f}"
    )
    log(f"run folder: {run} (config.yaml, split.csv, history.csv, curves.png, best.pt, model.json, ood.npz)")
    log("3/3 evaluating on the held-out test split (thresholds, triage point, calibration from validation):")
    evaluate_run(run, EvalConfig(n_boot=n_boot), log=lambda msg: log("    " + msg))
    write_card(run, log=lambda msg: log("    " + msg))
    log(
        f"done in {time.perf_counter() - t0:.0f} s. Open {files.eval_dir(run, 'test') / 'report.html'} "
        f"and the model card {run / CARD_HTML}. "
        f"Next: `cxr predict {run} IMAGES... --out predictions.csv`, `cxr eda` (real NIH metadata), "
        "`cxr train --config configs/kermany.yaml`."
    )
    return run
