"""The `cxr` command: every subcommand has help, the demo runs offline, errors are one line."""

import subprocess
import sys

import pandas as pd
import pytest
import yaml
from conftest import NIH_ROWS, chest_like, png_bytes

from cxrkit.cli import build_parser, main

SUBCOMMANDS = [
    "demo",
    "eda",
    "prepare",
    "split",
    "inspect",
    "download",
    "evaluate",
    "card",
    "triage",
    "compare",
    "robustness",
]


@pytest.mark.parametrize("cmd", SUBCOMMANDS)
def test_every_subcommand_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0 and "usage: cxr " + cmd in capsys.readouterr().out


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "cxrkit.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("cxrkit ")


@pytest.mark.slow
def test_demo_runs_offline_and_writes_its_outputs(tmp_path, capsys):
    assert (
        main(
            [
                "demo",
                "--out",
                str(tmp_path / "d"),
                "--n",
                "120",
                "--image-size",
                "32",
                "--epochs",
                "2",
                "--bootstrap",
                "20",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "EDA report" in out and "validation: macro ROC-AUC" in out and "epoch 2/2" in out
    run = tmp_path / "d" / "runs" / "phantom-cnn"
    assert "triage (no_finding)" in out and "reads saved" in out
    for f in ("split.csv", "config.yaml", "history.csv", "best.pt", "model.json", "eval-test/report.html"):
        assert (run / f).exists()
    assert (tmp_path / "d" / "eda.html").exists()
    card = (run / "model_card.md").read_text()  # the demo's model card, from its own evaluation
    assert "## Intended use" in card and "Not evaluated yet" not in card
    assert str(run / "model_card.html") in out


def test_eda_with_no_data_reports_the_real_nih_metadata(tmp_path, capsys):
    assert main(["eda", "--out", str(tmp_path / "e.html")]) == 0
    out = capsys.readouterr().out
    assert "images 112,120 | patients 30,805" in out
    assert "No Finding 60,361" in out and "Infiltration 19,894" in out and "Hernia 227" in out


def test_prepare_twice_reuses(nih_root, tmp_path, capsys):
    args = ["prepare", str(nih_root), "--size", "32", "--out", str(tmp_path / "c"), "--quiet"]
    assert main(args) == 0 and "cache built" in capsys.readouterr().out
    assert main(args) == 0 and "cache up to date: reused" in capsys.readouterr().out


def prepare_files_args(folder, out) -> list[str]:
    return ["prepare", str(folder), "--source", "files", "--size", "16", "--out", str(out), "--quiet"]


def test_prepare_lists_skipped_files(bad_files, tmp_path, capsys):
    folder = next(iter(bad_files.values())).parent
    (folder / "good.png").write_bytes(png_bytes(chest_like()))
    args = prepare_files_args(folder, tmp_path / "c")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "1 images" in out and "4 file(s) could not be read" in out
    for p in bad_files.values():
        assert f"skipped {p}: " in out


def test_prepare_with_nothing_decodable_is_an_error(bad_files, tmp_path, capsys):
    folder = next(iter(bad_files.values())).parent
    args = prepare_files_args(folder, tmp_path / "c")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "none of the 4 images could be decoded" in err and "Traceback" not in err
    assert not (tmp_path / "c").exists()


def test_inspect_prints_one_line_per_file(bad_files, capsys):
    assert main(["inspect", *map(str, bad_files.values())]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and {line.split(": ")[0] for line in lines} == {str(p) for p in bad_files.values()}


def test_split_writes_a_manifest_that_follows_the_official_lists(nih_root, tmp_path, capsys):
    assert main(["split", str(nih_root), "--method", "official", "--out", str(tmp_path / "s.csv")]) == 0
    assert "no patient is in two splits" in capsys.readouterr().out
    man = pd.read_csv(tmp_path / "s.csv", dtype=str)
    present = [r[0] for r in NIH_ROWS[:-1]]  # the last row's image is missing from the folder
    assert sorted(man["image_id"]) == sorted(present) and set(man["split"]) <= {"train", "val", "test"}
    official_test = set((nih_root / "test_list.txt").read_text().split())
    assert set(man.loc[man["split"] == "test", "image_id"]) == official_test & set(present)
    # the NIH patient is the image name's first eight digits: none is in two splits
    assert (man["patient_id"].astype(int) == man["image_id"].str[:8].astype(int)).all()
    assert man.groupby("patient_id")["split"].nunique().max() == 1


def test_bad_input_is_one_error_line_not_a_traceback(tmp_path, capsys):
    assert main(["eda", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing: no such file or folder" in err


def test_download_offline_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import cxrkit.data.chestmnist as cm

    monkeypatch.setattr(cm, "ZENODO_URL", "http://127.0.0.1:9/{file}")
    assert main(["download", "chestmnist", "--root", str(tmp_path), "--timeout", "3"]) == 2
    assert "by hand" in capsys.readouterr().err


def test_parser_defaults_are_none_so_yaml_is_not_overridden():
    args = build_parser().parse_args(["prepare"])
    assert args.size_out is None and args.mode is None and args.seed is None


def test_overrides_may_come_before_between_and_after_options(tmp_path, capsys):
    args = ["train", "data.n=60", "data.size=32", "--out", str(tmp_path / "r"), "prepare.size=32"]
    args += ["train.epochs=1", "--name", "x", "train.progress=false", "model.name=cnn2_64_128_bn"]
    assert main([*args, f"cache_dir={tmp_path / 'c'}"]) == 0
    saved = yaml.safe_load((tmp_path / "r" / "x" / "config.yaml").read_text())
    assert saved["data"]["n"] == 60 and saved["data"]["size"] == 32 and saved["prepare"]["size"] == 32
    assert saved["train"]["epochs"] == 1 and saved["model"]["name"] == "cnn2_64_128_bn"
    assert len(pd.read_csv(tmp_path / "r" / "x" / "history.csv")) == 1  # one epoch trained, as asked
    with pytest.raises(SystemExit):
        main(["eda", "--bogus"])
    with pytest.raises(SystemExit):  # an option it does not know is not taken for an override
        main(["train", "data.n=60", "--bogus", "train.epochs=1"])


def test_prepare_then_train_builds_nothing_twice(tmp_path, capsys, monkeypatch):
    """`cxr prepare` writes where `cxr train` looks: training with the same data reuses the cache."""
    import cxrkit.data.cache as cache_mod

    cache_dir = tmp_path / "cache"
    data = ["--source", "phantom", "--n", "80", "--image-size", "40", "--seed", "3"]
    assert main(["prepare", *data, "--size", "32", "--cache-dir", str(cache_dir), "--quiet"]) == 0
    assert "cache built" in capsys.readouterr().out
    (built,) = list(cache_dir.iterdir())
    builds = []
    real_build = cache_mod._build
    monkeypatch.setattr(cache_mod, "_build", lambda *a, **k: builds.append(a) or real_build(*a, **k))
    over = [
        "data.source=phantom",
        "data.n=80",
        "data.size=40",
        "data.seed=3",
        "prepare.size=32",
        f"cache_dir={cache_dir}",
        f"out={tmp_path / 'runs'}",
        "name=r",
        "model.name=cnn3_32_64_128_bn",
        "train.epochs=1",
        "train.progress=false",
    ]
    assert main(["train", *over]) == 0
    assert builds == [] and list(cache_dir.iterdir()) == [built]  # nothing decoded again, no second cache
    assert f"cache reused at {built}" in capsys.readouterr().out


def test_models_lists_registered_timm_xrv_and_rad_dino(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in (
        "resnet18",
        "cnn4_32_64_128_256_bn",
        "timm:<name>",
        "xrv:densenet121-res224-chex",
        "rad-dino",
    ):
        assert name in out
