"""``cxr evaluate``, ``cxr triage``, ``cxr compare`` and ``cxr robustness``: parse, build the config, call."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cxrkit.cli.export import add_modality_argument
from cxrkit.cli.predict import add_tta_argument


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a run on a split: metrics.json + a self-contained HTML report (thresholds tuned on val)."""
    from cxrkit.workflows.evaluate import evaluate_run

    _check_out(args.out)
    evaluate_run(args.run, _eval_config(args))
    return 0


def _check_out(out: str | None) -> None:
    """Create ``--out`` now, so that a file or a read-only folder there fails before the long work."""
    from cxrkit.outputs import make_out_dir

    if out:
        make_out_dir(out)


def _eval_config(args: argparse.Namespace):
    from cxrkit.config import EvalConfig

    return EvalConfig(
        split=args.split,
        threshold=args.threshold,
        beta=args.beta,
        target_sensitivity=args.target_sensitivity,
        triage_score=args.triage_score,
        n_boot=args.bootstrap,
        seed=args.seed,
        device=args.device,
        out=getattr(args, "out", None),
    )


def cmd_triage(args: argparse.Namespace) -> int:
    """A worklist, most urgent first, at the threshold giving the target sensitivity on validation."""
    from cxrkit.workflows.triage import triage

    folder = triage(
        args.run,
        args.images or None,
        split=args.split,
        target=args.target_sensitivity,
        score=args.triage_score,
        out=args.out,
        device=args.device,
        accept_missing_modality=args.accept_missing_modality,
    )
    summary = json.loads((folder / "triage.json").read_text())
    return 1 if summary.get("not_scored") else 0  # studies to read manually: not a clean success


def cmd_compare(args: argparse.Namespace) -> int:
    """Several runs side by side in one table (runs not yet evaluated on the split are evaluated first)."""
    from cxrkit.workflows.compare import compare_runs
    from cxrkit.workflows.evaluate import evaluate_run

    cfg = _eval_config(argparse.Namespace(**{**vars(args), "out": None}))
    frame, out = compare_runs(
        args.runs,
        args.split,
        args.out,
        evaluate=lambda r: evaluate_run(r, cfg),
        log=lambda m: print(f"cxr compare: {m}", file=sys.stderr),
    )
    cols = ["run", "model", "macro_auc", "micro_auc", "macro_ap", "macro_f1", "triage_sensitivity"]
    print(frame[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {Path(out) / 'comparison.html'} and comparison.csv")
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    """Score a run's split under acquisition shifts (each at severities 1..5): AUC and triage per shift.

    Writes robustness.csv/json/png and report.html to RUN/robustness-SPLIT. An existing evaluation
    page is not changed: run `cxr evaluate RUN --split SPLIT` again to add a robustness section to it.
    """
    from cxrkit.workflows.robustness import RobustnessConfig, robustness_run

    cfg = RobustnessConfig(
        split=args.split,
        shifts=args.shifts or (),
        seed=args.seed,
        device=args.device,
        out=args.out,
        tta=args.tta,
    )
    _check_out(args.out)
    robustness_run(args.run, cfg)
    return 0


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split to score")
    p.add_argument(
        "--target-sensitivity",
        type=float,
        help="triage sensitivity on validation (default: the run's stored operating point, 0.95 unless "
        "trained "
        "otherwise; another value is chosen on validation now, which needs the run's data)",
    )
    p.add_argument(
        "--triage-score",
        choices=("auto", "no_finding", "noisy_or", "max"),
        help="abnormality score (default: the run's; auto: 1 - P(No Finding) if the model has it, "
        "else noisy-OR)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")


def _add_metric_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threshold",
        default="max_f1",
        help="per-label threshold rule, tuned on val: 0.5, 0.2, max_f1, max_f3, youden, sensitivity:0.9",
    )
    p.add_argument("--beta", type=float, default=3.0, help="beta of the F-beta score reported beside F1")
    p.add_argument("--bootstrap", type=int, default=1000, help="patient-bootstrap replicates (0: no CIs)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")


def add_eval_commands(sub) -> None:
    """Register evaluate, triage, compare and robustness on the ``cxr`` subparsers."""
    from cxrkit.data.shifts import SHIFTS

    p = sub.add_parser(
        "evaluate", help="metrics with CIs + HTML report for a run", description=cmd_evaluate.__doc__
    )
    p.add_argument("run", help="run folder (from cxr train)")
    _add_common(p)
    _add_metric_options(p)
    p.add_argument("--out", help="output folder (default RUN/eval-SPLIT)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("triage", help="worklist of likely-abnormal studies", description=cmd_triage.__doc__)
    p.add_argument("run", help="run folder (from cxr train)")
    p.add_argument(
        "images", nargs="*", help="new PNG/JPEG/DICOM files or folders (default: the run's --split)"
    )
    _add_common(p)
    p.add_argument("--out", help="output folder (default RUN/triage-SPLIT or RUN/triage-images)")
    add_modality_argument(p)
    p.set_defaults(func=cmd_triage)

    p = sub.add_parser("compare", help="several runs side by side", description=cmd_compare.__doc__)
    p.add_argument("runs", nargs="+", help="run folders")
    _add_common(p)
    _add_metric_options(p)
    p.add_argument("--out", help="output folder (default: the runs' common parent folder/comparison-SPLIT)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "robustness",
        help="AUC and triage under acquisition shifts (severities 1..5)",
        description=cmd_robustness.__doc__,
    )
    p.add_argument("run", help="run folder (from cxr train)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split to score")
    p.add_argument(
        "--shifts",
        metavar="NAME[,NAME...]",
        help=f"comma-separated shifts (default: all): {', '.join(SHIFTS)}",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random shifts (noise, offsets)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--out", help="output folder (default RUN/robustness-SPLIT, RUN/robustness-SPLIT-ttaN)")
    add_tta_argument(p)
    p.set_defaults(func=cmd_robustness)
