"""Detection power of ``cxr monitor``'s drift signal: clean vs shifted windows, and the delay to alarm.

The run is the Kermany site-A run of bench_ood.py / bench_sites.py (trained here if missing). Windows of
``--window`` studies are drawn without replacement from its test patients' images: clean (the
false-alarm rate), under each of the 12 acquisition shifts of ``cxr robustness`` at severities 1-5
(the detection rate), and mixed with the NIH adult images in ../shared at 10-100% (a population
shift). Delay: a stream of clean studies followed by shifted ones (severity 3), scored every 20
studies over the last ``--window``; the number of studies after the change when the first alarm
fires. The statistic and threshold are exactly ``cxr monitor``'s (``evaluate.drift``).

    python bench/bench_monitor.py              # about 2 minutes on 2 cores once the run exists

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
from bench_sites import NIH, check_shared, make_sites, site_parser, train  # noqa: E402


def as_window(run, images: np.ndarray):
    """A drift Window of prepared images, as the monitor log would record them."""
    from cxrkit.evaluate.drift import Window, pixel_stats
    from cxrkit.evaluate.triage import abnormality_score

    z, f = run.outputs(images)
    rel = run.ood.relative(run.ood.scores(f, z))
    point = run.package.operating_point
    score, _ = abnormality_score(run.package.probs(z), run.labels, point.score)
    return Window(run.ood.summary(f), rel, score, score >= point.threshold, {}, pixel_stats(images))


def take(w, idx):
    from cxrkit.evaluate.drift import Window

    return Window(w.summary[idx], w.ood[idx], w.scores[idx], w.flagged[idx], {}, w.pixels[idx])


def main() -> None:
    p = site_parser(__doc__, "bench-ood")  # shares bench_ood's runs
    p.add_argument("--window", type=int, default=200)
    p.add_argument("--windows", type=int, default=20, help="windows per condition")
    args = p.parse_args()
    check_shared()
    from cxrkit.data.decode import read_image
    from cxrkit.data.shifts import SEVERITIES, SHIFTS, apply_shift
    from cxrkit.data.transforms import prepare_image
    from cxrkit.evaluate.drift import fit_drift, window_signal
    from cxrkit.run.data import load_run_data
    from cxrkit.run.model import RunModel
    from cxrkit.workflows.monitor import val_window

    args.cache = args.out / "cache"
    sites = make_sites(args.out / "sites")
    run_dir = train(sites["A"], "kermany-A", args, args.out / "runs", "configs/kermany.yaml")
    run = RunModel.load(run_dir, "cpu")
    if run.ood is None or run.ood.val_pixels.shape[1:] != (8,) or not len(run.ood.val_pixels):  # older: refit
        from cxrkit.workflows.package import package_run

        package_run(run_dir, log=lambda m: None)
        run = RunModel.load(run_dir, "cpu")
    data = load_run_data(run_dir)
    test = np.asarray(data.cache.images[np.sort(data.partition["test"])])
    drift = fit_drift(val_window(run), window=args.window)
    rng = np.random.default_rng(0)
    n = min(args.window, len(test))

    def rate(images: np.ndarray) -> float:
        w = as_window(run, images)
        picks = [rng.choice(len(images), n, replace=False) for _ in range(args.windows)]
        return float(np.mean([window_signal(take(w, i), drift)["alarm"] for i in picks]))

    clean_w = as_window(run, test)
    clean = float(
        np.mean(
            [
                window_signal(take(clean_w, rng.choice(len(test), n, replace=False)), drift)["alarm"]
                for _ in range(100)
            ]
        )
    )
    table = {s: [rate(apply_shift(test, s, sev, seed=0)) for sev in SEVERITIES] for s in SHIFTS}
    nih_paths = sorted(NIH.glob("*.png"))
    nih = np.stack([prepare_image(read_image(x), run.spec) for x in nih_paths[: len(test)]])
    mixes = {}
    for share in (0.1, 0.25, 0.5, 1.0):
        k = round(share * n)
        alarms = []
        for _ in range(args.windows):
            images = np.concatenate(
                [
                    test[rng.choice(len(test), n - k, replace=False)],
                    nih[rng.choice(len(nih), k, replace=False)],
                ]
            )
            alarms.append(window_signal(as_window(run, images), drift)["alarm"])
        mixes[share] = float(np.mean(alarms))
    delays = {}
    for s in SHIFTS:
        before = test[rng.permutation(len(test))]
        after = apply_shift(test[rng.permutation(len(test))], s, 3, seed=1)
        stream = as_window(run, np.concatenate([before, after]))
        change, fired = len(before), None
        for end in range(change + 20, len(before) + len(after) + 1, 20):
            if window_signal(take(stream, np.arange(end - n, end)), drift)["alarm"]:
                fired = end - change
                break
        delays[s] = fired
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "window": n,
        "threshold": drift.threshold,
        "false_alarms": clean,
        "detection": table,
        "population": mixes,
        "delay": delays,
    }
    (args.out / "bench_monitor.json").write_text(json.dumps(result, indent=1))
    print(
        f"window {n} studies; alarm threshold {drift.threshold:.3g}; false alarms on 100 clean windows: "
        f"{clean:.0%}"
    )
    print("\n| shift | " + " | ".join(f"sev {s}" for s in SEVERITIES) + " | studies to alarm (sev 3) |")
    print("|---|" + "---|" * (len(SEVERITIES) + 1))
    for s, rates in table.items():
        d = delays[s]
        print(f"| {s} | " + " | ".join(f"{r:.0%}" for r in rates) + f" | {d if d is not None else 'none'} |")
    print("\npopulation shift (NIH adult images mixed into windows of Kermany test images):")
    print(" | ".join(f"{int(100 * k)}%: {v:.0%} alarms" for k, v in mixes.items()))
    print(f"wrote {args.out / 'bench_monitor.json'}")


if __name__ == "__main__":
    main()
