"""``cxr explain`` and ``cxr localize``: parse, call; nothing else."""

from __future__ import annotations

import argparse

from cxrkit.cli.options import add_device_argument, add_modality_argument, given


def cmd_explain(args: argparse.Namespace) -> int:
    """Heatmap overlays (PNG per image and label, plus a grid) for new images; exit 1 if any is unreadable."""
    from cxrkit.workflows.explain import explain_images

    skipped: list[tuple[str, str]] = []
    explain_images(
        args.run,
        args.images,
        labels=args.label or (),
        frac=args.frac,
        out=args.out,
        skipped=skipped,
        **given(args, top="top", method="method", device="device"),
        accept_missing_modality=args.accept_missing_modality,
    )
    return 1 if skipped else 0  # images that could not be explained: not a clean success


def cmd_localize(args: argparse.Namespace) -> int:
    """Score heatmap boxes against ground-truth boxes (IoBB/IoU table) on the run's boxed images."""
    from cxrkit.workflows.localize import localize_run

    opts = given(args, split="split", method="method", max_boxes="max_boxes", device="device")
    table, out = localize_run(args.run, boxes_csv=args.boxes, frac=args.frac, **opts)
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {out}/table.csv, scores.csv, report.html (and the table into the run's evaluation reports)")
    return 0


def add_explain_commands(sub) -> None:
    """Register explain and localize on the ``cxr`` subparsers."""
    methods = ("gradcam", "gradcam++", "cam")
    p = sub.add_parser("explain", help="Grad-CAM overlays for images", description=cmd_explain.__doc__)
    p.add_argument("run", help="run folder (from cxr train)")
    p.add_argument("images", nargs="+", help="PNG/JPEG/DICOM files or folders")
    p.add_argument("--label", action="append", help="label to explain (repeatable); default: --top findings")
    p.add_argument("--top", type=int, help="explain each image's K most probable findings (default: 3)")
    p.add_argument("--method", choices=methods, help="cam needs a model with hidden=0 (default: gradcam)")
    p.add_argument("--frac", type=float, help="box threshold, fraction of heatmap max (default: localize's)")
    p.add_argument("--out", help="output folder (default RUN/explain)")
    add_device_argument(p)
    add_modality_argument(p)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser(
        "localize", help="IoBB/IoU of heatmap boxes vs NIH boxes", description=cmd_localize.__doc__
    )
    p.add_argument("run", help="run folder (from cxr train)")
    p.add_argument("--boxes", help="BBox_List_2017.csv (default: the boxes the run's data carries)")
    p.add_argument(
        "--split",
        choices=("auto", "train", "val", "test", "all"),
        help="boxed images to score (auto: test if it has any, else all)",
    )
    p.add_argument("--frac", type=float, help="box threshold (default: chosen on validation boxes, else 0.5)")
    p.add_argument("--method", choices=methods, help="(default: gradcam)")
    p.add_argument("--max-boxes", type=int, help="boxes per heatmap, the largest components (default: 1)")
    add_device_argument(p)
    p.set_defaults(func=cmd_localize)
