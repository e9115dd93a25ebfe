"""A phantom-trained small CNN localizes its findings: Grad-CAM boxes beat a centred box by far, and the
same scoring of flipped heatmaps or of another label's heatmap does not."""

import json

import numpy as np
import pandas as pd
import pytest

from cxrkit.run.data import load_run_data
from cxrkit.run.model import RunModel
from cxrkit.workflows.localize import centred_baseline, ground_truth, heatmaps_for, localize_run, score_boxes


def _acc(scores: pd.DataFrame, t: float = 0.5) -> float:
    return float((scores["iobb"] > t).mean())


@pytest.fixture(scope="module")
def localized(phantom_run):
    """``localize_run`` of the session's phantom run (fraction chosen on validation boxes), once."""
    return localize_run(phantom_run, log=lambda m: None)


def test_phantom_heatmaps_localize_far_above_a_centred_box(phantom_run, localized):
    table, out = localized
    result = json.loads((phantom_run / "localization.json").read_text())
    assert result["split"] == "test" and result["fraction_source"] == "chosen on validation boxes"
    ours, centred = table.loc["T(IoBB)=0.5", "all"], result["baseline_centred_box"]["T(IoBB)=0.5"]
    assert ours > 2 * centred and ours > centred + 0.15, (ours, centred)
    assert table.loc["boxes", "all"] == result["boxes"] > 100
    assert (out / "scores.csv").is_file() and "Localization" in (out / "report.html").read_text()

    # the same scoring with a mirrored heatmap, or with another finding's heatmap, must fail to localize
    run = RunModel.load(phantom_run, "cpu")
    data = load_run_data(run.path)
    gt = ground_truth(data)
    test = gt[gt["split"] == "test"].reset_index(drop=True)
    heat = heatmaps_for(run, data, test, "gradcam")
    frac = result["fraction"]
    assert np.isclose(_acc(score_boxes(test, heat, data, frac)), ours)
    flipped = {k: h[:, ::-1] for k, h in heat.items()}
    assert _acc(score_boxes(test, flipped, data, frac)) < 0.6 * ours
    labels = sorted(test["label"].unique())
    other = {lab: labels[(k + 1) % len(labels)] for k, lab in enumerate(labels)}
    wrong_pairs = test.assign(label=test["label"].map(other))
    wrong = heatmaps_for(run, data, wrong_pairs, "gradcam")
    swapped = {(r, lab): wrong[(r, other[lab])] for (r, lab) in heat}
    assert _acc(score_boxes(test, swapped, data, frac)) < 0.6 * ours
    base = centred_baseline(test, data, gt[gt["split"] == "train"])
    assert np.isclose(_acc(base), centred)


def test_localize_table_joins_the_evaluation_report(phantom_run, localized, tmp_path):
    from cxrkit.workflows.evaluate import EvalConfig, evaluate_run

    out = evaluate_run(
        phantom_run, EvalConfig(n_boot=0, samples=0, out=str(tmp_path / "ev")), log=lambda m: None
    )
    page = (out / "report.html").read_text()
    assert page.count("Localization (heatmap boxes vs ground truth)") == 1 and "T(IoBB)=0.5" in page
    assert "heatmaps for each box" in page and page.rstrip().endswith("</html>")
