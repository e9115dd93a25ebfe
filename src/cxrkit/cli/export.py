"""``cxr export`` and ``cxr serve``: parse, call; nothing else."""

from __future__ import annotations

import argparse


def cmd_export(args: argparse.Namespace) -> int:
    """Write RUN/model.onnx (float32, checked against PyTorch on real images); --int8 adds model.int8.onnx."""
    from cxrkit.workflows.export import export_run

    report = export_run(
        args.run, int8=args.int8, images=args.images or (), check=args.check, calibration=args.calibration
    )
    worst = max(p["max_abs_prob_diff"] for p in report["parity"])
    line = f"exported {args.run}/model.onnx: max |Δprob| vs PyTorch {worst:.1e}"
    if "int8" in report:
        q = report["int8"]
        line += (
            f"; int8 macro ROC-AUC change {q['macro_auc_change']:+.4f} on {q['images']} {q['split']} images"
        )
    print(line + f"; report: {args.run}/export.json")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve RUN over HTTP: /v1/predict, /v1/predict/batch, /v1/model, /health, /metrics and a viewer at /."""
    from cxrkit.config import ServeConfig
    from cxrkit.serve.server import serve

    cfg = ServeConfig(
        host=args.host,
        port=args.port,
        engine=args.engine,
        api_key_file=args.api_key_file,
        max_upload_mb=args.max_upload_mb,
        max_pixels=args.max_pixels,
        workers=args.workers,
        queue=args.queue,
        max_batch=args.max_batch,
        accept_missing_modality=args.accept_missing_modality,
    )
    serve(args.run, cfg)
    return 0


def add_modality_argument(p: argparse.ArgumentParser) -> None:
    """``--accept-missing-modality``: score DICOMs that carry no Modality tag (off: not assessable)."""
    p.add_argument(
        "--accept-missing-modality",
        action="store_true",
        help="score DICOMs without a Modality tag as radiographs (default: not assessable, since a CT "
        "slice with its Modality stripped must not be read as a chest X-ray)",
    )


def add_export_commands(sub) -> None:
    """Register export and serve on the ``cxr`` subparsers."""
    p = sub.add_parser(
        "export", help="export a run to ONNX (fast CPU inference)", description=cmd_export.__doc__
    )
    p.add_argument("run", help="run folder (from cxr train)")
    p.add_argument(
        "--int8", action="store_true", help="also write a static int8 model (needs the run's data)"
    )
    p.add_argument("--images", nargs="+", help="more PNG/JPEG/DICOM files or folders to check parity on")
    p.add_argument("--check", type=int, default=500, help="test-split images for parity and int8 AUC")
    p.add_argument("--calibration", type=int, default=300, help="validation images for int8 ranges")
    p.set_defaults(func=cmd_export)

    s = sub.add_parser("serve", help="HTTP API and web viewer for a run", description=cmd_serve.__doc__)
    s.add_argument("run", help="run folder (from cxr train); the training data is not needed")
    s.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--engine", default="auto", help="torch, onnx, onnx-int8 or auto (onnx when exported)")
    s.add_argument(
        "--api-key-file", help="file holding the API key required on /v1 routes (or set CXR_API_KEY)"
    )
    s.add_argument("--max-upload-mb", type=float, default=50.0, help="largest accepted file (default 50)")
    s.add_argument("--max-pixels", type=int, default=50_000_000, help="largest declared image size (pixels)")
    s.add_argument("--workers", type=int, default=1, help="inference threads (each runs a batch)")
    s.add_argument("--queue", type=int, default=32, help="requests that may wait; beyond: 503")
    s.add_argument("--max-batch", type=int, default=16, help="concurrent requests scored as one batch")
    add_modality_argument(s)
    s.set_defaults(func=cmd_serve)
