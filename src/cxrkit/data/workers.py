"""Worker processes that never outlive their parent, and whether another process is still running.

``run_workers`` starts N processes on one function and waits for them while the main thread stays
interruptible: Ctrl-C, SIGTERM or any error in the parent kills every worker at once, a worker
that dies or fails stops the others and becomes one clear exception, and each worker asks Linux to
SIGKILL it when its parent dies (``prctl(PR_SET_PDEATHSIG)``), so even a SIGKILLed parent leaves
no orphan; elsewhere (and for the instant before ``prctl``) a thread ends it when the parent's
sentinel pipe closes. Workers leave Ctrl-C to the parent: a terminal sends it to the whole group.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import multiprocessing
import os
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

PR_SET_PDEATHSIG = 1  # linux/prctl.h
MESSAGE_CHARS = 800  # text per message: pickled it stays under PIPE_BUF, so each pipe write is atomic
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # a worker ended by these was stopped, not broken


class WorkerCrash(RuntimeError):
    """A worker raised an exception; the message is its last line, then the worker's traceback."""


@dataclass
class Outbox:
    """A worker's line to its parent: one pipe shared by all workers, one lock so messages never mix."""

    conn: Connection
    lock: Any  # multiprocessing.Lock (its class is not importable as a type)

    def send(self, kind: str, payload: Any) -> None:
        """Send ``(kind, payload)``; blocks while the pipe is full until the parent reads."""
        with self.lock:
            self.conn.send((kind, payload))


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Linux: have the kernel send ``sig`` to this process when its parent dies; False where unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent() -> None:
    """Make this worker end with its parent (SIGKILL included) and leave Ctrl-C and SIGTERM handling to it.

    Called first in every worker: SIGINT is ignored (the parent stops the workers), SIGTERM ends the
    worker quietly (not through a handler inherited by ``fork``, which would print a traceback).
    """
    for sig, action in ((signal.SIGINT, signal.SIG_IGN), (signal.SIGTERM, signal.SIG_DFL)):
        with contextlib.suppress(ValueError, OSError):  # ValueError: not this process's main thread
            signal.signal(sig, action)
    set_parent_death_signal()
    parent = multiprocessing.parent_process()
    try:
        sentinel = parent.sentinel if parent is not None else None
    except ValueError:
        sentinel = None
    if sentinel is not None:  # the fallback: its pipe closes when the parent process is gone
        threading.Thread(
            target=_exit_when_closed, args=(sentinel,), name="cxr-parent-watch", daemon=True
        ).start()


def _exit_when_closed(sentinel: int) -> None:
    wait([sentinel])
    os._exit(1)


def _worker_main(target: Callable[..., None], outbox: Outbox, args: tuple) -> None:
    """Run ``target(outbox, *args)`` in a worker; an exception becomes a ``crash`` message and exit 1."""
    die_with_parent()
    try:
        target(outbox, *args)
    except BaseException:  # any failure is reported to the parent, never printed here
        outbox.send("crash", traceback.format_exc()[-MESSAGE_CHARS:])
        raise SystemExit(1) from None


def run_workers(
    target: Callable[..., None],
    args: tuple,
    n: int,
    on_message: Callable[[Any], None],
    on_tick: Callable[[], None] = lambda: None,
    *,
    name: str = "cxr-worker",
    tick_s: float = 0.25,
) -> None:
    """Run ``target(outbox, *args)`` in ``n`` processes until all return; messages go to ``on_message``.

    ``outbox.send("msg", payload)`` in a worker calls ``on_message(payload)`` in the parent.
    KeyboardInterrupt, any exception here, or one failed worker kills all workers before it propagates.
    """
    ctx = multiprocessing.get_context()
    reader, writer = ctx.Pipe(duplex=False)
    outbox = Outbox(writer, ctx.Lock())
    procs = [
        ctx.Process(target=_worker_main, args=(target, outbox, args), name=f"{name}-{k}", daemon=True)
        for k in range(n)
    ]
    crashes: list[str] = []

    def drain() -> None:
        while reader.poll():
            kind, payload = reader.recv()
            if kind == "crash":
                crashes.append(payload)
            else:
                on_message(payload)

    try:
        for p in procs:
            p.start()
        while any(p.exitcode is None for p in procs):
            wait([reader, *(p.sentinel for p in procs if p.exitcode is None)], timeout=tick_s)
            drain()
            _raise_for_exits(procs, crashes)
            on_tick()
        drain()
        _raise_for_exits(procs, crashes)
    finally:
        stop_processes(procs)
        reader.close()
        writer.close()


def _raise_for_exits(procs: Sequence[multiprocessing.process.BaseProcess], crashes: list[str]) -> None:
    """Raise for the first worker that did not end well: crash, stop signal, killed, or a bad status."""
    for p in procs:
        code = p.exitcode
        if code is None or code == 0:
            continue
        if crashes:
            last = crashes[0].strip().splitlines()[-1]
            raise WorkerCrash(f"{p.name} failed: {last}\n{crashes[0]}")
        if -code in STOP_SIGNALS:  # the group was told to stop (a scheduler, `kill -TERM -PGID`)
            raise KeyboardInterrupt
        if code < 0:
            raise ChildProcessError(
                f"{p.name} (pid {p.pid}) was killed by {signal.Signals(-code).name} "
                "(out of memory? try fewer workers)"
            )
        raise ChildProcessError(f"{p.name} (pid {p.pid}) exited with status {code}, expected 0")


def stop_processes(procs: Sequence[multiprocessing.process.BaseProcess], timeout: float = 5.0) -> None:
    """SIGKILL the started processes that still run and reap them all (no zombie, no orphan)."""
    started = [p for p in procs if p.pid is not None]
    for p in started:
        if p.exitcode is None:
            p.kill()
    for p in started:
        p.join(timeout)


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot, from /proc), or None where unknown or gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        return int(fields[19])  # field 22 of proc(5); fields[0] is field 3
    except (OSError, IndexError, ValueError):
        return None


def process_running(pid: int, start: int | None = None) -> bool:
    """Whether ``pid`` runs (a zombie does not) and, when ``start`` is given, is the one started then."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return True  # no /proc here: the signal test is all there is
    if fields[:1] == [b"Z"]:
        return False
    return start is None or start == 0 or fields[19:20] == [str(start).encode()]


def machine_id() -> str:
    """8 hex digits naming this host and PID namespace: process ids mean something only within them."""
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        ns = ""
    return hashlib.sha256(f"{socket.gethostname()}|{ns}".encode()).hexdigest()[:8]
