"""Every `cxr` failure is one line on stderr naming the path and what is wrong, a non-zero exit, no traceback.

Bad ``--out`` folders, corrupt run files, image folders without images, and `cxr compare` on runs whose
weights changed after their evaluation; nothing is written where it should not be.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import chest_like, png_bytes

from cxrkit.cli import main

SKIP_OUTPUTS = shutil.ignore_patterns("eval-*", "triage-*", "explain", "local*", "comparison-*")


def error_line(capsys, rc: int, *names: object) -> str:
    """The one stderr line of a failed command; it names every one of ``names``."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc != 0 and len(lines) == 1 and "Traceback" not in err, (rc, err)
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


def copy_run(run: Path, dest: Path, keep_eval: bool = False) -> Path:
    """A private copy of the session's trained run (never damage the shared one)."""
    skip = shutil.ignore_patterns("triage-*", "explain", "local*") if keep_eval else SKIP_OUTPUTS
    shutil.copytree(run, dest, ignore=skip)
    return dest


@pytest.fixture
def run(phantom_run, tmp_path) -> Path:
    return copy_run(phantom_run, tmp_path / "run")


@pytest.fixture
def plain_pngs(tmp_path) -> Path:
    """Four PNGs of different sizes in a plain folder: no CSV, no class folders, no labels."""
    folder = tmp_path / "pngs"
    folder.mkdir()
    for k in range(4):
        (folder / f"img{k}.png").write_bytes(png_bytes(chest_like(40 + 8 * k, 48, k)))
    return folder


# --out: a file in the way, a read-only folder


@pytest.mark.parametrize("command", ["evaluate", "triage"])
def test_out_that_is_a_file_is_refused_and_left_alone(command, run, tmp_path, capsys):
    target = tmp_path / "results"
    target.write_text("keep me")
    rc = main([command, str(run), "--out", str(target)])
    line = error_line(capsys, rc, target)
    assert "exists and is a file, expected a folder" in line
    assert target.read_text() == "keep me" and not list(run.glob("eval-*")) and not list(run.glob("triage-*"))


def test_out_below_a_file_names_the_file(run, tmp_path, capsys):
    blocker = tmp_path / "results"
    blocker.write_text("keep me")
    rc = main(["evaluate", str(run), "--out", str(blocker / "sub")])
    assert "exists and is a file" in error_line(capsys, rc, blocker)
    assert blocker.read_text() == "keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions, so nothing is refused")
