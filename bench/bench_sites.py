"""Site shift on real data: in-distribution vs cross-site figures, and what site recalibration recovers.

Sites from ../shared (linked, never copied):

- Kermany "site A" and "site B": the paediatric training folder split by file-name family. Normal
  films come in two families, ``IM-*`` and ``NORMAL2-IM-*`` (two collection batches); pneumonia
  films are ``personN_*``, split at the median patient number N (the numbering follows the
  collection order). A = ``IM-*`` + the lower half of patients, B = ``NORMAL2-*`` + the upper half.
  No patient is in both sites. Mean grey level and contrast per site are printed, so the shift
  between the two is measured, not assumed.
- NIH: the 1,000 adult ChestX-ray14 images (labels from the torchxrayvision copy of the CSV).

A run trained on site A (its own patient split) is scored on its own test patients (in
distribution) and on site B (cross-site) at its stored operating point; then site B is split by
patient into calibration (``--share``) and evaluation parts and ``cxr validate --recalibrate``
refits temperatures, thresholds and the operating point on the calibration part: before and after
on the evaluation part. The same is done with AdaBN (batch-norm statistics re-estimated on site
B's unlabelled calibration images; Li et al. 2016), to decide whether cxrkit ships it. Last, a
cross-dataset matrix: the site-A run and a run trained on the NIH images, each on site B and NIH.

    python bench/bench_sites.py                       # 64 px, 8 epochs: about 5 minutes on 2 cores
    python bench/bench_sites.py --size 128 --epochs 12

Environment: CXRKIT_SHARED points at the shared folder when it is not ../shared.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CXRKIT_SHARED", ROOT.parent / "shared"))
KERMANY = SHARED / "data" / "kermany-pneumonia" / "train"
NIH = SHARED / "data" / "nih14-64px" / "images"


def site_parser(doc: str, out: str) -> argparse.ArgumentParser:
    """The options the site benches share: scale (--size, --epochs) and where runs go (--out)."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--out", type=Path, default=ROOT / "cxr-out" / out)
    return p


def check_shared() -> None:
    """Exit with a clear line when the shared real data is not here."""
    if not KERMANY.is_dir() or not NIH.is_dir():
        raise SystemExit(f"{SHARED}: the shared data is not here (set CXRKIT_SHARED)")


def person(name: str) -> int:
    """The patient number of a ``personN_...`` file."""
    return int(re.match(r"person(\d+)_", name).group(1))


def make_sites(root: Path) -> dict[str, Path]:
    """Site A and site B as class folders of symbolic links into ../shared."""
    pneu = sorted(p.name for p in (KERMANY / "PNEUMONIA").glob("*.jpeg"))
    cut = float(np.median([person(n) for n in pneu]))
    rule = {
        "A": (lambda n: not n.startswith("NORMAL2-"), lambda n: person(n) < cut),
        "B": (lambda n: n.startswith("NORMAL2-"), lambda n: person(n) >= cut),
    }
    out = {}
    for site, (normal, sick) in rule.items():
        folder = root / f"kermany-site-{site}"
        for cls, keep in (("NORMAL", normal), ("PNEUMONIA", sick)):
            (folder / cls).mkdir(parents=True, exist_ok=True)
            for f in sorted((KERMANY / cls).glob("*.jpeg")):
                if keep(f.name) and not (folder / cls / f.name).exists():
                    (folder / cls / f.name).symlink_to(f)
        out[site] = folder
    return out


def site_statistics(folder: Path, limit: int = 300) -> dict:
    """Counts, mean grey level and contrast (sd) of a site's images (first ``limit`` per class)."""
    from PIL import Image

    stats = {}
    for cls in ("NORMAL", "PNEUMONIA"):
        files = sorted((folder / cls).iterdir())
        grey = [np.asarray(Image.open(f).convert("L"), dtype=np.float32) for f in files[:limit]]
        stats[cls] = {
            "images": len(files),
            "mean": float(np.mean([g.mean() for g in grey])),
            "sd": float(np.mean([g.std() for g in grey])),
        }
    return stats


