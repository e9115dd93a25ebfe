"""`cxr predict --shards N --out DIR [--resume]`: an archive in resumable parts, every input scored once.

The rows of the parts are those of plain `cxr predict` (to 1e-6); a job killed with SIGKILL and
resumed scores every input exactly once; a resume that would mix runs, options or inputs is refused.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import chest_like, make_untrained_run, png_bytes
from conftest import cxr_process as _cxr
from shard_helpers import assert_same_rows, make_archive

from cxrkit.cli import main
from cxrkit.workflows.predict import predict_files
from cxrkit.workflows.shards import MANIFEST, plan_shards, read_parts


@pytest.fixture
def archive(tmp_path: Path) -> tuple[Path, Path]:
    """(an untrained run, a folder of 30 images and one empty file)."""
    return make_untrained_run(tmp_path / "run"), make_archive(tmp_path / "in", 30)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 11, 40])
@pytest.mark.parametrize("count", [0, 1, 5, 10, 31])
def test_plan_shards_cuts_inputs_into_contiguous_shards_each_input_once(count, n):
    items = [f"f{k}" for k in range(count)]
    shards = plan_shards(items, n)
    assert [x for shard in shards for x in shard] == items  # in order, none lost, none twice
    assert len(shards) == max(1, min(n, count))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1 and (count == 0 or min(sizes) >= 1)
    assert plan_shards(items, n) == shards  # deterministic: what --resume relies on


def test_plan_shards_refuses_fewer_than_one_shard():
    with pytest.raises(ValueError, match="--shards 0: expected a whole number >= 1"):
        plan_shards(["a"], 0)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_sharded_rows_equal_plain_predict_and_the_manifest_says_so(archive, tmp_path, capsys, fmt):
    run, root = archive
    out = tmp_path / "scores"
    code = main(
        ["predict", str(run), str(root), "--out", str(out), "--shards", "4", "--format", fmt, "--quiet"]
    )
    printed = capsys.readouterr().out
    assert code == 1  # the empty file is not scored, as with plain cxr predict
    assert "empty.png: unreadable" in printed and f"; parts: {out}" in printed
    assert "30 of 31 images scored" in printed
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST] + [f"part-0000{k}.{fmt}" for k in range(4)]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["inputs"] == 31 and manifest["format"] == fmt and manifest["engine"] == "torch"
    assert [s["status"] for s in manifest["shards"]] == ["done"] * 4
    assert [s["count"] for s in manifest["shards"]] == [8, 8, 8, 7]
    assert sum(s["not_scored"] for s in manifest["shards"]) == 1
    plain = predict_files(run, [root], progress=False, log=lambda m: None)
    assert_same_rows(read_parts(out), plain)
    if fmt == "parquet":  # the folder is a Parquet dataset: the manifest is not read as a part
        assert len(pd.read_parquet(out)) == 31


def test_resume_keeps_complete_parts_and_scores_missing_or_broken_ones(archive, tmp_path, capsys):
    run, root = archive
    out = tmp_path / "scores"
    args = ["predict", str(run), str(root), "--out", str(out), "--quiet", "--format", "csv"]
    assert main([*args, "--shards", "4"]) == 1
    kept = {k: (out / f"part-0000{k}.csv").stat().st_mtime_ns for k in (0, 3)}
    (out / "part-00001.csv").unlink()  # lost
    (out / "part-00002.csv").write_text("source,image_id\n/x.png,x.png\n")  # someone else's table
    (out / ".part-00002.csv.abc123.tmp").write_text("half a part")  # what SIGKILL mid-write leaves
    capsys.readouterr()
    assert main([*args, "--resume"]) == 1  # the shard count comes from the manifest
    assert {k: (out / f"part-0000{k}.csv").stat().st_mtime_ns for k in (0, 3)} == kept  # not re-scored
    assert not list(out.glob(".*.tmp"))
    plain = predict_files(run, [root], progress=False, log=lambda m: None)
    assert_same_rows(read_parts(out), plain)
    assert [s["status"] for s in json.loads((out / MANIFEST).read_text())["shards"]] == ["done"] * 4


def test_resume_without_a_manifest_starts_and_a_finished_job_resumes_to_nothing(archive, tmp_path, capsys):
    run, root = archive
    out = tmp_path / "scores"
    args = ["predict", str(run), str(root), "--out", str(out), "--format", "csv"]
    assert main([*args, "--resume", "--shards", "3"]) == 1
    assert "nothing to resume" in capsys.readouterr().out
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
    assert main([*args, "--resume"]) == 1
    assert "3 already done, 0 to score" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")} == before


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_what_a_sharded_run_refuses_is_one_line(archive, tmp_path, capsys):
    run, root = archive
    out = tmp_path / "scores"
    base = ["predict", str(run), str(root)]
    assert main([*base, "--out", str(out), "--shards", "0"]) == 2
    assert "--shards 0: expected a whole number >= 1" in _error(capsys)
    assert main([*base, "--shards", "2"]) == 2
    assert "need --out DIR" in _error(capsys)
    assert main([*base, "--out", str(out), "--shards", "2", "--heatmaps", str(tmp_path / "h")]) == 2
    assert "--heatmaps and --monitor do not go with --shards" in _error(capsys)
    assert main([*base, "--out", str(out), "--shards", "2", "--ray-workers", "2"]) == 2
    assert "go with --ray" in _error(capsys)
    assert main([*base, "--out", str(tmp_path / "p.csv"), "--format", "csv"]) == 2
    assert "go with --shards" in _error(capsys)
    assert main([*base, "--out", str(out), "--resume"]) == 2  # nothing to resume and no N to start with
    assert "give --shards N" in _error(capsys)
    assert not out.exists() or not list(out.iterdir())

    assert main([*base, "--out", str(out), "--shards", "2", "--format", "csv", "--quiet"]) == 1
    capsys.readouterr()
    assert main([*base, "--out", str(out), "--shards", "2", "--quiet"]) == 2  # never overwritten
    assert "holds a sharded prediction already" in _error(capsys)
    assert main([*base, "--out", str(out), "--shards", "3", "--resume"]) == 2
    assert "cannot resume: it has 2 shards, this call asks for 3" in _error(capsys)
    (root / "b" / "new.png").write_bytes(png_bytes(chest_like(64, 64, seed=99)))
    assert main([*base, "--out", str(out), "--resume"]) == 2
    assert "the inputs differ: it was started on 31 files, this call lists 32" in _error(capsys)
    (root / "b" / "new.png").unlink()
    (root / "b" / "x0001.png").rename(root / "b" / "x0001-renamed.png")
    assert main([*base, "--out", str(out), "--resume"]) == 2
    assert "31 files as before, but not the same ones" in _error(capsys)
    (root / "b" / "x0001-renamed.png").rename(root / "b" / "x0001.png")
    assert main([*base, "--out", str(out), "--resume", "--tta", "2"]) == 2
    assert "it was scored with tta None, this call asks for 2" in _error(capsys)
    other = make_untrained_run(tmp_path / "other", intensity="equalize")
    assert main(["predict", str(other), str(root), "--out", str(out), "--resume"]) == 2
    assert "cannot resume: it was scored by run" in _error(capsys)
    assert main([*base, "--out", str(out), "--resume", "--quiet"]) == 1  # as it was: finishes


def test_missing_ray_is_one_line_naming_the_extra(archive, tmp_path, capsys, monkeypatch):
    run, root = archive
    monkeypatch.setitem(sys.modules, "ray", None)  # as if cxrkit[ray] were not installed
    out = tmp_path / "scores"
    assert main(["predict", str(run), str(root), "--out", str(out), "--shards", "2", "--ray"]) == 2
    assert 'pip install -e ".[ray]"' in _error(capsys)
    assert not out.exists()  # refused before anything is written


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_killed_midway_and_resumed_every_input_is_scored_exactly_once(tmp_path):
    run = make_untrained_run(tmp_path / "run")
    root = make_archive(tmp_path / "in", 1200)  # 8 shards of 150: about 0.15 s each here, 1 s after the first
    out = tmp_path / "scores"
    args = [
        "predict",
        str(run),
        str(root),
        "--out",
        str(out),
        "--shards",
        "8",
        "--quiet",
        "--batch-size",
        "1",
    ]
    proc = _cxr(*args, "--format", "csv")
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("part-*")):
            assert proc.poll() is None, f"cxr ended early ({proc.returncode}): {proc.communicate()[1]}"
            assert time.monotonic() < deadline, "no part written in 120 s"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    parts = sorted(p.name for p in out.glob("part-*"))
    assert 1 <= len(parts) < 8, f"not killed midway: {parts}"
    manifest = json.loads((out / MANIFEST).read_text())
    assert [s["status"] for s in manifest["shards"]].count("pending") >= 8 - len(parts)

    assert main(["predict", str(run), str(root), "--out", str(out), "--resume", "--quiet"]) == 1
    plain = predict_files(run, [root], progress=False, log=lambda m: None)
    assert_same_rows(read_parts(out), plain)  # each of the 1,201 inputs exactly once, rows as plain
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST] + [f"part-0000{k}.csv" for k in range(8)]
