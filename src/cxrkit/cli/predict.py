"""``cxr predict``: parse, call; nothing else."""

from __future__ import annotations

import argparse

from cxrkit.cli.options import add_device_argument, add_modality_argument, given


def cmd_predict(args: argparse.Namespace) -> int:
    """Per-image predictions for files and folders (recursive), a CSV row each; exit 1 if any is unscored.

    Studies out of distribution are scored and flagged "out of distribution" (read them manually)."""
    from cxrkit.outputs import printable
    from cxrkit.workflows.predict import predict_files, summary_line

    table = predict_files(
        args.run,
        args.paths,
        out=args.out,
        heatmaps=args.heatmaps,
        progress=not args.quiet,
        tta=args.tta,
        accept_missing_modality=args.accept_missing_modality,
        monitor=args.monitor,
        **given(args, batch_size="batch_size", device="device", engine="engine"),
    )
    for row in table[table["error"] != ""].itertuples():
        print(f"  {printable(row.source)}: {row.error}")
    for row in table[table["triage_flag"] == "out of distribution"].itertuples():
        print(f"  {printable(row.source)}: {row.ood_note}")
    print(
        summary_line(table)
        + f"; table: {args.out}"
        + (f"; heatmaps: {args.heatmaps}" if args.heatmaps else "")
    )
    return 1 if (table["error"] != "").any() else 0


def add_tta_argument(p: argparse.ArgumentParser) -> None:
    """``--tta N``: test-time views averaged (None when not given: the run's own ``model.tta``)."""
    p.add_argument(
        "--tta",
        type=int,
        choices=range(6),
        metavar="N",
        help="test-time augmentation: average N shifted views (0-5; default: the run's model.tta)",
    )


def add_predict_commands(sub) -> None:
    """Register predict on the ``cxr`` subparsers (building the parser imports no workflow: no torch)."""
    p = sub.add_parser(
        "predict",
        help="per-image predictions for new files and folders (CSV)",
        description=cmd_predict.__doc__,
    )
    p.add_argument("run", help="run folder (from cxr train); the training data is not needed")
    p.add_argument("paths", nargs="+", help="PNG/JPEG/DICOM files or folders (searched recursively)")
    p.add_argument("--out", default="predictions.csv", help="output CSV (default predictions.csv)")
    p.add_argument("--heatmaps", help="folder for Grad-CAM overlays of each image's top findings")
    p.add_argument("--batch-size", type=int, help="images per forward pass (default: 32)")
    add_device_argument(p)
    p.add_argument(
        "--engine",
        help="torch, onnx, onnx-int8 (files from cxr export) or auto (default: torch)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--monitor",
        metavar="DIR",
        help="append a monitoring record per study to DIR/monitor.jsonl (cxr monitor)",
    )
    add_tta_argument(p)
    add_modality_argument(p)
    p.set_defaults(func=cmd_predict)
