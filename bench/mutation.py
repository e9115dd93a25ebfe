"""Mutation testing of cxrkit's pure core: does the suite notice a small deliberate bug?

Each mutant changes one operator or constant in one module (``<`` to ``<=``, ``+`` to ``-``, ``and``
to ``or``, ``-x`` to ``x``, ``n`` to ``n + 1``, ``True`` to ``False``, ...). The module's tests run
against it in a forked child that imports the mutated source in place of the file (nothing on disk
changes, so two children can run side by side); a failing, erroring or hanging test run *kills* the
mutant. Survivors are printed with their line: each is a missing test or an equivalent mutant.

    python bench/mutation.py                  # every target, two workers (about 15 min on 2 cores)
    python bench/mutation.py --only losses    # targets whose path contains "losses"
    python bench/mutation.py --list           # the mutants, without running anything

Not part of CI (too slow for 2 cores). A line marked ``# pragma: no mutate`` (or below a comment
``# pragma: no mutate (next line) -- why``) is skipped: for code where every change of an operator
or constant is equivalent by design; the comment says why.
"""

from __future__ import annotations

import argparse
import ast
import copy
import functools
import importlib.abc
import importlib.util
import os
import select
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"

FAST = ("-m", "not slow")  # pytest arguments: leave out the tests that train the shared phantom model
# (module file under src/cxrkit, functions to mutate or None for all, tests that guard it: the
# module's own tests first, so most mutants die in the first file)
TARGETS: list[tuple[str, tuple[str, ...] | None, tuple[str, ...]]] = [
    ("evaluate/metrics.py", None, ("tests/evaluate/test_metrics.py", "tests/evaluate")),
    ("evaluate/bootstrap.py", None, ("tests/evaluate/test_bootstrap.py", "tests/evaluate")),
    ("evaluate/calibration.py", None, ("tests/evaluate/test_calibration.py", "tests/evaluate")),
    ("evaluate/thresholds.py", None, ("tests/evaluate/test_thresholds.py", "tests/evaluate")),
    ("evaluate/baselines.py", None, ("tests/evaluate/test_baselines.py", "tests/evaluate")),
    ("evaluate/fairness.py", None, ("tests/evaluate/test_fairness.py", "tests/evaluate")),
    ("evaluate/triage.py", None, ("tests/evaluate/test_triage.py", "tests/evaluate")),
    ("data/splits.py", None, ("tests/data/test_splits.py",)),
    ("data/cache.py", ("cache_key", "cache_folder"), ("tests/data/test_cache.py",)),
    ("data/base.py", ("fingerprint",), ("tests/data/test_cache.py",)),  # the key's file part
    ("training/losses.py", None, ("tests/training/test_losses.py",)),
    ("explain/boxes.py", None, ("tests/explain/test_boxes.py",)),
    # decision logic outside the pure core: input checks, packaging, triage ordering, batching
    ("data/assess.py", None, ("tests/data/test_assess.py",)),
    ("run/inputs.py", ("split_array", "min_side", "prepare_items"), ("tests/run/test_input_shapes.py",)),
    ("run/package_check.py", None, ("tests/run/test_package_check.py",)),
    (
        "run/package.py",
        ("package_problem", "choose_operating_point", "degenerate_point_warnings"),
        ("tests/run/test_package.py", "tests/run/test_package_check.py"),
    ),
    ("serve/batcher.py", None, ("tests/serve/test_batcher.py",)),
    ("workflows/predict.py", ("predict_files", "summary_line"), (*FAST, "tests/workflows/test_unscored.py")),
    (
        "workflows/triage.py",
        ("triage", "_no_score"),
        (*FAST, "tests/workflows/test_unscored.py", "tests/cli/test_cli_refusals.py"),
    ),
]

COMPARE = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
BINARY = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult,
    ast.Pow: ast.Mult,
    ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd,
}
SYMBOL = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Pow: "**",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.And: "and",
    ast.Or: "or",
    ast.USub: "-",
    ast.Not: "not",
    ast.Invert: "~",
}


@dataclass(frozen=True)
class Mutant:
    """One change: the ``index``-th node of ``ast.walk`` order, changed as ``kind`` says."""

    target: str
    index: int
    kind: str
    arg: int
    line: int
    what: str


def _no_mutate(lines: list[str], lineno: int) -> bool:
    """A line marked ``# pragma: no mutate``, or one below a comment line that says so for the next line."""
    above = lines[lineno - 2].strip() if lineno > 1 else ""
    return "pragma: no mutate" in lines[lineno - 1] or (
        above.startswith("#") and "pragma: no mutate (next line)" in above
    )


