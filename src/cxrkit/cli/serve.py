"""``cxr serve``: parse, build the ServeConfig, call; nothing else."""

from __future__ import annotations

import argparse

from cxrkit.cli.options import add_modality_argument, given, with_default
from cxrkit.config import ServeConfig

FLAGS = {  # ServeConfig field -> flag attribute
    "host": "host",
    "port": "port",
    "engine": "engine",
    "api_key_file": "api_key_file",
    "max_upload_mb": "max_upload_mb",
    "max_pixels": "max_pixels",
    "workers": "workers",
    "queue": "queue",
    "max_batch": "max_batch",
}


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve RUN over HTTP: /v1/predict, /v1/predict/batch, /v1/model, /health, /metrics and a viewer at /."""
    from cxrkit.serve.server import serve

    cfg = ServeConfig(**given(args, **FLAGS), accept_missing_modality=args.accept_missing_modality)
    serve(args.run, cfg)
    return 0


def add_serve_commands(sub) -> None:
    """Register serve on the ``cxr`` subparsers."""
    s = sub.add_parser("serve", help="HTTP API and web viewer for a run", description=cmd_serve.__doc__)
    s.add_argument("run", help="run folder (from cxr train); the training data is not needed")
    s.add_argument(
        "--host", help=with_default("address to bind (this machine only by default)", ServeConfig, "host")
    )
    s.add_argument("--port", type=int, help=with_default("port", ServeConfig, "port"))
    s.add_argument(
        "--engine",
        help=with_default("torch, onnx, onnx-int8 or auto (onnx when exported)", ServeConfig, "engine"),
    )
    s.add_argument(
        "--api-key-file", help="file holding the API key required on /v1 routes (or set CXR_API_KEY)"
    )
    s.add_argument(
        "--max-upload-mb",
        type=float,
        help=with_default("largest accepted file", ServeConfig, "max_upload_mb"),
    )
    s.add_argument(
        "--max-pixels",
        type=int,
        help=with_default("largest declared image (pixels)", ServeConfig, "max_pixels"),
    )
    s.add_argument(
        "--workers",
        type=int,
        help=with_default("inference threads (each runs a batch)", ServeConfig, "workers"),
    )
    s.add_argument(
        "--queue", type=int, help=with_default("requests that may wait; beyond: 503", ServeConfig, "queue")
    )
    s.add_argument(
        "--max-batch",
        type=int,
        help=with_default("concurrent requests scored as one batch", ServeConfig, "max_batch"),
    )
    add_modality_argument(s)
    s.set_defaults(func=cmd_serve)
