"""``cxr validate``: a run on another site's labelled images, a site recalibration, a cross-dataset
matrix, and a sample-size plan."""

from __future__ import annotations

import argparse
import dataclasses

from cxrkit.cli.data import DATA_HELP, add_data_args, data_config
from cxrkit.cli.options import add_command, add_config_flags, add_device_argument, fields_of, given
from cxrkit.config import DataConfig, EvalConfig, merge
from cxrkit.config_check import load_yaml

FLAGS = [
    ("--threshold", "threshold", str, "per-label rule (default: the run's stored max_f1 thresholds)"),
    ("--beta", "beta", float, "beta of the F-beta beside F1"),
    ("--bootstrap", "n_boot", int, "patient-bootstrap replicates (0: no CIs)"),
]


def cmd_validate(args: argparse.Namespace) -> int:
    """Score RUN on the labelled images in DATA at the run's stored thresholds and operating point.

    Writes the evaluation report (report.html, evaluation.json, CSVs) with a "training site vs this
    site" block to RUN/validate-NAME. --recalibrate writes a site-calibrated run folder instead;
    RUN1 RUN2 ... --data A B ... writes a runs x datasets matrix; --plan prints how many labelled
    studies a validation needs.
    """
    if args.plan:
        return _plan(args)
    cfg = EvalConfig(**given(args, device="device", **fields_of(FLAGS)))
    cache = given(args, cache_dir="cache_dir")
    if args.datasets or args.matrix:
        return _matrix(args, cfg, cache)
    if len(args.paths) != 2:
        raise ValueError(
            "cxr validate needs RUN DATA (one run, one site), RUN ... --data DATA ... (a matrix) or --plan"
        )
    args.data = args.paths[1]
    dcfg = data_config(args, "folder")
    if args.recalibrate:
        from cxrkit.workflows.recalibrate import recalibrate_site

        recalibrate_site(args.paths[0], dcfg, args.out, args.calibration_share, cfg, **cache)
        return 0
    from cxrkit.workflows.validate import validate_run

    validate_run(args.paths[0], dcfg, dataclasses.replace(cfg, **given(args, out="out")), **cache)
    return 0


def _matrix(args: argparse.Namespace, cfg: EvalConfig, cache: dict) -> int:
    from cxrkit.workflows.matrix import cross_dataset_matrix

    if args.recalibrate:
        raise ValueError("--recalibrate takes one RUN and one DATA, not a matrix")
    runs, datasets = list(args.paths), []
    if args.matrix:
        doc = load_yaml(args.matrix)
        if not (isinstance(doc, dict) and all(isinstance(doc.get(k, []), list) for k in ("runs", "data"))):
            raise ValueError(f"{args.matrix}: expected a mapping with `runs:` and `data:` lists")
        runs += [str(r) for r in doc.get("runs") or []]
        for entry in doc.get("data") or []:
            if not isinstance(entry, (str, dict)):
                raise ValueError(f"{args.matrix}: data entry {entry!r}: expected a path or a `data:` mapping")
            entry = {"path": entry} if isinstance(entry, str) else dict(entry)
            try:
                datasets.append(_detected(merge(DataConfig(), entry)))
            except ValueError as err:
                raise ValueError(f"{args.matrix}: data entry {entry}: {err}") from None
    for path in args.datasets or []:
        args.data = path
        datasets.append(data_config(args, "folder"))
    cross_dataset_matrix(runs, datasets, cfg, args.out, **cache)
    return 0


def _detected(dcfg: DataConfig) -> DataConfig:
    """A YAML data entry without a source: detected from its path, as on the command line."""
    from cxrkit.data import detect_source

    if dcfg.path and dcfg.source == DataConfig.source:
        return dataclasses.replace(dcfg, source=detect_source(dcfg.path))
    return dcfg


def _plan(args: argparse.Namespace) -> int:
    from cxrkit.evaluate.sample_size import needed

    target = args.target_sensitivity
    specificity = args.specificity
    if args.paths:
        from cxrkit.run.package import read_package

        point = read_package(args.paths[0]).operating_point
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
    p.add_argument(
        "paths",
        nargs="*",
        metavar="RUN [DATA]",
        help=f"RUN DATA: one run on one site (DATA: {DATA_HELP}); RUN ... with --data: a matrix",
    )
    add_data_args(p, positional=False)
    add_config_flags(p, EvalConfig, FLAGS)
    add_device_argument(p)
    p.add_argument("--out", help="output folder (default RUN/validate-NAME; --recalibrate: RUN-NAME)")
    p.add_argument("--cache-dir", help="where the site's prepared images are cached (default: cxr-out/cache)")
    r = p.add_argument_group("site recalibration (a new run folder, no retraining)")
    r.add_argument(
        "--recalibrate",
        action="store_true",
        help="refit temperatures, thresholds and the triage point on part of DATA; write the run to --out",
    )
    r.add_argument(
        "--calibration-share",
        type=float,
        default=0.3,
        help="share of the site's patients used to calibrate; the rest evaluates (default 0.3)",
    )
    m = p.add_argument_group("cross-dataset matrix")
    m.add_argument("--data", dest="datasets", nargs="+", metavar="DATA", help="every RUN on every DATA")
    m.add_argument("--matrix", help="YAML with `runs:` and `data:` lists (paths, or data sections)")
    g = p.add_argument_group("sample-size plan")
    g.add_argument("--plan", action="store_true", help="print how many labelled studies a validation needs")
    g.add_argument(
        "--target-sensitivity", type=float, help="expected sensitivity (default: the run's, else 0.95)"
    )
    g.add_argument("--specificity", type=float, help="expected specificity (default: the run's, else 0.5)")
    g.add_argument("--ci-width", type=float, default=0.05, help="widest 95%% interval wanted (default 0.05)")
    g.add_argument("--prevalence", type=float, help="abnormal share at the site: total studies to collect")
