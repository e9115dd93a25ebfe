"""``cxr serve``: parse, build the ServeConfig, call; nothing else."""

from __future__ import annotations

import argparse

from cxrkit.cli.options import Flag, add_config_flags, add_modality_argument, fields_of, given
from cxrkit.config import ServeConfig

FLAGS: list[Flag] = [
    ("--host", "host", str, "address to bind (this machine only by default)"),
    ("--port", "port", int, "port"),
    (
        "--engine",
        "engine",
        str,
        "torch, onnx, onnx-int8, openvino, openvino-int8 or auto (onnx when exported)",
    ),
    ("--max-upload-mb", "max_upload_mb", float, "largest accepted file"),
    ("--max-pixels", "max_pixels", int, "largest declared image (pixels)"),
    ("--workers", "workers", int, "inference threads (each runs a batch)"),
    ("--queue", "queue", int, "requests that may wait; beyond: 503"),
    ("--max-batch", "max_batch", int, "concurrent requests scored as one batch"),
    ("--monitor", "monitor", str, "folder: log every scored study to its monitor.jsonl (cxr monitor)"),
    ("--monitor-window", "monitor_window", int, "studies behind the /metrics drift gauges"),
    ("--feedback", "feedback", str, "SQLite file: keep predictions and readers' verdicts (off by default)"),
    ("--keep-images", "keep_images", str, "folder: keep uploads (by hash) so feedback can become labels"),
    ("--reader", "reader", str, "reader name stored with feedback (a one-reader deployment)"),
    ("--reader-header", "reader_header", str, "header naming the reader, set by your authenticating proxy"),
]


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve RUN over HTTP: /v1/predict, /v1/predict/batch, /v1/model, /health, /metrics and a viewer at /."""
    from cxrkit.data.decode import opencv
    from cxrkit.serve.server import serve

    opencv()  # a bad CXRKIT_OPENCV stops the start in one line, not every upload later
    opts = given(args, api_key_file="api_key_file", **fields_of(FLAGS))
    cfg = ServeConfig(
        **opts,
        accept_missing_modality=args.accept_missing_modality,
        show_patient_id=args.show_patient_id,
    )
    serve(args.run, cfg)
    return 0


def add_serve_commands(sub) -> None:
    """Register serve on the ``cxr`` subparsers."""
    s = sub.add_parser("serve", help="HTTP API and web viewer for a run", description=cmd_serve.__doc__)
    s.add_argument("run", help="run folder (from cxr train); the training data is not needed")
    add_config_flags(s, ServeConfig, FLAGS)
    s.add_argument(
        "--api-key-file", help="file holding the API key required on /v1 routes (or set CXR_API_KEY)"
    )
    s.add_argument(
        "--show-patient-id",
        action="store_true",
        help="the viewer's header panel shows the patient's name and ID (hidden by default)",
    )
    add_modality_argument(s)
    s.set_defaults(func=cmd_serve)
