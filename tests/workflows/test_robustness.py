"""cxr robustness on the phantom run: the clean row is the evaluation's; shifts hit the right images."""

import json
import re
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from browser import open_page, require_chromium

from cxrkit.cli import main
from cxrkit.data.shifts import SHIFTS, apply_shift
from cxrkit.evaluate.metrics import summary_metrics
from cxrkit.evaluate.triage import abnormal_truth, abnormality_score, triage_counts
from cxrkit.run.data import load_run_data
from cxrkit.run.model import RunModel, predict_split, split_scorers
from cxrkit.workflows.evaluate import write_evaluation_report
from cxrkit.workflows.robustness import (
    RobustnessConfig,
    pixel_digests,
    robustness_run,
    score_split,
    shift_transform,
)

TWO = ("gamma", "gaussian_noise")
QUIET = {"log": lambda m: None}


@pytest.fixture(scope="module")
def loaded(phantom_run):
    run = RunModel.load(phantom_run, "cpu")
    return run, load_run_data(run.path, lambda m: None)


@pytest.fixture(scope="module")
def small(phantom_run, tmp_path_factory):
    """Two shifts at five severities on the test split, shifted and scored 128 images at a time."""
    out = tmp_path_factory.mktemp("robust") / "small"
    cfg = RobustnessConfig(shifts=TWO, chunk=128, device="cpu", out=str(out))
    return robustness_run(phantom_run, cfg, **QUIET)


@pytest.fixture(scope="module")
def cli_run(phantom_run, phantom_eval, tmp_path_factory):
    """A copy of the run with its eval-test, its evaluation page, and `cxr robustness` arguments for it."""
    run = tmp_path_factory.mktemp("robust-cli") / "phantom"
    shutil.copytree(phantom_run, run, ignore=shutil.ignore_patterns("triage-*", "explain", "local*"))
    page = (run / "eval-test" / "report.html").read_bytes()
    argv = ["robustness", str(run), "--shifts", "gamma,gaussian_noise", "--device", "cpu"]
    return run, page, argv


def table(folder) -> pd.DataFrame:
    return pd.read_csv(folder / "robustness.csv")


def test_clean_row_is_the_evaluation_of_the_untouched_split(small, loaded):
    run, data = loaded
    t = table(small)
    clean = t[t["severity"] == 0].iloc[0]
    assert clean["shift"] == "clean" and clean["mean_abs_logit_change"] == 0
    ev = predict_split(run, data, "test")
    auc = summary_metrics(ev.targets, ev.probs, 0.5, labels=run.labels)["macro_auc"]
    assert clean["macro_auc"] == auc  # exactly: the same images, the same network batches
    point = run.package.operating_point
    tri = triage_counts(
        abnormal_truth(ev.targets, run.labels),
        abnormality_score(ev.probs, run.labels, point.score)[0],
        point.threshold,
    )
    assert (clean["triage_sensitivity"], clean["triage_specificity"]) == (
        tri["sensitivity"],
        tri["specificity"],
    )
    assert clean["images"] == len(ev.probs) == json.loads((small / "robustness.json").read_text())["images"]


def test_each_shift_changes_the_scores_at_every_severity(loaded):
    """Every shift of the family, through the workflow's own chunked scoring (first 12 test images)."""
    run, data = loaded
    (rows, score_fn), *_ = split_scorers(run, data, "test")
    pairs = [(rows[:12], score_fn)]
    digests = pixel_digests(data, rows[:12], 12)
    clean = score_split(pairs, data, None, 12)
    for name in SHIFTS:
        for sev in (1, 2, 3, 4, 5):
            shifted = score_split(pairs, data, shift_transform(name, sev, 0, data, rows[:12], digests), 12)
            assert not np.array_equal(shifted, clean), (name, sev)


def test_shifted_rows_score_the_split_images_shifted(small, loaded):
    """A row recomputed by hand: apply_shift on the test split's cached images, scored by the network."""
    run, data = loaded
    t = table(small)
    assert (t.loc[t["severity"] > 0, "mean_abs_logit_change"] > 0).all()
    rows = np.sort(data.partition["test"])
    images = apply_shift(np.asarray(data.cache.images[rows]), "gaussian_noise", 3, seed=0)
    probs = run.package.probs(run.logits(images))
    auc = summary_metrics(data.targets[rows], probs, 0.5, labels=run.labels)["macro_auc"]
    row = t[(t["shift"] == "gaussian_noise") & (t["severity"] == 3)].iloc[0]
    assert row["macro_auc"] == auc and row["level"] == SHIFTS["gaussian_noise"].levels[2]
    val = predict_split(run, data, "val")  # another split's images give another clean AUC
    assert summary_metrics(val.targets, val.probs, 0.5, labels=run.labels)["macro_auc"] != t["macro_auc"][0]


def test_noise_hurts_and_the_summary_adds_up(small):
    t = table(small)
    clean = t["macro_auc"][0]
    noise = t[t["shift"] == "gaussian_noise"].sort_values("severity")["macro_auc"].to_numpy()
    assert not (np.diff(noise) > 0).all()  # AUC does not rise with noise
    assert noise[-1] < clean and noise[-1] < noise[0]  # observed: 0.901 clean, 0.849 .. 0.610
    s = json.loads((small / "robustness.json").read_text())
    shifted = t[t["severity"] > 0]
    assert s["clean_auc"] == clean and s["mca"] == pytest.approx(shifted["macro_auc"].mean(), abs=1e-12)
    assert s["relative_drop"] == pytest.approx((clean - s["mca"]) / clean)
    assert list(s["shifts"]) == list(TWO) and s["shifts"]["gamma"]["levels"] == list(SHIFTS["gamma"].levels)
    assert s["operating_point"]["threshold"] > 0 and s["seed"] == 0 and s["split"] == "test"
    assert len(t) == 11 and set(t["shift"]) == {"clean", *TWO}


