"""The ``cxr`` command: one thin module per command group (parse -> config -> call); this one wires them."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cxrkit import __version__

log = logging.getLogger("cxrkit")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``cxr`` and its subcommands."""
    from cxrkit.cli.data import add_data_commands
    from cxrkit.cli.evaluate import add_eval_commands
    from cxrkit.cli.explain import add_explain_commands
    from cxrkit.cli.export import add_export_commands
    from cxrkit.cli.predict import add_predict_commands
    from cxrkit.cli.train import add_train_commands

    parser = argparse.ArgumentParser(prog="cxr", description="cxrkit: chest X-ray classification toolkit")
    parser.add_argument("--version", action="version", version=f"cxrkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_train_commands(sub)
    add_data_commands(sub)
    add_predict_commands(sub)
    add_eval_commands(sub)
    add_explain_commands(sub)
    add_export_commands(sub)
    return parser


def _configure_logging(verbose: bool) -> None:
    """cxrkit's own messages to stderr as ``cxr: ...``; other libraries' logging is left alone."""
    if not any(getattr(h, "_cxr", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("cxr: %(message)s"))
        handler._cxr = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cxr``: known errors become one line on stderr and exit status 2."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # SECTION.KEY=VALUE overrides may also come after options
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _configure_logging(args.verbose)
    from cxrkit.data.cache import CacheError
    from cxrkit.data.decode import ImageReadError

    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, ImageReadError, CacheError, KeyError) as err:
        print(f"cxr {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cxr {args.command}: interrupted", file=sys.stderr)
        return 130
