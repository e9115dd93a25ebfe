"""``cxr export``: parse, call; nothing else (``cxr serve`` is in cli/serve.py)."""

from __future__ import annotations

import argparse

from cxrkit.cli.options import given


def cmd_export(args: argparse.Namespace) -> int:
    """Write RUN/model.onnx (float32, checked against PyTorch on real images); --openvino adds model.xml
    (OpenVINO IR), --int8 an int8 copy of each (kept only when its test macro ROC-AUC holds)."""
    from cxrkit.workflows.export import export_run

    opts = given(args, check="check", calibration="calibration", max_auc_drop="max_auc_drop")
    report = export_run(args.run, int8=args.int8, images=args.images or (), openvino=args.openvino, **opts)
    worst = max(p["max_abs_prob_diff"] for p in report["parity"])
    line = f"exported {args.run}/model.onnx: max |Δprob| vs PyTorch {worst:.1e}"
    if "openvino" in report:
        worst = max(p["max_abs_prob_diff"] for p in report["openvino"]["parity"])
        line += f"; model.xml (OpenVINO): {worst:.1e}"
    lost = []
    for key in ("int8", "openvino_int8"):
        if key in report:
            q = report[key]
            line += (
                f"; {q['file']} macro ROC-AUC change {q['macro_auc_change']:+.4f} on {q['images']} "
                f"{q['split']} images" + ("" if q["kept"] else " (NOT kept)")
            )
            lost += [] if q["kept"] else [q["file"]]
    print(line + f"; report: {args.run}/export.json")
    if lost:
        print(f"not kept: {', '.join(lost)} (int8 lost more macro ROC-AUC than --max-auc-drop allows)")
    return 1 if lost else 0


def add_export_commands(sub) -> None:
    """Register export on the ``cxr`` subparsers (building the parser imports no workflow: no torch)."""
    p = sub.add_parser(
        "export", help="export a run to ONNX / OpenVINO (fast CPU inference)", description=cmd_export.__doc__
    )
    p.add_argument("run", help="run folder (from cxr train)")
    p.add_argument(
        "--int8", action="store_true", help="also write a static int8 model (needs the run's data)"
    )
    p.add_argument(
        "--openvino",
        action="store_true",
        help="also write OpenVINO IR (model.xml; with --int8 an NNCF int8 copy); needs .[openvino]",
    )
    p.add_argument(
        "--max-auc-drop",
        type=float,
        help="largest test macro ROC-AUC loss an int8 copy may have to be kept (default: 0.005)",
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
