"""Where command-line flags meet the config dataclasses: a flag not given is None and never overrides.

Defaults live once, in the dataclasses (and the workflow functions' signatures); the CLI only says
which flags the user gave (timm's idiom) and shows the default in the help text by reading it.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from collections.abc import Callable
from typing import Any


def given(args: argparse.Namespace, **fields: str) -> dict[str, Any]:
    """``{field: value}`` for each ``field=flag_attribute`` the user gave (not None)."""
    return {
        field: getattr(args, attr) for field, attr in fields.items() if getattr(args, attr, None) is not None
    }


def default_of(owner: type | Callable, name: str) -> Any:
    """The default of dataclass field or function parameter ``name`` (what a flag not given means)."""
    if dataclasses.is_dataclass(owner):
        field = next(f for f in dataclasses.fields(owner) if f.name == name)
        return field.default
    return inspect.signature(owner).parameters[name].default


def with_default(text: str, owner: type | Callable, name: str) -> str:
    """Help text ending in "(default: VALUE)", VALUE read from where the default is written."""
    return f"{text} (default: {default_of(owner, name)})"


def add_device_argument(p: argparse.ArgumentParser) -> None:
    """``--device``: auto, cpu or cuda (None when not given: the callee's default, auto)."""
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), help="where to run the network (default: auto)"
    )


def add_modality_argument(p: argparse.ArgumentParser) -> None:
    """``--accept-missing-modality``: score DICOMs that carry no Modality tag (off: not assessable)."""
    p.add_argument(
        "--accept-missing-modality",
        action="store_true",
        help="score DICOMs without a Modality tag as radiographs (default: not assessable, since a CT "
        "slice with its Modality stripped must not be read as a chest X-ray)",
    )


def add_command(sub, name: str, func: Callable, help: str) -> argparse.ArgumentParser:
    """A subcommand whose description is ``func``'s docstring and that calls ``func``."""
    p = sub.add_parser(name, help=help, description=func.__doc__)
    p.set_defaults(func=func)
    return p


Flag = tuple[str, str, type, str]  # (--flag, config field, value type, help text without its default)


def add_config_flags(p: argparse.ArgumentParser, owner: type, flags: list[Flag]) -> None:
    """One ``--flag`` per config field, None when not given, the field's default in its help text."""
    for flag, field, kind, text in flags:
        p.add_argument(flag, type=kind, help=with_default(text, owner, field))


def fields_of(flags: list[Flag]) -> dict[str, str]:
    """``{config field: argparse attribute}`` of ``flags`` (for ``given``)."""
    return {field: flag.lstrip("-").replace("-", "_") for flag, field, _, _ in flags}
