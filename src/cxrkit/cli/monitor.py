"""``cxr monitor``: drift of a deployed run's inputs from its monitor log; exit 3 on an alarm."""

from __future__ import annotations

import argparse

from cxrkit.cli.options import add_command

ALARM_EXIT = 3  # the last window alarmed: a cron job can page someone on it


def cmd_monitor(args: argparse.Namespace) -> int:
    """Compare each window of DIR/monitor.jsonl (from --monitor DIR) with RUN's validation images.

    Writes monitor.csv and monitor.html (to --out, default DIR); exits 3 when the last window alarms.
    """
    from cxrkit.workflows.monitor import monitor_run

    frame, _ = monitor_run(args.run, args.dir, args.window, args.out)
    return ALARM_EXIT if bool(frame["alarm"].iloc[-1]) else 0


def add_monitor_commands(sub) -> None:
    """Register monitor on the ``cxr`` subparsers."""
    p = add_command(sub, "monitor", cmd_monitor, "drift of a deployed run's inputs (exit 3: alarm)")
    p.add_argument("run", help="run folder whose predictions were logged")
    p.add_argument("dir", help="folder holding monitor.jsonl (cxr predict/serve --monitor DIR)")
    p.add_argument(
        "--window", default="200", help="studies per window (200) or a period (1d, 12h, 30m); default 200"
    )
    p.add_argument("--out", help="where monitor.csv/html go (default: DIR)")
