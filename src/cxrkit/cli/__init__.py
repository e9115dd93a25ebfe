"""The ``cxr`` command: one thin module per command group (parse -> config -> call); this one wires them."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from cxrkit import __version__

log = logging.getLogger("cxrkit")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``cxr`` and its subcommands."""
    from cxrkit.cli.data import add_data_commands
    from cxrkit.cli.dicom import add_dicom_commands
    from cxrkit.cli.evaluate import add_eval_commands
    from cxrkit.cli.explain import add_explain_commands
    from cxrkit.cli.export import add_export_commands
    from cxrkit.cli.feedback import add_feedback_commands
    from cxrkit.cli.monitor import add_monitor_commands
    from cxrkit.cli.predict import add_predict_commands
    from cxrkit.cli.serve import add_serve_commands
    from cxrkit.cli.train import add_train_commands
    from cxrkit.cli.validate import add_validate_commands

    parser = argparse.ArgumentParser(prog="cxr", description="cxrkit: chest X-ray classification toolkit")
    parser.add_argument("--version", action="version", version=f"cxrkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_train_commands(sub)
    add_data_commands(sub)
    add_predict_commands(sub)
    add_eval_commands(sub)
    add_validate_commands(sub)
    add_monitor_commands(sub)
    add_explain_commands(sub)
    add_export_commands(sub)
    add_serve_commands(sub)
    add_feedback_commands(sub)
    add_dicom_commands(sub)
    return parser


# an optional package a command imports -> the extra of pyproject.toml that installs it
EXTRAS = {
    "fastapi": "serve",
    "uvicorn": "serve",
    "multipart": "serve",
    "onnx": "serve",
    "onnxruntime": "serve",
    "httpx": "serve",
    "pynetdicom": "node",
    "highdicom": "node",
    "dicomweb_client": "node",
    "pylibjpeg": "dicom",
    "transformers": "raddino",
    "openvino": "openvino",
    "nncf": "openvino",
    "ray": "ray",  # cxr predict --ray
    "pyarrow": "ray",  # cxr predict --shards --format parquet
}


def missing_extra(err: BaseException) -> BaseException:
    """A missing optional package as one line naming the extra that installs it (else ``err``)."""
    name = (getattr(err, "name", None) or "").split(".")[0] if isinstance(err, ModuleNotFoundError) else ""
    if name not in EXTRAS:
        return err
    extra = EXTRAS[name]
    return ModuleNotFoundError(
        f'this needs the optional package {name!r}: pip install -e ".[{extra}]" '
        f"(or pip install 'cxrkit[{extra}]')"
    )


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a message comes (tests and notebooks swap it)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler.__init__ assigns one: ignored
        pass


def _configure_logging(verbose: bool) -> None:
    """cxrkit's own messages to stderr as ``cxr: ...``; other libraries' logging is left alone."""
    if not any(getattr(h, "_cxr", False) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("cxr: %(message)s"))
        handler._cxr = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (``kill``, a scheduler's stop) ends a command like Ctrl-C: a clean stop, checkpoints kept."""
    raise KeyboardInterrupt


def _one_line(err: BaseException) -> str:
    """An exception as one line: its message (the first line when several), else its type."""
    text = str(err).strip() or type(err).__name__
    if isinstance(err, OSError) and err.filename and str(err.filename) not in text:
        text = f"{err.filename}: {err.strerror or text}"
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        text = err.args[0]
    first = text.splitlines()[0]
    return first if first == text else first + " ..."


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``cxr``: every error is one line on stderr and a non-zero exit (``--debug``: traceback).

    Exit status: 2 for a known problem with the input (bad file, config, data), 1 for anything else.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere, as the error hint says "run again with --debug"
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.debug = debug
    if extra:  # SECTION.KEY=VALUE overrides may also come after options
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _configure_logging(args.verbose)
    from cxrkit.data.cache import CacheError
    from cxrkit.data.decode import ImageReadError

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"cxr {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.debug:
            raise
        err = missing_extra(err)
        known = isinstance(err, (OSError, ValueError, ImageReadError, CacheError, KeyError, ImportError))
        kind = "error" if known else f"internal error ({type(err).__name__})"
        hint = "" if known else " -- run again with --debug for the traceback"
        print(f"cxr {args.command}: {kind}: {_one_line(err)}{hint}", file=sys.stderr)
        return 2 if known else 1
    finally:
        if previous is not None:  # main() called from Python (tests, notebooks) leaves no handler behind
            signal.signal(signal.SIGTERM, previous)