def test_report_page_and_plot(small, tmp_path):
    page = (small / "report.html").read_text()
    assert "Robustness to acquisition shift" in page and "mCA" in page
    assert "<table" in page and "severity 5" in page and SHIFTS["gaussian_noise"].simulates in page
    assert (small / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    require_chromium()
    seen = open_page(small / "report.html", tmp_path / "shot.png")
    assert seen["console_errors"] == [] and seen["page_errors"] == []
    (img,) = seen["images"]
    assert img["complete"] and img["w"] > 600 and img["shown"] > 300, img


def test_a_new_seed_draws_new_noise(small, phantom_run, tmp_path):
    cfg = RobustnessConfig(
        shifts=("gaussian_noise",), severities=(5,), seed=1, device="cpu", out=str(tmp_path)
    )
    other = table(robustness_run(phantom_run, cfg, **QUIET))
    t = table(small)
    mine = t[(t["shift"] == "gaussian_noise") & (t["severity"] == 5)]["macro_auc"].iloc[0]
    assert other["macro_auc"][0] == t["macro_auc"][0] and other["macro_auc"][1] != mine


def test_cli_is_deterministic_chunk_free_and_leaves_the_evaluation_page(cli_run, small, loaded, capsys):
    run, page, argv = cli_run
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "mCA" in out and "relative drop" in out and "robustness-test" in out and "was not changed" in out
    folder = run / "robustness-test"
    # same seed, one chunk of 512 here against chunks of 128 there: the same table, byte for byte
    assert (folder / "robustness.csv").read_bytes() == (small / "robustness.csv").read_bytes()
    assert (run / "eval-test" / "report.html").read_bytes() == page  # a written page is never edited
    assert "cxr robustness" in page.decode() and "robustness.csv" not in page.decode()
    _, data = loaded
    write_evaluation_report(run, run / "eval-test", data)  # what `cxr evaluate` ends with
    html = (run / "eval-test" / "report.html").read_text()
    assert "Robustness to acquisition shift" in html and "severity 5" in html and "mCA" in html


def test_help_names_every_shift(capsys):
    with pytest.raises(SystemExit) as e:
        main(["robustness", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "usage: cxr robustness" in out
    assert re.search(r"not changed: run `cxr\s+evaluate", out)  # the evaluation page is re-made, not edited
    assert all(name in out for name in SHIFTS)


def test_bad_options_are_clear_errors(capsys, tmp_path):
    with pytest.raises(ValueError, match=r"unknown shift\(s\) 'fog'.*gamma, contrast"):
        RobustnessConfig(shifts=("gamma", "fog"))
    with pytest.raises(ValueError, match="split 'holdout'"):
        RobustnessConfig(split="holdout")
    with pytest.raises(ValueError, match="severities"):
        RobustnessConfig(severities=(0, 6))
    assert main(["robustness", str(tmp_path), "--shifts", "gamma,fog"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown shift(s) 'fog'" in err[0]


def test_chunks_shift_like_one_batch_even_with_duplicate_images():
    """Identical images draw by their order in the batch: a chunk is shifted behind its earlier copies."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (11, 12, 12), dtype=np.uint8)
    images[[4, 7, 9]] = images[1]
    data = SimpleNamespace(cache=SimpleNamespace(images=images), labels=("x",))
    rows = np.arange(11)
    pairs = [(rows, lambda x: x.reshape(len(x), -1).astype(np.float32))]  # "logits" = the shifted pixels
    digests = pixel_digests(data, rows, 4)
    for name in ("gaussian_noise", "rotate", "text"):
        whole = apply_shift(images, name, 4, seed=3).reshape(11, -1)
        for chunk in (1, 3, 4, 11):
            got = score_split(pairs, data, shift_transform(name, 4, 3, data, rows, digests), chunk)
            assert np.array_equal(got, whole), (name, chunk)


def test_python_api(phantom_run, small, tmp_path):
    import cxrkit

    run = cxrkit.load_run(phantom_run, "cpu")
    s = run.robustness(shifts="gamma", severities=(5,), out=str(tmp_path), log=lambda m: None)
    t = table(small)
    assert list(s["shifts"]) == ["gamma"] and s["clean_auc"] == t["macro_auc"][0]
    assert s["mca"] == t[(t["shift"] == "gamma") & (t["severity"] == 5)]["macro_auc"].iloc[0]


def test_tta_scores_every_condition_with_the_views(phantom_run, tmp_path):
    cfg = RobustnessConfig(shifts=("gamma",), severities=(5,), tta=3, out=str(tmp_path / "tta"))
    out = robustness_run(phantom_run, cfg, log=lambda m: None)
    got = pd.read_csv(out / "robustness.csv")
    run, data = RunModel.load(phantom_run, "cpu"), load_run_data(phantom_run)
    rows = np.sort(data.partition["test"])
    probs = run.package.probs(run.logits(np.asarray(data.cache.images[rows]), tta=3))
    expect = summary_metrics(data.targets[rows], probs, 0.5, labels=run.labels)["macro_auc"]
    assert got["macro_auc"].iloc[0] == pytest.approx(expect, abs=1e-12)
    with pytest.raises(ValueError, match="tta"):
        RobustnessConfig(tta=7)