def _skipped_nodes(tree: ast.AST, functions: tuple[str, ...] | None, lines: list[str]) -> set[int]:
    """ids of nodes never mutated: docstrings, f-strings, annotations, raise statements, other functions."""
    skip: set[int] = set()

    def drop(node: ast.AST | None) -> None:
        if node is not None:
            skip.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(getattr(first.value, "value", None), str):
            drop(first)
        if isinstance(node, (ast.JoinedStr, ast.Raise, ast.Assert)):
            drop(node)
        if isinstance(node, ast.arg):
            drop(node.annotation)
        if isinstance(node, ast.AnnAssign):
            drop(node.annotation)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            drop(node.returns)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for d in node.decorator_list:
                drop(d)
        lineno = getattr(node, "lineno", None)
        if lineno and _no_mutate(lines, lineno):
            drop(node)
    if functions is not None:
        inside: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in functions:
                inside.update(id(n) for n in ast.walk(node))
        skip.update(id(n) for n in ast.walk(tree) if id(n) not in inside)
    return skip


@functools.cache
def original_source(target: str) -> str:
    """A module's source as read once at the start: editing files during a run cannot shift mutants."""
    return (SRC / "cxrkit" / target).read_text()


def find_mutants(target: str, functions: tuple[str, ...] | None) -> list[Mutant]:
    """Every mutant of one module file, in a fixed order."""
    source = original_source(target)
    tree = ast.parse(source)
    skip = _skipped_nodes(tree, functions, source.splitlines())
    out = []
    for index, node in enumerate(ast.walk(tree)):
        if id(node) in skip:
            continue
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Compare):
            for k, op in enumerate(node.ops):
                if type(op) in COMPARE:
                    what = f"{SYMBOL[type(op)]} -> {SYMBOL[COMPARE[type(op)]]}"
                    out.append(Mutant(target, index, "compare", k, line, what))
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in BINARY:
            new = BINARY[type(node.op)]
            out.append(Mutant(target, index, "binop", 0, line, f"{SYMBOL[type(node.op)]} -> {SYMBOL[new]}"))
        elif isinstance(node, ast.BoolOp):
            new = ast.Or if isinstance(node.op, ast.And) else ast.And
            out.append(Mutant(target, index, "boolop", 0, line, f"{SYMBOL[type(node.op)]} -> {SYMBOL[new]}"))
        elif isinstance(node, ast.UnaryOp) and type(node.op) in (ast.USub, ast.Not, ast.Invert):
            out.append(Mutant(target, index, "unary", 0, line, f"drop {SYMBOL[type(node.op)]}"))
        elif isinstance(node, ast.Constant) and not isinstance(node.value, (str, bytes)):
            v = node.value
            if isinstance(v, bool):
                out.append(Mutant(target, index, "const", 0, line, f"{v} -> {not v}"))
            elif isinstance(v, (int, float)):
                out.append(Mutant(target, index, "const", 0, line, f"{v!r} -> {v + 1!r}"))
    return out


def mutated_source(m: Mutant) -> str:
    """The module's source with mutant ``m`` applied."""
    tree = ast.parse(original_source(m.target))
    nodes = list(ast.walk(tree))
    node = nodes[m.index]
    if m.kind == "compare":
        node.ops[m.arg] = COMPARE[type(node.ops[m.arg])]()
    elif m.kind == "binop":
        node.op = BINARY[type(node.op)]()
    elif m.kind == "boolop":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif m.kind == "const":
        node.value = (not node.value) if isinstance(node.value, bool) else node.value + 1
    elif m.kind == "unary":
        _replace(nodes, node, copy.deepcopy(node.operand))
    return ast.unparse(ast.fix_missing_locations(tree))


def _replace(nodes: list[ast.AST], old: ast.AST, new: ast.AST) -> None:
    """Put ``new`` where ``old`` is in its parent."""
    for parent in nodes:
        for field, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, field, new)
                return
            if isinstance(value, list) and any(v is old for v in value):
                value[next(i for i, v in enumerate(value) if v is old)] = new
                return
    raise RuntimeError("node without a parent")


