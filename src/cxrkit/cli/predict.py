"""``cxr predict``: parse, call; nothing else."""

from __future__ import annotations

import argparse

from cxrkit.cli.options import add_device_argument, add_modality_argument, given

SHOWN = 20  # problem rows listed by name at the end of a sharded run (the parts hold them all)


def cmd_predict(args: argparse.Namespace) -> int:
    """Per-image predictions for files and folders (recursive), a CSV row each; exit 1 if any is unscored.

    Studies out of distribution are scored and flagged "out of distribution" (read them manually).
    With --shards N (an archive): --out is a folder of N part files and a manifest; --resume finishes
    a stopped job, scoring each input exactly once; --ray runs the shards on a Ray cluster."""
    from cxrkit.outputs import printable
    from cxrkit.workflows.predict import predict_files, summary_line

    if args.shards is not None or args.resume or args.ray is not None:
        return cmd_predict_shards(args)
    if any(getattr(args, flag) is not None for flag in RAY_FLAGS) or args.format is not None:
        raise ValueError("--format and --ray-* go with --shards N (or --resume, --ray)")
    args.out = args.out or "predictions.csv"
    table = predict_files(
        args.run,
        args.paths,
        out=args.out,
        heatmaps=args.heatmaps,
        progress=not args.quiet,
        tta=args.tta,
        accept_missing_modality=args.accept_missing_modality,
        monitor=args.monitor,
        **given(args, batch_size="batch_size", device="device", engine="engine", workers="workers"),
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


RAY_FLAGS = ("ray_workers", "ray_cpus", "ray_gpus")


def cmd_predict_shards(args: argparse.Namespace) -> int:
    """``cxr predict --shards/--resume/--ray``: parts and a manifest in --out; exit 1 if any is unscored."""
    from cxrkit.outputs import printable
    from cxrkit.workflows.predict import summary_line
    from cxrkit.workflows.shards import predict_shards

    if args.heatmaps or args.monitor:
        raise ValueError(
            "--heatmaps and --monitor do not go with --shards/--resume/--ray (a resumed shard would log or "
            "draw twice); run plain cxr predict, or cxr explain, on the studies you need"
        )
    if args.shards is not None and args.shards < 1:
        raise ValueError(f"--shards {args.shards}: expected a whole number >= 1")
    if not args.out:
        raise ValueError("--shards/--resume/--ray need --out DIR: the folder for the part files and manifest")
    if args.ray is None and any(getattr(args, flag) is not None for flag in RAY_FLAGS):
        raise ValueError("--ray-workers, --ray-cpus and --ray-gpus go with --ray")
    scorer = None
    if args.ray is not None:
        from cxrkit.workflows.shards_ray import ray_scorer

        scorer = ray_scorer(
            None if args.ray == LOCAL_RAY else args.ray,
            workers=args.ray_workers,
            cpus=args.ray_cpus if args.ray_cpus is not None else 1.0,
            gpus=args.ray_gpus or 0.0,
            progress=not args.quiet,
            **given(args, batch_size="batch_size", device="device"),
        )
    table = predict_shards(
        args.run,
        args.paths,
        args.out,
        shards=args.shards,
        resume=args.resume,
        fmt=args.format,
        tta=args.tta,
        accept_missing_modality=args.accept_missing_modality,
        scorer=scorer,
        progress=not args.quiet,
        **given(args, batch_size="batch_size", device="device", engine="engine"),
    )
    for name, frame, column in (
        ("not scored", table[table["error"] != ""], "error"),
        ("out of distribution", table[table["triage_flag"] == "out of distribution"], "ood_note"),
    ):
        for row in frame.head(SHOWN).itertuples():
            print(f"  {printable(row.source)}: {getattr(row, column)}")
        if len(frame) > SHOWN:
            print(f"  ... and {len(frame) - SHOWN:,} more {name} (see the {column} column of the parts)")
    print(summary_line(table) + f"; parts: {args.out}")
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
    p.add_argument(
        "--out",
        help="output CSV (default predictions.csv); with --shards/--resume/--ray: the folder of the parts",
    )
    p.add_argument("--heatmaps", help="folder for Grad-CAM overlays of each image's top findings")
    p.add_argument("--batch-size", type=int, help="images per forward pass (default: 32)")
    p.add_argument(
        "--workers", type=int, help="threads decoding ahead of the engine (default: one per CPU; 0: none)"
    )
    add_device_argument(p)
    p.add_argument(
        "--engine",
        help="torch, onnx, onnx-int8, openvino, openvino-int8 (files from cxr export) or auto "
        "(default: torch)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--monitor",
        metavar="DIR",
        help="append a monitoring record per study to DIR/monitor.jsonl (cxr monitor)",
    )
    add_tta_argument(p)
    add_modality_argument(p)
    add_shard_arguments(p)
    p.set_defaults(func=cmd_predict)


LOCAL_RAY = "local"  # --ray with no address: start a Ray instance on this machine


def add_shard_arguments(p: argparse.ArgumentParser) -> None:
    """--shards, --resume, --format and --ray (archive scale; see workflows/shards.py)."""
    g = p.add_argument_group("an archive: resumable parts, optionally on a Ray cluster (cxrkit[ray])")
    g.add_argument(
        "--shards",
        type=int,
        metavar="N",
        help="score in N parts: --out DIR gets DIR/part-00000.parquet ... and DIR/_manifest.json",
    )
    g.add_argument(
        "--resume",
        action="store_true",
        help="finish the sharded job in --out: complete parts kept, the others scored (N from its manifest)",
    )
    g.add_argument(
        "--format",
        choices=("parquet", "csv"),
        help="part files (default: parquet when pyarrow is installed, else csv)",
    )
    g.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL_RAY,
        metavar="ADDRESS",
        help="score the shards on Ray actors, the run loaded once each: ADDRESS of the head (HOST:6379, "
        "ray://HOST:10001 or auto); none: start a local Ray. Run, inputs and --out on paths every node reads",
    )
    g.add_argument(
        "--ray-workers",
        type=int,
        metavar="N",
        help="Ray actors (default: as many as the cluster's CPUs, or GPUs with --ray-gpus, hold)",
    )
    g.add_argument("--ray-cpus", type=float, metavar="C", help="CPUs (torch threads) per actor (default: 1)")
    g.add_argument(
        "--ray-gpus", type=float, metavar="G", help="GPUs per actor (default: 0; 0.5: two actors per GPU)"
    )
