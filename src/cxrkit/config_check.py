"""Config checking: values coerced to their dataclass field types, and strict, one-line-error YAML.

The rules (also in config.py's docstring): an int is an integer or a string of digits; a float a
finite number or a numeric string ("1e-3": YAML 1.1 reads it as text); a bool true/false, 1/0 or
the strings true/false, yes/no, on/off, 1/0 in any case; a str a string (a YAML number or date
kept exactly as written: ``1.10``, ``010``, ``1:30`` stay those characters); a tuple of str a list or
one comma-separated string; ``X | None`` null or an X. Anything else is refused with the key, the value
and the expected type. YAML aliases are limited (``MAX_YAML_ALIASES``, ``MAX_YAML_VALUES`` once
expanded), so a small "billion laughs" file is refused at once instead of filling memory.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import numbers
import re
import reprlib
import typing
from pathlib import Path
from typing import Any

import yaml

MAX_CONFIG_BYTES = 10 * 2**20  # a config larger than this is not a config
MAX_YAML_ALIASES = 100  # real configs use none
MAX_YAML_VALUES = 100_000  # values a document may expand to through its aliases

_BAD = object()  # "cannot coerce" (None and False are valid results)
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _as_int(v: Any) -> Any:
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return int(v)
    if isinstance(v, str) and _INT.fullmatch(v.strip()):
        return int(v.strip())
    return _BAD


def _as_float(v: Any) -> Any:
    try:
        if isinstance(v, numbers.Real) and not isinstance(v, bool):
            out = float(v)
        elif isinstance(v, str) and _FLOAT.fullmatch(v.strip()):
            out = float(v.strip())
        else:
            return _BAD
    except OverflowError:  # an integer beyond any float
        return _BAD
    return out if math.isfinite(out) else _BAD


def _as_bool(v: Any) -> Any:
    if isinstance(v, bool):
        return v
    if isinstance(v, numbers.Integral) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in _TRUE | _FALSE:
        return v.strip().lower() in _TRUE
    return _BAD


class _WrittenInt(int):
    """A YAML integer whose text differs from ``str()`` of it (``010``, ``1_000``, ``1:30``)."""

    written: str


class _WrittenFloat(float):
    """A YAML float whose text differs from ``str()`` of it (``1.10``, ``1.0e-3``, ``.5``)."""

    written: str


def _as_str(v: Any) -> Any:
    if isinstance(v, str):
        return v
    if isinstance(getattr(v, "written", None), str):
        return v.written
    if isinstance(v, (numbers.Real, datetime.date)) and not isinstance(v, bool):
        return str(v)
    return _BAD


_SCALARS = {
    int: (_as_int, "an integer"),
    float: (_as_float, "a finite number"),
    bool: (_as_bool, "true or false"),
    str: (_as_str, "a string"),
}
_GENERIC_EXAMPLE = {int: "64", float: "0.5", bool: "true", str: "text"}


def yaml_example(default: Any, hint: Any) -> str:
    """A default written as in YAML, for the e.g. of an error message."""
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, tuple):
        return "[" + ", ".join(default) + "]" if default else "[A, B]"
    if default is None or default == "" or default is dataclasses.MISSING:
        inner = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
        return _GENERIC_EXAMPLE.get(inner[0], "text")
    return str(default)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple, _REPR.maxset = 3, 4, 6, 6, 6
_REPR.maxstring, _REPR.maxlong, _REPR.maxother = 200, 200, 200


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to 60 characters, without ever walking a huge or deeply nested value."""
    text = _REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def coerce_value(value: Any, hint: Any, key: str, example: str = "") -> Any:
    """``value`` as the annotation ``hint`` says (int, float, bool, str, tuple[str, ...], X | None).

    ``key`` (``train.epochs``) names it in the ValueError raised when it cannot be coerced.
    """
    leaf = key.rpartition(".")[2]
    eg = f", e.g. {leaf}: {example}" if example else ""
    args = typing.get_args(hint)
    if type(None) in args:
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return coerce_value(value, inner, key, example)
    name = getattr(hint, "__name__", str(hint))
    if value is None:
        raise ValueError(f"{key}: empty value (expected {name}{eg})")
    if typing.get_origin(hint) is tuple:
        if isinstance(value, str):
            items: list = [s.strip() for s in value.split(",") if s.strip()]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ValueError(f"{key}: {short_repr(value)} is not a list (expected a list of strings{eg})")
        return tuple(coerce_value(v, str, f"{key}[{k}]") for k, v in enumerate(items))
    coerce, what = _SCALARS[hint]
    out = coerce(value)
    if out is _BAD:
        why = (
            "; YAML reads unquoted yes/no/on/off as booleans: quote it"
            if isinstance(value, bool) and hint is str
            else ""
        )
        raise ValueError(f"{key}: {short_repr(value)} is not {what} (expected {name}{eg}{why})")
    return out


