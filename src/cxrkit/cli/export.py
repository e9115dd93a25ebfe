"""``cxr export``: parse, call; nothing else (``cxr serve`` is in cli/serve.py)."""

from __future__ import annotations

import argparse

from cxrkit.cli.options import given


def cmd_export(args: argparse.Namespace) -> int:
    """Write RUN/model.onnx (float32, checked against PyTorch on real images); --int8 adds model.int8.onnx."""
    from cxrkit.workflows.export import export_run

    opts = given(args, check="check", calibration="calibration")
    report = export_run(args.run, int8=args.int8, images=args.images or (), **opts)
    worst = max(p["max_abs_prob_diff"] for p in report["parity"])
    line = f"exported {args.run}/model.onnx: max |Δprob| vs PyTorch {worst:.1e}"
    if "int8" in report:
        q = report["int8"]
        line += (
            f"; int8 macro ROC-AUC change {q['macro_auc_change']:+.4f} on {q['images']} {q['split']} images"
        )
    print(line + f"; report: {args.run}/export.json")
    return 0


def add_export_commands(sub) -> None:
    """Register export on the ``cxr`` subparsers (building the parser imports no workflow: no torch)."""
    p = sub.add_parser(
        "export", help="export a run to ONNX (fast CPU inference)", description=cmd_export.__doc__
    )
    p.add_argument("run", help="run folder (from cxr train)")
    p.add_argument(
        "--int8", action="store_true", help="also write a static int8 model (needs the run's data)"
    )
    p.add_argument("--images", nargs="+", help="more PNG/JPEG/DICOM files or folders to check parity on")
    p.add_argument(
        "--check",
        type=int,
        help="test-split images for parity and int8 AUC (default: 500)",
    )
    p.add_argument(
        "--calibration",
        type=int,
        help="validation images for int8 ranges (default: 300)",
    )
    p.set_defaults(func=cmd_export)
