"""Generalization proxies of Kermany recipes: clean val AUC, cross-validated AUC, corruption AUC, drop.

Each recipe (a config file plus options) is trained as a patient-grouped K-fold run on the
../shared Kermany *training* folder (the official test split is never read: it is not in
../shared). For each recipe it prints, from one run of this script:

- clean val AUC: fold 1's model on fold 1's validation patients (an ordinary validation split);
- CV AUC: mean ± sd over the K folds' validation AUCs at their best epochs;
- mCA and drop: fold 1's model on fold 1's validation images under every acquisition shift of
  ``cxr robustness`` (12 shifts x 5 severities): mean corruption AUC and (clean - mCA) / clean;
- held-out AUC: fold 1 alone and the K-fold ensemble on the held-out patients (``--test`` of the
  training folder, in no fold): what averaging the folds adds;
- TTA: fold 1's clean val AUC and mCA with 3 test-time views (``model.tta: 3``);
- minutes: training time per fold on this machine (epochs only, from the folds' summary.json).

Every recipe is run at the same reduced scale (``--size``, ``--epochs``, ``--folds``) so the
comparison is fair and fits a 2-core CPU; the recipes' own files train at full scale.

    python bench/bench_generalization.py                 # all recipes, 64 px, 6 epochs, 3 folds
    python bench/bench_generalization.py --recipes plain new --size 96 --epochs 8
    python bench/bench_generalization.py --recipes nih-plain nih-new --folds 5   # NIH: the recipe's 64 px,
                                                                                 # 15 epochs

Environment: CXRKIT_SHARED points at the shared folder when it is not ../shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np

from cxrkit.config import build_run_config, load_yaml
from cxrkit.evaluate.metrics import summary_metrics

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CXRKIT_SHARED", ROOT.parent / "shared"))
OFF = {"prepare.intensity": "none", "train.photometric": 0.0, "train.ema": 0.0}  # the previous recipe
# recipe -> (config file, options on top of it)
RECIPES: dict[str, tuple[str, dict]] = {
    "plain": ("configs/kermany-plain.yaml", {}),
    "equalize": ("configs/kermany-plain.yaml", {"prepare.intensity": "equalize"}),
    "photometric": ("configs/kermany-plain.yaml", {"train.photometric": 0.5}),
    "ema": ("configs/kermany-plain.yaml", {"train.ema": 0.995}),
    "corrupt-val": ("configs/kermany-plain.yaml", {"train.monitor": "corrupt_auc"}),
    "new": ("configs/kermany.yaml", {}),
    # the 1,000 real NIH images (15 labels): the same ideas in the NIH recipe, and without them
    "nih-plain": ("configs/nih-shared64.yaml", OFF),
    "nih-new": ("configs/nih-shared64.yaml", {}),
}
DEFAULT = ["plain", "equalize", "photometric", "ema", "corrupt-val", "new"]


def recipe_config(name: str, args: argparse.Namespace, out: Path):
    """The recipe's config at the bench's scale, as a K-fold run in ``out``."""
    path, options = RECIPES[name]
    doc = load_yaml(ROOT / path)
    data = Path(doc["data"]["path"])  # ../shared/... in the file: the shared folder of this machine
    doc["data"] = {**doc["data"], "path": str(SHARED / data.relative_to("../shared"))}
    over = {
        **options,
        **({} if name.startswith("nih") else {"prepare.size": args.size, "train.epochs": args.epochs}),
        "train.progress": False,
        "partition.method": "kfold",
        "partition.folds": args.folds,
        "partition.test": args.test,
        "partition.seed": 0,
        "model.tta": 0,  # TTA is measured separately, on the same models
        "out": str(out),
        "name": name,
        "cache_dir": str(ROOT / "cxr-out" / "cache"),
    }
    return build_run_config(doc, over)


def macro_auc(run, data, part: str, tta: int | None = None) -> float:
    """Macro ROC-AUC of ``run`` on split ``part`` of ``data`` (each image by the model meant for it)."""
    from cxrkit.run.model import split_scorers

    aucs_y, aucs_p = [], []
    for rows, score in split_scorers(run, data, part):
        images = np.asarray(data.cache.images[rows])
        logits = score(images) if tta is None else run.logits(images, tta=tta)
        aucs_y.append(data.targets[rows])
        aucs_p.append(run.package.probs(logits))
    y, p = np.concatenate(aucs_y), np.concatenate(aucs_p)
    return float(summary_metrics(y, p, 0.5, labels=run.labels)["macro_auc"])


def train(name: str, args: argparse.Namespace, out: Path) -> Path:
    """Train recipe ``name`` as K folds (kept: a second run of the script measures without training)."""
    from cxrkit.training.loop import fit

    parent = out / name
    log = print if args.verbose else (lambda m: None)
    if (parent / "model.json").is_file() and (parent / "summary.json").is_file():
        return parent
    if (parent / "config.yaml").is_file():  # interrupted: finish the missing folds and the parent
        return fit(resume=parent, log=log)
    return fit(recipe_config(name, args, out), log=log)


def robustness(run: Path, cfg, log) -> dict:
    """``cxr robustness`` of ``run`` as ``cfg`` says; an earlier result for the same weights is reused."""
    from cxrkit.run.onnx import weights_digest
    from cxrkit.workflows.robustness import robustness_dir, robustness_run

    folder = robustness_dir(run, cfg.split)
    folder = folder.with_name(f"{folder.name}-tta{cfg.tta}") if cfg.tta is not None else folder
    done = folder / "robustness.json"
    if done.is_file() and json.loads(done.read_text()).get("weights_sha256") == weights_digest(run):
        return json.loads(done.read_text())
    return json.loads((robustness_run(run, cfg, log=log) / "robustness.json").read_text())


def measure(name: str, args: argparse.Namespace, out: Path) -> dict:
    """Train recipe ``name`` as K folds and measure every figure of the table."""
    from cxrkit.run.data import load_run_data
    from cxrkit.run.model import RunModel
    from cxrkit.workflows.robustness import RobustnessConfig

    quiet = (lambda m: None) if not args.verbose else print
    parent = out / name
    minutes = json.loads((parent / "summary.json").read_text())["train_seconds"] / 60
    minutes /= args.folds
    aucs = [
        json.loads((parent / f"fold-{k}" / "summary.json").read_text())["val"]["macro_auc"]
        for k in range(1, args.folds + 1)
    ]  # each fold's clean validation AUC at its best epoch (whatever the folds were selected on)
    fold1 = parent / "fold-1"
    r = robustness(fold1, RobustnessConfig(split="val", seed=0), quiet)
    run1, ens = RunModel.load(fold1, "cpu"), RunModel.load(parent, "cpu")
    data1 = load_run_data(fold1)
    row = {
        "recipe": name,
        "clean_val_auc": r["clean_auc"],
        "cv_mean": float(np.mean(aucs)),
        "cv_sd": float(np.std(aucs, ddof=1)),
        "mca": r["mca"],
        "drop": r["relative_drop"],
        "heldout_fold1": macro_auc(run1, data1, "test") if args.test else float("nan"),
        "heldout_ensemble": macro_auc(ens, load_run_data(parent), "test") if args.test else float("nan"),
        "minutes_per_fold": minutes,
    }
    if name in args.tta_recipes:
        r3 = robustness(fold1, RobustnessConfig(split="val", seed=0, tta=3), quiet)
        row.update(tta_clean_val_auc=r3["clean_auc"], tta_mca=r3["mca"])
    return row


def main() -> None:
    """Train and measure each recipe; print one table (and write it as JSON beside the runs)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="+", default=DEFAULT, choices=list(RECIPES))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--test", type=float, default=0.15, help="held-out share of the patients")
    ap.add_argument(
        "--tta-recipes", nargs="*", default=["new"], help="recipes also measured with 3 test-time views"
    )
    ap.add_argument("--out", default=str(ROOT / "cxr-out" / "bench-generalization"))
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    if not (SHARED / "data" / "kermany-pneumonia" / "train").is_dir():
        raise SystemExit(f"{SHARED}/data/kermany-pneumonia/train not found (set CXRKIT_SHARED)")
    out = Path(args.out) / f"s{args.size}-e{args.epochs}-k{args.folds}"
    print(
        f"# Kermany training folder, {args.size} px, {args.epochs} epochs, {args.folds} folds, "
        f"{args.test:.0%} of patients held out; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs"
    )
    for name in args.recipes:  # every recipe trained first, then measured
        train(name, args, out)
    rows = []
    for name in args.recipes:
        rows.append(measure(name, args, out))
        r = rows[-1]
        print(
            f"{name}: clean {r['clean_val_auc']:.4f}  cv {r['cv_mean']:.4f} ± {r['cv_sd']:.4f}  "
            f"mCA {r['mca']:.4f}  drop {r['drop']:.2%}  held-out fold-1 {r['heldout_fold1']:.4f} "
            f"ensemble {r['heldout_ensemble']:.4f}  {r['minutes_per_fold']:.1f} min/fold",
            flush=True,
        )
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print()
    print(
        "| recipe | clean val AUC | CV AUC (mean ± sd) | mean corruption AUC | relative drop "
        "| held-out: fold 1 | held-out: ensemble | TTA: clean / mCA | min/fold |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        tta = f"{r['tta_clean_val_auc']:.4f} / {r['tta_mca']:.4f}" if "tta_mca" in r else "-"
        print(
            f"| {r['recipe']} | {r['clean_val_auc']:.4f} | {r['cv_mean']:.4f} ± {r['cv_sd']:.4f} | "
            f"{r['mca']:.4f} | {r['drop']:.2%} | {r['heldout_fold1']:.4f} | {r['heldout_ensemble']:.4f} | "
            f"{tta} | {r['minutes_per_fold']:.1f} |"
        )


if __name__ == "__main__":
    main()