def type_check(cfg: Any, section: str) -> None:
    """Coerce every field of the (frozen) dataclass ``cfg`` in place to its annotated type, or refuse."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        if dataclasses.is_dataclass(hints[f.name]):
            if not isinstance(getattr(cfg, f.name), hints[f.name]):
                raise ValueError(
                    f"{f.name}: expected a {hints[f.name].__name__}, got {short_repr(getattr(cfg, f.name))}"
                )
            continue
        key = f"{section}.{f.name}" if section else f.name
        value = coerce_value(getattr(cfg, f.name), hints[f.name], key, yaml_example(f.default, hints[f.name]))
        object.__setattr__(cfg, f.name, value)


class _TooBig(yaml.YAMLError):
    """A document whose aliases would expand beyond the limits (reported without a line)."""


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses duplicate keys (it would keep the last one, silently), limits
    aliases and keeps the text of numbers and dates that ``str()`` would write differently.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
        return super().compose_node(parent, index)

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if self.aliases > MAX_YAML_ALIASES:
            raise _TooBig(f"too many YAML aliases ({self.aliases:,}, at most {MAX_YAML_ALIASES})")
        if self.aliases and node is not None:
            n = _expanded_size(node, {})
            if n > MAX_YAML_VALUES:
                raise _TooBig(f"YAML aliases expand to {n:,} values (at most {MAX_YAML_VALUES:,})")
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {key_node.value!r} (first on line {seen[key_node.value]})",
                        key_node.start_mark,
                    )
                seen[key_node.value] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)

    def construct_written_int(self, node: yaml.ScalarNode) -> int:
        value = self.construct_yaml_int(node)
        return value if str(value) == node.value else _written(_WrittenInt(value), node.value)

    def construct_written_float(self, node: yaml.ScalarNode) -> float:
        value = self.construct_yaml_float(node)
        return value if str(value) == node.value else _written(_WrittenFloat(value), node.value)

    def construct_written_timestamp(self, node: yaml.ScalarNode) -> str:
        self.construct_yaml_timestamp(node)  # an impossible date (2024-13-45) is still an error
        return node.value  # no field takes a date: it is text, as written


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_written_int)
_StrictLoader.add_constructor("tag:yaml.org,2002:float", _StrictLoader.construct_written_float)
_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _StrictLoader.construct_written_timestamp)


def _written(value: Any, text: str) -> Any:
    value.written = text
    return value


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many values ``node`` stands for once every alias is expanded (each alias as a full copy)."""
    key = id(node)
    if key not in memo:
        memo[key] = 1  # a node that contains itself counts once
        if isinstance(node, yaml.SequenceNode):
            memo[key] = 1 + sum(_expanded_size(child, memo) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            memo[key] = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    return memo[key]


def _yaml_error(where: str, err: yaml.YAMLError, marks: bool = True) -> str:
    """One line naming the file (or override), line and column of a YAML error."""
    mark = getattr(err, "problem_mark", None) if marks else None
    problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
    context = getattr(err, "context", None)
    if context:
        problem = f"{context}{',' if problem.startswith('but ') else ':'} {problem}"
    tag = re.search(r"constructor for the tag '([^']+)'", problem)
    if tag:
        name = tag.group(1).replace("tag:yaml.org,2002:", "!!")
        at = f"{where}:{mark.line + 1}" if mark else where
        return f"{at}: unsupported YAML tag {name} (only plain YAML is read)"
    at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
    kind = "YAML error" if problem.startswith("duplicate key") else "YAML syntax error"
    return f"{at}: {kind}: {problem}"


def parse_yaml(text: str, where: str, marks: bool = True) -> Any:
    """Plain YAML ``text`` as Python values; one-line errors name ``where`` (and the line: ``marks``)."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: plain YAML only
    except _TooBig as err:
        raise ValueError(f"{where}: {err}") from None
    except yaml.YAMLError as err:
        raise ValueError(_yaml_error(where, err, marks)) from None
    except RecursionError:
        raise ValueError(f"{where}: YAML nested too deeply") from None
    except ValueError as err:  # e.g. an impossible date such as 2024-13-45
        raise ValueError(f"{where}: YAML value error: {err}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; one-line errors name the file (and line) of any problem."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} not found")
    if path.is_dir():
        raise ValueError(f"config file {path} is a folder: expected a YAML file")
    with path.open("rb") as fh:
        raw = fh.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ValueError(
            f"config file {path} is over {MAX_CONFIG_BYTES // 2**20} MiB: expected a small YAML file"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a UTF-8 text file (byte {err.start}): expected a YAML file") from None
    doc = parse_yaml(text, str(path))
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a YAML mapping at the top level, got {type(doc).__name__}")
    return doc
