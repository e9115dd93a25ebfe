"""How well the OOD score separates what a run was trained on from what it was not.

For each comparison: AUROC of the score (in distribution = 0, out = 1) and the share flagged at the
run's stored threshold, for both scores cxrkit implements (Mahalanobis on pooled features, the
default; energy on logits, thresholded the same way: the 99th percentile of validation scores).

(a) the demo recipe (phantoms) on fresh phantoms vs real X-rays (the NIH and Kermany images in
    ../shared); (b) a Kermany-trained run (paediatric) on its test patients vs the 1,000 NIH adult
    images; (c) an NIH-trained run on its test patients vs non-X-ray pictures (smooth colour
    fields, printed text, noise) and vs the 12 acquisition shifts of ``cxr robustness`` at
    severities 1-5 (mean score per severity: it should rise); (d) the false-flag rate on each run's
    own test split (the threshold aims at 1%). Scores are computed on the prepared images directly,
    so pictures the assessability gate would refuse first (noise, blank) are scored too; how many
    the gate catches is printed beside.

    python bench/bench_ood.py               # 64 px, about 3 minutes on 2 cores

Environment: CXRKIT_SHARED points at the shared folder when it is not ../shared.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from bench_sites import KERMANY, NIH, check_shared, make_sites, site_parser, train  # noqa: E402


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(score of an OOD image > score of an in-distribution one), ties halved (Mann-Whitney)."""
    a, b = np.asarray(inside, np.float64), np.asarray(outside, np.float64)
    order = np.argsort(np.r_[a, b], kind="mergesort")
    ranks = np.empty(len(order))
    allv = np.r_[a, b][order]
    _, first, counts = np.unique(allv, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[len(a) :].sum() - len(b) * (len(b) + 1) / 2) / (len(a) * len(b)))


class Scorer:
    """Both OOD scores of prepared images for one run, with both thresholds."""

    def __init__(self, run_dir: Path) -> None:
        from cxrkit.evaluate.ood import energy
        from cxrkit.run.data import load_run_data
        from cxrkit.run.model import RunModel

        self.run = RunModel.load(run_dir, "cpu")
        self.data = load_run_data(run_dir)
        self.energy = lambda z: energy(z, self.run.task)
        val = np.sort(self.data.partition["val"])
        z_val, _ = self.run.outputs(np.asarray(self.data.cache.images[val]))
        self.thresholds = {
            "mahalanobis": self.run.ood.threshold,
            "energy": float(np.quantile(self.energy(z_val), self.run.ood.quantile)),
        }

    def scores(self, images: np.ndarray) -> dict[str, np.ndarray]:
        z, f = self.run.outputs(images)
        return {"mahalanobis": self.run.ood.scores(f, z), "energy": self.energy(z)}

    def split(self, part: str) -> np.ndarray:
        return np.asarray(self.data.cache.images[np.sort(self.data.partition[part])])

    def prepare(self, images: list[np.ndarray]) -> np.ndarray:
        from cxrkit.data.transforms import prepare_image

        return np.stack([prepare_image(im, self.run.spec) for im in images])


def compare(name: str, scorer: Scorer, inside: dict, images: np.ndarray, gate: int | None = None) -> dict:
    """One table row: AUROC and flag rate of both scores for ``images`` against the in-distribution ones."""
    out = scorer.scores(images)
    row = {"comparison": name, "images": len(images)}
    for method in ("mahalanobis", "energy"):
        row[f"{method}_auroc"] = auroc(inside[method], out[method])
        row[f"{method}_flagged"] = float((out[method] > scorer.thresholds[method]).mean())
        row[f"{method}_mean"] = float(out[method].mean())
    if gate is not None:
        row["assessability_gate"] = gate
    return row


