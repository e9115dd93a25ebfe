"""``cxr validate``: a run on another site's labelled images, and a sample-size plan."""

from __future__ import annotations

import argparse

from cxrkit.cli.data import add_data_args, data_config
from cxrkit.cli.options import add_command, add_config_flags, add_device_argument, given
from cxrkit.config import EvalConfig

FLAGS = [
    ("--threshold", "threshold", str, "per-label rule (default: the run's stored max_f1 thresholds)"),
    ("--beta", "beta", float, "beta of the F-beta beside F1"),
    ("--bootstrap", "n_boot", int, "patient-bootstrap replicates (0: no CIs)"),
]


def cmd_validate(args: argparse.Namespace) -> int:
    """Score RUN on the labelled images in DATA at the run's stored thresholds and operating point.

    Writes the evaluation report (report.html, evaluation.json, CSVs) with a "training site vs this
    site" block to RUN/validate-NAME. --plan prints how many labelled studies a validation needs.
    """
    if args.plan:
        return _plan(args)
    if not args.run or not args.data:
        raise ValueError("cxr validate needs RUN and DATA (or --plan)")
    dcfg = data_config(args, "folder")
    opts = given(args, threshold="threshold", beta="beta", n_boot="n_boot", device="device")
    cache = given(args, cache_dir="cache_dir")
    from cxrkit.workflows.validate import validate_run

    validate_run(args.run, dcfg, EvalConfig(**opts, **given(args, out="out")), **cache)
    return 0


def _plan(args: argparse.Namespace) -> int:
    from cxrkit.evaluate.sample_size import needed

    target = args.target_sensitivity
    specificity = args.specificity
    if args.run:
        from cxrkit.run.package import read_package

        point = read_package(args.run).operating_point
        target = point.target_sensitivity if target is None else target
        specificity = point.val_specificity if specificity is None else specificity
    target = 0.95 if target is None else target
    specificity = 0.5 if specificity is None else specificity  # 0.5: the widest interval, the safe guess
    pos, neg = needed(target, args.ci_width), needed(specificity, args.ci_width)
    print(
        f"for 95% Wilson intervals no wider than {args.ci_width:g}: {pos:,} labelled abnormal studies "
        f"(sensitivity {target:g}) and {neg:,} normal ones (specificity {specificity:g})"
    )
    if args.prevalence:
        total = max(pos / args.prevalence, neg / (1 - args.prevalence))
        print(
            f"at an abnormal share of {args.prevalence:g}: about {int(-(-total // 1)):,} consecutive studies"
        )
    return 0


def add_validate_commands(sub) -> None:
    """Register validate on the ``cxr`` subparsers."""
    p = add_command(sub, "validate", cmd_validate, "a run on another site's labelled images")
    p.add_argument("run", nargs="?", help="run folder (from cxr train)")
    add_data_args(p)
    add_config_flags(p, EvalConfig, FLAGS)
    add_device_argument(p)
    p.add_argument("--out", help="output folder (default RUN/validate-NAME)")
    p.add_argument("--cache-dir", help="where the site's prepared images are cached (default: cxr-out/cache)")
    g = p.add_argument_group("sample-size plan")
    g.add_argument("--plan", action="store_true", help="print how many labelled studies a validation needs")
    g.add_argument(
        "--target-sensitivity", type=float, help="expected sensitivity (default: the run's, else 0.95)"
    )
    g.add_argument("--specificity", type=float, help="expected specificity (default: the run's, else 0.5)")
    g.add_argument("--ci-width", type=float, default=0.05, help="widest 95%% interval wanted (default 0.05)")
    g.add_argument("--prevalence", type=float, help="abnormal share at the site: total studies to collect")
