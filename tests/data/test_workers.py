"""Worker processes: messages reach the parent, a failure is one exception, no worker outlives a stop."""

import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

from cxrkit.data.workers import WorkerCrash, process_running, process_start, run_workers


def _gone(pid: int) -> bool:
    return not process_running(pid)


def _send_pid(outbox):
    outbox.send("msg", os.getpid())


def _first_fails_second_sleeps(outbox, counter):
    outbox.send("msg", os.getpid())
    with counter.get_lock():
        k = counter.value
        counter.value += 1
    if k == 0:
        for _ in range(400):  # until the other worker has reported too
            if counter.value == 2:
                break
            time.sleep(0.05)
        raise ValueError("bad pixel in row 7")
    time.sleep(60)


def _kill_self(outbox, sig):
    os.kill(os.getpid(), sig)
    time.sleep(60)


def _report_then_sleep(outbox, seconds):
    outbox.send("msg", os.getpid())
    time.sleep(seconds)


def test_messages_arrive_and_every_worker_finishes():
    pids = []
    run_workers(_send_pid, (), 2, pids.append)
    assert len(set(pids)) == 2 and all(_gone(p) for p in pids)
    assert multiprocessing.active_children() == []


def test_a_failing_worker_is_one_exception_naming_the_error_and_stops_the_others():
    pids, start = [], time.monotonic()
    with pytest.raises(WorkerCrash, match=r"^cxr-worker-\d failed: ValueError: bad pixel in row 7\n") as err:
        run_workers(_first_fails_second_sleeps, (multiprocessing.Value("i", 0),), 2, pids.append)
    assert "Traceback" in str(err.value)  # the worker's traceback follows the first line (for --debug)
    assert time.monotonic() - start < 20 and len(pids) == 2 and all(_gone(p) for p in pids)


def test_a_worker_killed_by_the_system_is_reported_as_such():
    with pytest.raises(ChildProcessError, match=r"killed by SIGKILL \(out of memory\? try fewer workers\)"):
        run_workers(_kill_self, (signal.SIGKILL,), 1, lambda m: None)


def test_a_worker_stopped_by_sigterm_stops_the_parent_like_ctrl_c(monkeypatch):
    """`kill -TERM -PGID` (a scheduler) reaches the workers too: that is a stop, not a crash."""

    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, raise_interrupt)  # as `cxr` does: fork would hand it to workers
    try:
        with pytest.raises(KeyboardInterrupt):
            run_workers(_kill_self, (signal.SIGTERM,), 1, lambda m: None)
    finally:
        signal.signal(signal.SIGTERM, old)


def test_an_interrupt_in_the_parent_kills_every_worker_at_once():
    pids = []

    def tick():
        if len(pids) == 2:
            raise KeyboardInterrupt

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_workers(_report_then_sleep, (60,), 2, pids.append, tick, tick_s=0.05)
    assert time.monotonic() - start < 20 and all(_gone(p) for p in pids)
    assert multiprocessing.active_children() == []


def test_workers_leave_ctrl_c_to_the_parent():
    """A terminal sends Ctrl-C to the whole group: a worker must neither die nor print a traceback."""
    pids = []

    def on_message(pid):
        pids.append(pid)
        os.kill(pid, signal.SIGINT)

    run_workers(_report_then_sleep, (1.0,), 1, on_message)  # returns normally: the worker finished
    assert len(pids) == 1


def test_process_running_tells_live_dead_zombie_and_reused_pids():
    me = os.getpid()
    assert process_running(me) and process_running(me, process_start(me))
    assert not process_running(me, process_start(me) + 1)  # same pid, another start: a reused pid
    assert not process_running(0) and not process_running(-1)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    for _ in range(200):  # exited but not reaped: a zombie, not a running process
        if not process_running(child.pid):
            break
        time.sleep(0.05)
    assert not process_running(child.pid)
    child.wait()
    assert not process_running(child.pid) and process_start(child.pid) is None