def pictures(n: int, size: int = 256, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Non-X-ray pictures: smooth colour fields, printed text on paper, uniform noise."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    colour, text, noise = [], [], []
    for _ in range(n):
        small = rng.random((4, 4, 3)) * 255
        colour.append(np.asarray(Image.fromarray(small.astype(np.uint8)).resize((size, size), Image.BICUBIC)))
        page = Image.new("L", (size, size), 245)
        draw = ImageDraw.Draw(page)
        for line in range(12):
            words = " ".join("".join(chr(97 + int(c)) for c in rng.integers(0, 26, 5)) for _ in range(4))
            draw.text((8, 8 + 20 * line), words, fill=int(rng.integers(0, 60)))
        text.append(np.asarray(page))
        noise.append((rng.random((size, size)) * 255).astype(np.uint8))
    return {"colour pictures": colour, "text pages": text, "noise": noise}


def gate_count(images: list[np.ndarray], spec) -> int:
    """How many of ``images`` the assessability rule refuses before any score."""
    from cxrkit.data.assess import assessment_problem
    from cxrkit.data.decode import array_to_grey

    return sum(bool(assessment_problem(array_to_grey(im), min(256, spec.size))) for im in images)


def files_images(folder: Path, n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` images (a seeded sample) from a folder tree, decoded as cxrkit decodes them."""
    from cxrkit.data.decode import read_image

    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpeg", ".jpg"))
    pick = np.random.default_rng(seed).choice(len(paths), min(n, len(paths)), replace=False)
    return [read_image(paths[i]) for i in sorted(pick)]


def phantom_run(args, out: Path) -> Path:
    from cxrkit.config import build_run_config, load_yaml
    from cxrkit.training.loop import fit

    run = out / "phantom-demo"
    if (run / "model.json").is_file():
        return run
    doc = load_yaml(ROOT / "configs" / "demo.yaml")
    over = {"train.progress": False, "out": str(out), "name": "phantom-demo", "cache_dir": str(args.cache)}
    return fit(build_run_config(doc, over), log=lambda m: None)


def main() -> None:
    p = site_parser(__doc__, "bench-ood")
    p.add_argument("--n", type=int, default=300, help="images per OOD set")
    args = p.parse_args()
    check_shared()
    from cxrkit.data.shifts import SEVERITIES, SHIFTS
    from cxrkit.data.synthetic import PhantomDataset

    args.out.mkdir(parents=True, exist_ok=True)
    args.cache = args.out / "cache"
    runs = args.out / "runs"
    nih_imgs, kid_imgs = files_images(NIH, args.n), files_images(KERMANY, args.n)
    rows, shifts = [], []

    demo = Scorer(phantom_run(args, runs))  # (a)
    fresh = PhantomDataset(args.n, 64, seed=12345)
    inside = demo.scores(demo.prepare([fresh.load_image(i) for i in range(len(fresh))]))
    rows.append(compare("(d) demo run: own test split", demo, inside, demo.split("test")))
    rows.append(
        compare("(a) demo run: real NIH X-rays vs fresh phantoms", demo, inside, demo.prepare(nih_imgs))
    )
    rows.append(
        compare("(a) demo run: real Kermany X-rays vs fresh phantoms", demo, inside, demo.prepare(kid_imgs))
    )

    sites = make_sites(args.out / "sites")  # (b): the Kermany site-A run of bench_sites, at this scale
    kermany = Scorer(train(sites["A"], "kermany-A", args, runs, "configs/kermany.yaml"))
    inside = kermany.scores(kermany.split("test"))
    rows.append(compare("(d) Kermany run: own test split", kermany, inside, kermany.split("test")))
    rows.append(compare("(b) Kermany run: NIH adult X-rays", kermany, inside, kermany.prepare(nih_imgs)))

    nih = Scorer(train(NIH, "nih", args, runs, "configs/nih-shared64.yaml"))  # (c)
    test = nih.split("test")
    inside = nih.scores(test)
    rows.append(compare("(d) NIH run: own test split", nih, inside, test))
    rows.append(compare("(b') NIH run: Kermany paediatric X-rays", nih, inside, nih.prepare(kid_imgs)))
    for what, imgs in pictures(args.n).items():
        rows.append(
            compare(f"(c) NIH run: {what}", nih, inside, nih.prepare(imgs), gate_count(imgs, nih.run.spec))
        )
    for shift in SHIFTS:
        for sev in SEVERITIES:
            from cxrkit.data.shifts import apply_shift

            r = compare(f"{shift} {sev}", nih, inside, apply_shift(test, shift, sev, seed=0))
            shifts.append(
                {"shift": shift, "severity": sev, **{k: v for k, v in r.items() if k != "comparison"}}
            )
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "rows": rows,
        "shifts": shifts,
        "thresholds": {"demo": demo.thresholds, "kermany": kermany.thresholds, "nih": nih.thresholds},
    }
    (args.out / "bench_ood.json").write_text(json.dumps(result, indent=1))
    print(
        "| comparison | images | Mahalanobis AUROC | flagged | energy AUROC | flagged | assessability gate |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        gate = f"{r['assessability_gate']:,} refused" if "assessability_gate" in r else ""
        auc_m = "–" if r["comparison"].startswith("(d)") else f"{r['mahalanobis_auroc']:.3f}"
        auc_e = "–" if r["comparison"].startswith("(d)") else f"{r['energy_auroc']:.3f}"
        print(
            f"| {r['comparison']} | {r['images']:,} | {auc_m} | {r['mahalanobis_flagged']:.1%} | {auc_e} | "
            f"{r['energy_flagged']:.1%} | {gate} |"
        )
    print("\nNIH run, acquisition shifts of its test split: Mahalanobis AUROC vs clean (flagged) by severity")
    print("| shift | " + " | ".join(f"sev {s}" for s in SEVERITIES) + " |\n|---|" + "---|" * len(SEVERITIES))
    for shift in SHIFTS:
        cells = [r for r in shifts if r["shift"] == shift]
        print(
            f"| {shift} | "
            + " | ".join(f"{c['mahalanobis_auroc']:.2f} ({c['mahalanobis_flagged']:.0%})" for c in cells)
            + " |"
        )
    print(f"wrote {args.out / 'bench_ood.json'}")


if __name__ == "__main__":
    main()
