"""``cxr dicom-node`` and ``cxr worklist``: parse, build the NodeConfig, call; nothing else."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cxrkit.cli.options import add_command

NODE_EXTRA = (
    'the DICOM node needs its extra: pip install -e ".[node]" (pynetdicom, highdicom, dicomweb-client)'
)


def cmd_dicom_node(args: argparse.Namespace) -> int:
    """Listen for DICOM (C-ECHO, C-STORE), score each frontal CR/DX with RUN, and send a DICOM SR
    (TID 1500) and a Secondary Capture with the heatmap back to --return-to (or by STOW-RS to
    --return-to-dicomweb). Everything received is kept in STATE/worklist.sqlite (cxr worklist STATE)."""
    try:
        import highdicom  # noqa: F401
        import pynetdicom  # noqa: F401
    except ImportError:
        raise ImportError(NODE_EXTRA) from None
    from cxrkit.data.decode import opencv

    opencv()  # a bad CXRKIT_OPENCV stops the start in one line, not every study later
    from cxrkit.dicom.net import parse_peer
    from cxrkit.dicom.node import Node, NodeConfig
    from cxrkit.run.model import RunModel

    cfg = NodeConfig(
        ae_title=args.ae_title,
        host=args.host,
        port=args.port,
        state=Path(args.state),
        return_to=parse_peer(args.return_to) if args.return_to else None,
        return_to_dicomweb=args.return_to_dicomweb,
        pull=parse_peer(args.pull) if args.pull else None,
        pull_interval_s=args.pull_interval,
        batch=args.batch,
        secondary_capture=not args.no_secondary_capture,
    )
    if cfg.return_to is None and cfg.return_to_dicomweb is None:
        raise ValueError(
            "give a destination for the results: --return-to AET@HOST:PORT or --return-to-dicomweb URL"
        )
    if not 0 < len(cfg.ae_title) <= 16:
        raise ValueError(f"--ae-title {cfg.ae_title!r}: 1 to 16 characters")
    run = RunModel.load(args.run, args.device, args.engine)
    Node(run, cfg, log=lambda m: print(m, file=sys.stderr, flush=True)).serve_forever()
    return 0


def cmd_worklist(args: argparse.Namespace) -> int:
    """Print (or --csv) the node's worklist from STATE_DIR, most urgent first: studies not assessable
    or out of distribution, then flagged abnormal, then the rest; patient names never shown."""
    import pandas as pd

    from cxrkit.dicom.worklist import worklist_frame

    frame = worklist_frame(args.state, args.flagged, args.show_patient_id)
    if args.csv:
        from cxrkit.outputs import write_csv

        write_csv(Path(args.csv), frame, index=False)
        print(f"{len(frame)} rows -> {args.csv}", file=sys.stderr)
        return 0
    if frame.empty:
        print("the worklist is empty" + (" (nothing flagged)" if args.flagged else ""))
        return 0
    shown = frame.drop(columns=["study_uid", "sop_uid"]).copy()
    shown["score"] = shown["score"].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
    shown["reason"] = shown["reason"].str.slice(0, 70)
    print(shown.to_string(index=False))
    return 0


def add_dicom_commands(sub) -> None:
    """Register dicom-node and worklist on the ``cxr`` subparsers."""
    p = add_command(sub, "dicom-node", cmd_dicom_node, "DICOM node: PACS in, SR + Secondary Capture back")
    p.add_argument("run", help="run folder (from cxr train)")
    p.add_argument("--ae-title", default="CXRKIT", help="the node's AE title (default CXRKIT)")
    p.add_argument(
        "--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0: every interface)"
    )
    p.add_argument("--port", type=int, default=11112, help="DICOM port (default 11112)")
    p.add_argument(
        "--return-to", metavar="AET@HOST:PORT", help="where results are sent by C-STORE (the PACS)"
    )
    p.add_argument(
        "--return-to-dicomweb", metavar="URL", help="or send results by STOW-RS to this DICOMweb root"
    )
    p.add_argument(
        "--pull",
        metavar="AET@HOST:PORT",
        help="also poll this PACS (C-FIND) and C-MOVE new CR/DX studies here",
    )
    p.add_argument("--pull-interval", type=float, default=30.0, help="seconds between polls (default 30)")
    p.add_argument(
        "--state", default="cxr-node", help="state folder: inbox, outbox, worklist.sqlite (cxr-node)"
    )
    p.add_argument("--batch", type=int, default=16, help="instances scored together (default 16)")
    p.add_argument("--no-secondary-capture", action="store_true", help="send the SR only (no heatmap image)")
    p.add_argument(
        "--engine",
        default="torch",
        help="torch, onnx, onnx-int8, openvino, openvino-int8 or auto (default torch)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    w = add_command(sub, "worklist", cmd_worklist, "a DICOM node's worklist, most urgent first")
    w.add_argument("state", help="the node's --state folder")
    w.add_argument(
        "--flagged", action="store_true", help="only studies to read first (flagged or unassessed)"
    )
    w.add_argument("--csv", help="write the worklist to this CSV instead of printing it")
    w.add_argument("--show-patient-id", action="store_true", help="add the PatientID column")