def train(folder: Path, name: str, args: argparse.Namespace, out: Path, config: str) -> Path:
    """Train ``config`` on ``folder`` at the bench's scale (an existing finished run is reused)."""
    from cxrkit.config import build_run_config, load_yaml
    from cxrkit.training.loop import fit

    run = out / name
    if (run / "model.json").is_file():
        return run
    doc = load_yaml(ROOT / config)
    doc["data"] = {**doc["data"], "path": str(folder)}
    over = {
        "prepare.size": args.size,
        "train.epochs": args.epochs,
        "train.progress": False,
        "model.tta": 0,
        "partition.method": "patient",
        "partition.train": 0.6,
        "partition.val": 0.2,
        "partition.test": 0.2,
        "out": str(out),
        "name": name,
        "cache_dir": str(args.cache),
    }
    return fit(build_run_config(doc, over), log=lambda m: None)


def figures(evaluation: dict, part: str) -> dict:
    """ROC-AUC (the run's one label, or macro) and the operating point's sensitivity/specificity, with CIs."""
    tri, ci = evaluation["triage"][part], evaluation["triage"]["ci"]
    auc = (
        evaluation["macro_auc"]
        if evaluation["macro_auc"]["value"] == evaluation["macro_auc"]["value"]
        else None
    )
    return {
        "images": evaluation["images"],
        "auc": auc["value"] if auc else float("nan"),
        "auc_ci": [auc["low"], auc["high"]] if auc else None,
        "sensitivity": tri["sensitivity"],
        "sensitivity_ci": [ci["sensitivity"]["low"], ci["sensitivity"]["high"]],
        "specificity": tri["specificity"],
        "specificity_ci": [ci["specificity"]["low"], ci["specificity"]["high"]],
    }