class _MutatedModule(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves the mutated source for one module name; everything else imports normally."""

    def __init__(self, name: str, path: Path, source: str) -> None:
        self.name, self.path, self.source = name, path, source

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        return importlib.util.spec_from_file_location(fullname, self.path, loader=self)

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        exec(compile(self.source, str(self.path), "exec"), module.__dict__)


def _child(target: str, source: str | None, tests: tuple[str, ...]) -> None:
    """In the forked child: install the mutant, run the tests quietly, exit with pytest's code."""
    import pytest

    os.chdir(REPO)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    if source is not None:
        name = "cxrkit." + target.removesuffix(".py").replace("/", ".")
        sys.meta_path.insert(0, _MutatedModule(name, SRC / "cxrkit" / target, source))
    args = ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--timeout=0", *tests]
    os._exit(int(pytest.main(args)))


def _spawn(target: str, source: str | None, tests: tuple[str, ...]) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            _child(target, source, tests)
        finally:
            os._exit(99)
    return pid


def run_all(mutants: list[Mutant], tests_of: dict[str, tuple[str, ...]], jobs: int, limit: dict) -> dict:
    """Run every mutant (``jobs`` at a time); map each to "killed", "timeout" or "survived"."""
    todo = list(mutants)
    running: dict[int, tuple[Mutant, float]] = {}
    result: dict[Mutant, str] = {}
    done = 0
    while todo or running:
        while todo and len(running) < jobs:
            m = todo.pop(0)
            running[_spawn(m.target, mutated_source(m), tests_of[m.target])] = (m, time.monotonic())
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            for p, (m, t0) in list(running.items()):
                if time.monotonic() - t0 > limit[m.target]:
                    os.kill(p, signal.SIGKILL)
                    os.waitpid(p, 0)
                    result[m] = "timeout"
                    del running[p]
            select.select([], [], [], 0.05)
            continue
        if pid not in running:
            continue
        m, _ = running.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        result[m] = "survived" if code == 0 else "killed"
        if code == 0:
            print(f"  survived {m.target}:{m.line} {m.what}", file=sys.stderr, flush=True)
        done += 1
        if done % 25 == 0:
            print(f"  {len(result)}/{len(mutants)} run", file=sys.stderr, flush=True)
    return result


def baseline(target: str, tests: tuple[str, ...]) -> float:
    """Seconds the unmutated tests take; they must pass, or no mutant result means anything."""
    t0 = time.monotonic()
    _, status = os.waitpid(_spawn(target, None, tests), 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"the tests {' '.join(tests)} fail without any mutant: fix them first")
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    """Mutate, test, print the score per module and every surviving mutant."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="targets whose path contains this text (several: comma-separated)")
    ap.add_argument("--jobs", type=int, default=2, help="mutants tested at once (default 2)")
    ap.add_argument("--list", action="store_true", help="list the mutants and stop")
    args = ap.parse_args(argv)
    only = args.only.split(",") if args.only else []
    targets = [t for t in TARGETS if not only or any(o in t[0] for o in only)]
    mutants = [m for path, funcs, _ in targets for m in find_mutants(path, funcs)]
    lines = {path: original_source(path).splitlines() for path, _, _ in targets}
    if args.list:
        for m in mutants:
            print(f"{m.target}:{m.line}  {m.what:16s} {lines[m.target][m.line - 1].strip()}")
        print(f"{len(mutants)} mutants")
        return 0
    # heavy libraries load once in the parent; cxrkit must not, so each child imports its mutant
    import hypothesis.strategies  # noqa: F401
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import pytest  # noqa: F401
    import pytest_timeout  # noqa: F401
    import scipy.ndimage  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import torch  # noqa: F401

    assert not any(k.startswith("cxrkit") for k in sys.modules), "cxrkit imported before forking"
    tests_of = {path: tests for path, _, tests in targets}
    limit = {}
    for path, _, tests in targets:
        limit[path] = 10 + 4 * baseline(path, tests)
    t0 = time.monotonic()
    print(f"{len(mutants)} mutants in {len(targets)} modules, {args.jobs} at a time", file=sys.stderr)
    result = run_all(mutants, tests_of, args.jobs, limit)
    print(f"\n{'module':28s} {'mutants':>8s} {'killed':>7s} {'survived':>9s} {'score':>7s}")
    total_killed = 0
    for path, _, _ in targets:
        mine = [m for m in mutants if m.target == path]
        killed = sum(result[m] != "survived" for m in mine)
        total_killed += killed
        score = f"{100 * killed / len(mine):.1f}%" if mine else "-"
        print(f"{path:28s} {len(mine):8d} {killed:7d} {len(mine) - killed:9d} {score:>7s}")
    score = 100 * total_killed / max(len(mutants), 1)
    print(f"{'all':28s} {len(mutants):8d} {total_killed:7d} {len(mutants) - total_killed:9d} {score:6.1f}%")
    timeouts = sum(r == "timeout" for r in result.values())
    print(f"({timeouts} killed by the time limit; {time.monotonic() - t0:.0f} s)")
    survivors = [m for m in mutants if result[m] == "survived"]
    if survivors:
        print("\nsurviving mutants:")
        for m in survivors:
            print(f"  {m.target}:{m.line}  {m.what:16s} {lines[m.target][m.line - 1].strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
