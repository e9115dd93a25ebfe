"""Kills during `cxr prepare` and `cxr train`: no orphaned worker, no traceback, nothing half-built kept.

Each test runs the real command in a subprocess and stops it mid-work the ways a user or a scheduler
does: Ctrl-C to the terminal's process group, SIGTERM, SIGKILL.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import cxr_process as _cxr

from cxrkit.cli import main
from cxrkit.data.workers import process_running
from cxrkit.run.checkpoint import load_checkpoint

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc (Linux)"),
]

# 2,000 phantoms drawn at 256 px: a build of many seconds, so every stop lands mid-build
PREPARE = ["prepare", "--source", "phantom", "--n", "2000", "--image-size", "256", "--size", "64"]


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid``, from /proc."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_bytes().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _wait_gone(pids: list[int], seconds: float = 10.0) -> list[int]:
    """The ``pids`` still running after up to ``seconds`` (a zombie waiting for init counts as gone)."""
    deadline = time.monotonic() + seconds
    while (alive := [p for p in pids if process_running(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


@pytest.fixture
def leftovers():
    """Pids to SIGKILL after the test if still running: a failing test leaves no orphan behind either."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if process_running(pid):
            os.kill(pid, signal.SIGKILL)


def _workers_mid_build(proc: subprocess.Popen, cache_dir: Path, timeout: float = 90.0) -> list[int]:
    """Wait until both decoding workers run and have cached images; return their pids."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"cxr ended early ({proc.returncode}): {proc.communicate()[1]}"
        kids = _children(proc.pid)
        status = list(cache_dir.glob(".*.tmp-*/status.partial.npy"))
        if len(kids) == 2 and status:
            try:
                if np.count_nonzero(np.load(status[0], mmap_mode="r")[:, 0]):
                    return kids
            except (ValueError, OSError):  # not written yet
                pass
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no build in progress after {timeout} s")


@pytest.mark.parametrize(
    ("sig", "to_group"),
    [(signal.SIGTERM, False), (signal.SIGINT, True), (signal.SIGTERM, True)],
    ids=["sigterm", "ctrl-c-to-group", "sigterm-to-group"],
)
def test_stopping_prepare_is_one_line_exit_130_no_worker_and_no_half_cache(
    tmp_path, leftovers, sig, to_group
):
    cache_dir = tmp_path / "cache"
    proc = _cxr(*PREPARE, "--workers", "2", "--quiet", "--cache-dir", str(cache_dir))
    leftovers += (workers := _workers_mid_build(proc, cache_dir))
    start = time.monotonic()
    if to_group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    stopped_in = time.monotonic() - start
    assert (proc.returncode, err, out) == (130, "cxr prepare: interrupted\n", "")
    assert stopped_in < 15, f"took {stopped_in:.1f} s to stop"
    assert _wait_gone(workers) == []
    assert list(cache_dir.iterdir()) == []  # the build folder is removed; no cache that could load


def test_sigkill_of_prepare_kills_its_workers_and_the_next_run_removes_the_build(tmp_path, capsys, leftovers):
    cache_dir = tmp_path / "cache"
    proc = _cxr(*PREPARE, "--workers", "2", "--quiet", "--cache-dir", str(cache_dir))
    leftovers += (workers := _workers_mid_build(proc, cache_dir))
    proc.kill()  # SIGKILL: no handler runs in cxr
    proc.wait(timeout=60)  # not communicate(): orphaned workers would hold its pipes open
    assert _wait_gone(workers) == [], "decoding workers outlived their SIGKILLed parent"
    (left,) = cache_dir.iterdir()
    assert ".tmp-" in left.name and f"-{proc.pid}-" in left.name  # named by the process that wrote it
    # the next build in the same cache folder (of any data) removes the abandoned one
    small = ["--source", "phantom", "--n", "80", "--image-size", "32", "--size", "32", "--quiet"]
    assert main(["prepare", *small, "--cache-dir", str(cache_dir)]) == 0
    (built,) = cache_dir.iterdir()
    assert built.name.startswith("phantom-32pad-") and "abandoned cache build" in capsys.readouterr().err


WATCHED = """
import os, sys, time
import cxrkit.data.workers as w
w.set_parent_death_signal = lambda *a: False  # as on a system without prctl
def sleep(outbox):
    outbox.send("msg", os.getpid())
    time.sleep(120)
w.run_workers(sleep, (), 2, lambda pid: print(pid, flush=True))
"""


def test_without_prctl_workers_still_end_with_their_killed_parent(leftovers):
    """The portable fallback: each worker watches its parent's sentinel pipe."""
    proc = subprocess.Popen([sys.executable, "-c", WATCHED], stdout=subprocess.PIPE, text=True)
    leftovers += (workers := [int(proc.stdout.readline()), int(proc.stdout.readline())])
    proc.kill()
    proc.wait(timeout=30)
    assert _wait_gone(workers) == []


@pytest.fixture
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_sigterm_of_train_keeps_the_finished_epochs_and_resume_continues(tmp_path, capsys, one_torch_thread):
    run = tmp_path / "runs" / "r"
    over = [
        "data.source=phantom",
        "data.n=60",
        "data.size=16",
        "prepare.size=16",
        "model.name=cnn3_32_64_128_bn",
        "train.epochs=30",  # far more than can finish before the signal lands
        "train.steps_per_epoch=2",
        "train.batch_size=16",
        "train.progress=false",
        "train.patience=0",
        f"out={run.parent}",
        "name=r",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    proc = _cxr("train", *over)
    deadline = time.monotonic() + 120
    while not (run / "last.pt").exists():  # epoch 1 is saved: stop it while it trains on
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (130, "cxr train: interrupted\n"), out
    ckpt = load_checkpoint(run / "last.pt")  # a whole checkpoint of the last finished epoch
    assert ckpt["epoch"] < 29 and len(ckpt["history"]) == ckpt["epoch"] + 1
    assert not (run / "model.json").exists()
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")] == []  # no half-written file
    assert main(["train", "--resume", str(run)]) == 0
    assert f"at epoch {ckpt['epoch'] + 2}/30" in capsys.readouterr().out
    assert load_checkpoint(run / "last.pt")["epoch"] == 29 and (run / "model.json").exists()
