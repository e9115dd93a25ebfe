"""``cxr evaluate``, ``cxr triage``, ``cxr compare`` and ``cxr robustness``: parse, build the config, call."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cxrkit.cli.options import (
    Flag,
    add_command,
    add_config_flags,
    add_device_argument,
    add_modality_argument,
    given,
    with_default,
)
from cxrkit.cli.predict import add_tta_argument
from cxrkit.config import SCORE_METHODS, EvalConfig
from cxrkit.outputs import read_json
from cxrkit.run import files


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a run on a split: evaluation.json + a self-contained HTML report (thresholds tuned on val)."""
    from cxrkit.workflows.evaluate import evaluate_run

    _check_out(args.out)
    evaluate_run(args.run, _eval_config(args))
    return 0


def _check_out(out: str | None) -> None:
    """Create ``--out`` now, so that a file or a read-only folder there fails before the long work."""
    from cxrkit.outputs import make_out_dir

    if out:
        make_out_dir(out)


EVAL_FLAGS = {  # EvalConfig field -> flag attribute
    "split": "split",
    "threshold": "threshold",
    "beta": "beta",
    "target_sensitivity": "target_sensitivity",
    "score_method": "score_method",
    "n_boot": "bootstrap",
    "seed": "seed",
    "device": "device",
    "out": "out",
}


def _eval_config(args: argparse.Namespace) -> EvalConfig:
    """The EvalConfig of the flags given (the others keep EvalConfig's defaults)."""
    return EvalConfig(**given(args, **EVAL_FLAGS))


def cmd_triage(args: argparse.Namespace) -> int:
    """A worklist, most urgent first, at the threshold giving the target sensitivity on validation."""
    from cxrkit.workflows.triage import triage

    opts = given(
        args, split="split", target="target_sensitivity", score="score_method", out="out", device="device"
    )
    folder = triage(
        args.run, args.images or None, accept_missing_modality=args.accept_missing_modality, **opts
    )
    summary = read_json(folder / files.TRIAGE)
    return 1 if summary.get("not_scored") else 0  # studies to read manually: not a clean success


def cmd_compare(args: argparse.Namespace) -> int:
    """Several runs side by side in one table (runs not yet evaluated on the split are evaluated first)."""
    from cxrkit.workflows.compare import compare_runs
    from cxrkit.workflows.evaluate import evaluate_run

    cfg = _eval_config(argparse.Namespace(**{**vars(args), "out": None}))
    frame, out = compare_runs(
        args.runs,
        cfg.split,
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
        shifts=args.shifts or (),
        **given(args, split="split", seed="seed", device="device", out="out", tta="tta"),
    )
    _check_out(args.out)
    robustness_run(args.run, cfg)
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    """Write RUN/model_card.md and .html (Mitchell et al. 2019), every figure read from the run's files."""
    from cxrkit.workflows.model_card import write_card

    _check_out(args.out)
    write_card(args.run, args.split or "test", args.out)
    return 0


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--split", choices=("train", "val", "test"), help=with_default("split to score", EvalConfig, "split")
    )
    p.add_argument(
        "--target-sensitivity",
        type=float,
        help="triage sensitivity on validation (default: the run's stored operating point, 0.95 unless "
        "trained "
        "otherwise; another value is chosen on validation now, which needs the run's data)",
    )
    p.add_argument(
        "--score-method",
        "--triage-score",  # the old spelling, still accepted
        dest="score_method",
        choices=SCORE_METHODS,
        help="abnormality score (default: the run's; auto: 1 - P(No Finding) if the model has it, "
        "else noisy-OR)",
    )
    add_device_argument(p)


METRIC_FLAGS: list[Flag] = [
    (
        "--threshold",
        "threshold",
        str,
        "per-label rule, tuned on val: 0.5, 0.2, max_f1, max_f3, youden, sensitivity:0.9",
    ),
    ("--beta", "beta", float, "beta of the F-beta beside F1"),
    ("--bootstrap", "n_boot", int, "patient-bootstrap replicates (0: no CIs)"),
    ("--seed", "seed", int, "bootstrap seed"),
]


def _add_metric_options(p: argparse.ArgumentParser) -> None:
    add_config_flags(p, EvalConfig, METRIC_FLAGS)


def add_eval_commands(sub) -> None:
    """Register evaluate, card, triage, compare and robustness on the ``cxr`` subparsers."""
    from cxrkit.data.shifts import SHIFTS

    p = add_command(sub, "evaluate", cmd_evaluate, "metrics with CIs + HTML report for a run")
    p.add_argument("run", help="run folder (from cxr train)")
    _add_common(p)
    _add_metric_options(p)
    p.add_argument("--out", help="output folder (default RUN/eval-SPLIT)")

    p = add_command(sub, "card", cmd_card, "model card (Markdown + HTML) from a run's own files")
    p.add_argument("run", help="run folder (from cxr train; evaluate it first for the metrics)")
    p.add_argument(
        "--split", choices=("train", "val", "test"), help="whose evaluation to report (default: test)"
    )
    p.add_argument("--out", help="output folder (default: the run folder)")

    p = add_command(sub, "triage", cmd_triage, "worklist of likely-abnormal studies")
    p.add_argument("run", help="run folder (from cxr train)")
    p.add_argument(
        "images", nargs="*", help="new PNG/JPEG/DICOM files or folders (default: the run's --split)"
    )
    _add_common(p)
    p.add_argument("--out", help="output folder (default RUN/triage-SPLIT or RUN/triage-images)")
    add_modality_argument(p)

    p = add_command(sub, "compare", cmd_compare, "several runs side by side")
    p.add_argument("runs", nargs="+", help="run folders")
    _add_common(p)
    _add_metric_options(p)
    p.add_argument("--out", help="output folder (default: the runs' common parent folder/comparison-SPLIT)")

    p = add_command(
        sub, "robustness", cmd_robustness, "AUC and triage under acquisition shifts (severities 1..5)"
    )
    p.add_argument("run", help="run folder (from cxr train)")
    p.add_argument(
        "--split", choices=("train", "val", "test"), help="split to score (default: the test split)"
    )
    p.add_argument(
        "--shifts",
        metavar="NAME[,NAME...]",
        help=f"comma-separated shifts (default: all): {', '.join(SHIFTS)}",
    )
    p.add_argument("--seed", type=int, help="seed of the random shifts (noise, offsets; default: 0)")
    add_device_argument(p)
    p.add_argument("--out", help="output folder (default RUN/robustness-SPLIT, RUN/robustness-SPLIT-ttaN)")
    add_tta_argument(p)