@pytest.mark.parametrize("below", [False, True])
def test_out_in_a_read_only_folder_is_refused(below, run, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        out = ro / "sub" if below else ro
        rc = main(["evaluate", str(run), "--out", str(out)])
        error_line(capsys, rc, out)
        assert not list(ro.iterdir())
    finally:
        ro.chmod(0o700)


def test_compare_out_that_is_a_file_is_refused(phantom_run, phantom_eval, tmp_path, capsys):
    target = tmp_path / "cmp"
    target.write_text("keep me")
    a = copy_run(phantom_run, tmp_path / "a", keep_eval=True)
    rc = main(["compare", str(a), str(phantom_run), "--out", str(target)])
    assert "expected a folder" in error_line(capsys, rc, target)
    assert target.read_text() == "keep me"


def test_eda_report_below_a_file_is_refused(plain_pngs, tmp_path, capsys):
    blocker = tmp_path / "reports"
    blocker.write_text("keep me")
    rc = main(["eda", str(plain_pngs), "--out", str(blocker / "eda.html")])
    assert "expected a folder" in error_line(capsys, rc, blocker)
    assert blocker.read_text() == "keep me"


# a damaged run folder

CORRUPT_CONFIGS = {
    "binary": b"\x89PNG\r\n\x1a\n\x00\xff\xfe garbage",
    "list": b"- data\n- model\n",
    "broken": b"data: {source: phantom\nmodel: [",
}


@pytest.mark.parametrize("kind", CORRUPT_CONFIGS)
def test_corrupt_config_yaml_is_one_line_naming_it(kind, run, capsys):
    (run / "config.yaml").write_bytes(CORRUPT_CONFIGS[kind])
    rc = main(["evaluate", str(run), "--bootstrap", "0"])
    assert rc == 2
    error_line(capsys, rc, run / "config.yaml")
    assert not (run / "eval-test").exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_checkpoint_that_no_longer_loads_is_one_line_naming_it(damage, run, capsys):
    best = run / "best.pt"
    data = best.read_bytes()
    best.write_bytes(data[: len(data) // 3] if damage == "truncated" else os.urandom(4096))
    rc = main(["evaluate", str(run), "--bootstrap", "0"])
    assert rc == 2
    error_line(capsys, rc, best)
    assert not (run / "eval-test").exists()


def test_truncated_cache_array_is_rebuilt_or_named(run, tmp_path, capsys):
    """The run's cache (a private copy) with images.npy cut short: evaluation heals it or names it."""
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cache_dir = tmp_path / "cache"
    shutil.copytree(cfg["cache_dir"], cache_dir)
    cfg["cache_dir"] = str(cache_dir)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (images,) = cache_dir.glob("*/images.npy")
    size = images.stat().st_size
    with open(images, "r+b") as fh:
        fh.truncate(size // 2)
    rc = main(["evaluate", str(run), "--bootstrap", "0"])
    if rc == 0:  # rebuilt from the source data: whole again
        assert images.stat().st_size == size and (run / "eval-test" / "evaluation.json").is_file()
        capsys.readouterr()
    else:
        error_line(capsys, rc, images.parent)
        assert not (run / "eval-test").exists()


# cxr inspect and cxr eda on folders without (labelled) images


@pytest.mark.parametrize("content", ["nothing", "text"])
def test_inspect_folder_without_images_says_so(content, tmp_path, capsys):
    folder = tmp_path / "empty"
    folder.mkdir()
    if content == "text":
        (folder / "notes.txt").write_text("no images here")
    rc = main(["inspect", str(folder)])
    assert rc == 2
    assert "no PNG/JPEG/DICOM images in" in error_line(capsys, rc, folder)


def test_inspect_names_an_empty_folder_among_good_ones(plain_pngs, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["inspect", str(plain_pngs), str(empty)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert f"{empty}: no PNG/JPEG/DICOM images in this folder" in out
    assert sum(": ok, " in line for line in out) == 4


def test_eda_on_a_few_unlabelled_pngs_gives_a_label_free_report(plain_pngs, tmp_path, capsys):
    out = tmp_path / "r" / "eda.html"
    assert main(["eda", str(plain_pngs), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "no labels" in captured.out
    html = out.read_text()
    assert "<h2>Image sizes</h2>" in html and "<h2>Sample images</h2>" in html
    assert "<h2>Label counts" not in html and html.count("data:image/png;base64,") == 1  # the sample grid
    assert "<td>48</td>\n      <td>64</td>" in html  # the tallest image's width x height
    assert json.loads(out.with_suffix(".json").read_text())["images"] == 4


def test_eda_on_a_folder_without_images_is_one_line(tmp_path, capsys):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "notes.txt").write_text("no images here")
    rc = main(["eda", str(folder), "--out", str(tmp_path / "eda.html")])
    error_line(capsys, rc, folder)
    assert not (tmp_path / "eda.html").exists()


def test_eda_with_no_rows_left_after_filtering_says_so(nih_root, tmp_path, capsys):
    rc = main(["eda", str(nih_root), "--views", "LL", "--out", str(tmp_path / "eda.html")])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the warning about images without a metadata row
    assert (
        rc == 2 and "Traceback" not in err and str(nih_root) in last and "no images or metadata rows" in last
    )
    assert not (tmp_path / "eda.html").exists()


# cxr compare: stale evaluations, name collisions


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_evaluation_records_the_checkpoint_it_scored(phantom_run, phantom_eval):
    m = json.loads((phantom_eval / "evaluation.json").read_text())
    assert m["weights_sha256"] == sha256(phantom_run / "best.pt")


def test_compare_refuses_a_run_retrained_after_its_evaluation(phantom_run, phantom_eval, tmp_path, capsys):
    from cxrkit.run.checkpoint import load_checkpoint, save_checkpoint

    a = copy_run(phantom_run, tmp_path / "a", keep_eval=True)
    b = copy_run(phantom_run, tmp_path / "b", keep_eval=True)
    ckpt = load_checkpoint(b / "best.pt")
    state = ckpt["model_state"]
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = state[first] + 0.01  # new weights, old eval-test/evaluation.json
    save_checkpoint(
        b / "best.pt", **{k: v for k, v in ckpt.items() if k not in ("cxrkit_version", "run_format")}
    )
    out = tmp_path / "cmp"
    rc = main(["compare", str(a), str(b), "--out", str(out)])
    assert rc == 2
    assert "best.pt has changed" in error_line(capsys, rc, b)
    assert not out.exists()


@pytest.mark.parametrize("damage", ["garbage", "incomplete"])
def test_compare_names_a_damaged_saved_evaluation(damage, phantom_run, phantom_eval, tmp_path, capsys):
    a = copy_run(phantom_run, tmp_path / "a", keep_eval=True)
    b = copy_run(phantom_run, tmp_path / "b", keep_eval=True)
    metrics = b / "eval-test" / "evaluation.json"
    if damage == "garbage":
        metrics.write_bytes(b"\x00\xff{not json")
    else:
        m = json.loads(metrics.read_text())
        metrics.write_text(json.dumps({k: m[k] for k in ("run", "model", "split", "weights_sha256")}))
    out = tmp_path / "cmp"
    rc = main(["compare", str(a), str(b), "--out", str(out)])
    assert rc == 2
    error_line(capsys, rc, metrics)
    assert not out.exists()


def test_compare_warns_about_an_evaluation_without_fingerprint(phantom_run, phantom_eval, tmp_path, capsys):
    a = copy_run(phantom_run, tmp_path / "a", keep_eval=True)
    b = copy_run(phantom_run, tmp_path / "b", keep_eval=True)
    metrics = b / "eval-test" / "evaluation.json"
    m = json.loads(metrics.read_text())
    del m["weights_sha256"]  # as written by an older cxrkit
    metrics.write_text(json.dumps(m))
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and str(metrics) in err and str(a) not in err


def test_compare_names_rows_by_path_when_run_names_collide(phantom_run, phantom_eval, tmp_path, capsys):
    a = copy_run(phantom_run, tmp_path / "a" / "phantom", keep_eval=True)
    b = copy_run(phantom_run, tmp_path / "b" / "phantom", keep_eval=True)
    assert main(["compare", str(a), str(b)]) == 0
    frame = pd.read_csv(tmp_path / "comparison-test" / "comparison.csv")
    assert list(frame["run"]) == ["a/phantom", "b/phantom"]
    assert "a/phantom" in capsys.readouterr().out


def test_compare_refuses_the_same_run_twice(phantom_run, phantom_eval, tmp_path, capsys):
    a = copy_run(phantom_run, tmp_path / "a", keep_eval=True)
    link = tmp_path / "link"
    link.symlink_to(a, target_is_directory=True)
    rc = main(["compare", str(a), str(link), "--out", str(tmp_path / "cmp")])
    assert "given twice" in error_line(capsys, rc, link, a)
    assert not (tmp_path / "cmp").exists()


def test_run_names_are_folder_names_unless_they_collide():
    from cxrkit.report.compare import run_names

    assert run_names(["runs/x", "runs/y"]) == ["x", "y"]
    assert run_names(["runs/a/x", "runs/b/x"]) == ["a/x", "b/x"]
    assert run_names(["runs/x", "runs/x/x"]) == ["x", "x/x"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda d: d["operating_point"].update(threshold=float("nan")), "operating_point.threshold"),
        (lambda d: d["operating_point"].update(threshold=5.0), "operating_point.threshold"),
        (lambda d: d["calibration"].update(temperatures=[-1.0] * len(d["labels"])), "temperatures"),
        (lambda d: d["calibration"].update(temperatures=[0.0] * len(d["labels"])), "temperatures"),
        (lambda d: d["input"].update(size=100_000), "input"),
        (lambda d: d.update(task="singlelabel"), "task"),
    ],
)
def test_a_tampered_model_json_is_refused_not_used(phantom_run, tmp_path, capsys, edit, words):
    """A NaN threshold would read every study as normal: the run is refused, naming model.json."""
    run = copy_run(phantom_run, tmp_path / "run")
    d = json.loads((run / "model.json").read_text())
    edit(d)
    (run / "model.json").write_text(json.dumps(d))
    img = tmp_path / "x.png"
    img.write_bytes(png_bytes(chest_like(64, 64)))
    rc = main(["predict", str(run), str(img), "--out", str(tmp_path / "p.csv"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "model.json" in err and words in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "p.csv").exists()


def test_a_missing_optional_package_is_one_line_naming_its_extra(monkeypatch, tmp_path, capsys):
    """``cxr serve`` without the serve extra: not a traceback, not "No module named", the install line."""
    import builtins

    from cxrkit.cli import main

    real_import = builtins.__import__

    def no_uvicorn(name, *args, **kwargs):
        if name.split(".")[0] == "uvicorn":
            raise ModuleNotFoundError("No module named 'uvicorn'", name="uvicorn")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvicorn)
    from conftest import make_untrained_run

    run = make_untrained_run(tmp_path / "run")
    assert main(["serve", str(run), "--port", "8999"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install -e ".[serve]"' in err and "uvicorn" in err, err
