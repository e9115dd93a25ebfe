"""`cxr predict --ray`: the same shards on Ray actors (a local Ray, 2 workers) give the same rows.

Needs the optional extra cxrkit[ray] (the test extra installs it); skipped, saying so, without it.
An address where no Ray head listens is one line in seconds, before anything is written.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import make_untrained_run
from shard_helpers import assert_same_rows, make_archive

from cxrkit.cli import main
from cxrkit.workflows.predict import predict_files
from cxrkit.workflows.shards import MANIFEST, read_parts

ray = pytest.importorskip(
    "ray", reason="the optional extra cxrkit[ray] is not installed: pip install -e '.[ray]'"
)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_local_ray_with_two_workers_gives_the_rows_of_one_process_and_resumes(tmp_path, capsys):
    run = make_untrained_run(tmp_path / "run")
    root = make_archive(tmp_path / "in", 40)
    out = tmp_path / "scores"
    args = ["predict", str(run), str(root), "--out", str(out), "--quiet"]
    try:
        assert main([*args, "--shards", "5", "--ray", "--ray-workers", "2"]) == 1  # starts a local Ray
        assert not ray.is_initialized()  # and shuts it down
        printed = capsys.readouterr().out
        assert "40 of 41 images scored" in printed and "empty.png: unreadable" in printed
        plain = predict_files(run, [root], progress=False, log=lambda m: None)
        assert_same_rows(read_parts(out), plain)
        manifest = json.loads((out / MANIFEST).read_text())
        assert [s["status"] for s in manifest["shards"]] == ["done"] * 5

        ray.init(num_cpus=2, include_dashboard=False)  # a cluster already joined is used as it is
        kept = (out / manifest["shards"][0]["part"]).stat().st_mtime_ns
        (out / manifest["shards"][3]["part"]).unlink()
        assert main([*args, "--resume", "--ray", "--ray-workers", "2"]) == 1
        assert "4 already done, 1 to score" in capsys.readouterr().out
        assert ray.is_initialized()  # not ours to shut down
        assert (out / manifest["shards"][0]["part"]).stat().st_mtime_ns == kept
        assert_same_rows(read_parts(out), plain)
    finally:
        ray.shutdown()


@pytest.mark.timeout(60)
def test_an_address_with_no_ray_head_is_one_line_in_seconds_and_writes_nothing(tmp_path, capsys):
    run = make_untrained_run(tmp_path / "run")
    root = make_archive(tmp_path / "in", 2)
    out = tmp_path / "scores"
    for address, expected in [
        ("127.0.0.1:1", "no Ray head reachable at 127.0.0.1:1"),
        ("ray://127.0.0.1:1", "no Ray head reachable at 127.0.0.1:1"),
        ("a:b:c", "not a Ray address"),
    ]:
        start = time.monotonic()
        assert (
            main(["predict", str(run), str(root), "--out", str(out), "--shards", "2", "--ray", address]) == 2
        )
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and expected in err, err
        assert time.monotonic() - start < 20
    assert not Path(out).exists()