def adabn_auc(site_run: Path, parent: Path) -> dict:
    """AUC and the parent's operating point on the site's evaluation part with batch-norm statistics
    re-estimated on its calibration images (no labels used), against the parent unchanged."""
    import torch
    from sklearn.metrics import roc_auc_score

    from cxrkit.data.transforms import to_model_input
    from cxrkit.evaluate.triage import abnormal_truth, abnormality_score, triage_counts
    from cxrkit.run.data import load_run_data
    from cxrkit.run.model import RunModel

    data = load_run_data(site_run)  # val = calibration part, test = evaluation part
    run = RunModel.load(parent, "cpu")
    calib, held = np.sort(data.partition["val"]), np.sort(data.partition["test"])
    y = data.targets[held][:, 0]
    point = run.package.operating_point

    def score() -> dict:
        p = run.package.probs(run.logits(np.asarray(data.cache.images[held])))
        s, _ = abnormality_score(p, run.labels, point.score)
        t = triage_counts(abnormal_truth(data.targets[held], run.labels), s, point.threshold)
        return {
            "auc": float(roc_auc_score(y, p[:, 0])),
            "sensitivity": t["sensitivity"],
            "specificity": t["specificity"],
        }

    before = score()
    norms = [m for m in run.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over every calibration batch
    run.model.train()
    with torch.no_grad():
        images = np.asarray(data.cache.images[calib])
        for s in range(0, len(images), 64):
            run.model(to_model_input(images[s : s + 64], run.device))
    run.model.eval()
    return {"batchnorm_layers": len(norms), "before": before, "after": score()}


def main() -> None:
    p = site_parser(__doc__, "bench-sites")
    p.add_argument("--share", type=float, default=0.3, help="site B's calibration share")
    p.add_argument("--bootstrap", type=int, default=500)
    args = p.parse_args()
    check_shared()
    from cxrkit.config import DataConfig, EvalConfig
    from cxrkit.workflows.evaluate import evaluate_run
    from cxrkit.workflows.matrix import cross_dataset_matrix
    from cxrkit.workflows.recalibrate import recalibrate_site, with_ci
    from cxrkit.workflows.validate import validate_run

    args.out.mkdir(parents=True, exist_ok=True)
    args.cache = args.out / "cache"
    quiet = lambda m: None  # noqa: E731
    sites = make_sites(args.out / "sites")
    stats = {k: site_statistics(v) for k, v in sites.items()}
    for k, s in stats.items():
        print(
            f"site {k}: "
            + "; ".join(
                f"{c} {v['images']:,} (grey mean {v['mean']:.1f}, sd {v['sd']:.1f})" for c, v in s.items()
            )
        )
    run = train(sites["A"], "kermany-A", args, args.out / "runs", "configs/kermany.yaml")
    cfg = EvalConfig(n_boot=args.bootstrap, samples=4)
    own = evaluate_run(run, dataclasses.replace(cfg, split="test"), quiet)
    ind = figures(json.loads((own / "evaluation.json").read_text()), "test")
    site_b = DataConfig(source="folder", path=str(sites["B"]))
    cross = validate_run(
        run, site_b, dataclasses.replace(cfg, out=str(args.out / "validate-B")), str(args.cache), quiet
    )
    xs = figures(json.loads((cross / "evaluation.json").read_text()), "site")
    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        site_run = recalibrate_site(
            run, site_b, Path(tmp) / "kermany-A-siteB", args.share, cfg, str(args.cache), quiet
        )
        rows = json.loads((site_run / "recalibration.json").read_text())["rows"]
        prov = json.loads((site_run / "model.json").read_text())["validation"]["site"]
        adabn = adabn_auc(site_run, run)
    nih = train(NIH, "nih", args, args.out / "runs", "configs/nih-shared64.yaml")
    frame, mdir = cross_dataset_matrix(
        [run, nih],
        [site_b, DataConfig(source="nih", path=str(NIH))],
        dataclasses.replace(cfg, n_boot=min(args.bootstrap, 200)),
        args.out / "matrix",
        str(args.cache),
        quiet,
    )
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "size": args.size,
        "epochs": args.epochs,
        "sites": stats,
        "in_distribution": ind,
        "cross_site": xs,
        "recalibration": {"provenance": prov, "rows": rows},
        "adabn": adabn,
        "matrix": frame.to_dict(orient="records"),
    }
    (args.out / "bench_sites.json").write_text(json.dumps(result, indent=1, default=float))
    print(
        f"\nKermany run trained on site A ({args.size} px, {args.epochs} epochs), operating point for "
        "sensitivity 0.95 on A's val:"
    )
    print("| scored on | images | ROC-AUC [95% CI] | sensitivity | specificity |\n|---|---|---|---|---|")
    for name, f in (("site A test patients (in distribution)", ind), ("site B (cross-site)", xs)):
        print(
            f"| {name} | {f['images']:,} | {f['auc']:.3f} [{f['auc_ci'][0]:.3f}, {f['auc_ci'][1]:.3f}] | "
            f"{f['sensitivity']:.3f} [{f['sensitivity_ci'][0]:.2f}, {f['sensitivity_ci'][1]:.2f}] | "
            f"{f['specificity']:.3f} [{f['specificity_ci'][0]:.2f}, {f['specificity_ci'][1]:.2f}] |"
        )
    print(
        f"\nsite B recalibration: {prov['calibration_images']:,} calibration images "
        f"({prov['calibration_abnormal']:,} abnormal), {prov['evaluation_images']:,} evaluation images"
    )
    print("| on B's evaluation part | parent's stored decisions | site-calibrated |\n|---|---|---|")
    for r in rows:
        print(f"| {r['metric']} | {with_ci(r, 'before')} | {with_ci(r, 'after')} |")
    b, a = adabn["before"], adabn["after"]
    print(
        f"\nAdaBN ({adabn['batchnorm_layers']} batch-norm layers re-estimated on B's calibration images): "
        f"ROC-AUC {b['auc']:.3f} -> {a['auc']:.3f}; at the parent's operating point sensitivity "
        f"{b['sensitivity']:.3f} -> {a['sensitivity']:.3f}, specificity {b['specificity']:.3f} -> "
        f"{a['specificity']:.3f}"
    )
    print(f"\ncross-dataset matrix ({mdir / 'matrix.md'}):\n")
    print((mdir / "matrix.md").read_text().split("## ROC-AUC per label")[0].split("\n", 4)[-1])
    print(f"wrote {args.out / 'bench_sites.json'}")


if __name__ == "__main__":
    main()
