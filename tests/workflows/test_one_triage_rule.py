"""One triage decision: predict, triage, evaluate, robustness and the service flag the same studies."""

from __future__ import annotations

import numpy as np
import pytest

from cxrkit.evaluate.triage import flag_names, is_flagged
from cxrkit.outputs import read_csv
from cxrkit.run import files
from cxrkit.run.data import load_run_data
from cxrkit.run.model import RunModel, predict_split


def test_the_decision_itself():
    s = np.array([0.2, 0.5, 0.50000001, np.nan, 1.0])
    assert is_flagged(s, 0.5).tolist() == [False, True, True, False, True]  # at the threshold: flagged
    assert flag_names(s, 0.5).tolist() == ["normal", "abnormal", "abnormal", "not scored", "abnormal"]


def test_every_path_flags_the_same_studies(phantom_run, phantom_eval, tmp_path):
    pytest.importorskip("fastapi")
    from cxrkit.config import ServeConfig
    from cxrkit.serve.app import create_app
    from cxrkit.workflows.robustness import RobustnessConfig, compute_robustness
    from cxrkit.workflows.triage import triage

    run = RunModel.load(phantom_run, "cpu")
    data = load_run_data(run.path, log=lambda m: None)
    ev = predict_split(run, data, "test")
    ids = ev.meta["image_id"].astype(str).tolist()
    images = [ev.image(i) for i in range(len(ids))]
    flags = flag_names(*_score(run, ev.probs))
    flags[~ev.ood.in_distribution] = "out of distribution"  # read manually, on every path
    truth = dict(zip(ids, flags, strict=True))
    assert {"abnormal", "normal", "out of distribution"} <= set(truth.values()), "the check needs every kind"

    predicted = run.predict(images)["triage_flag"].tolist()  # the same pixels, as new images
    assert dict(zip(ids, predicted, strict=True)) == truth

    folder = triage(run, split="test", out=tmp_path / "t", log=lambda m: None)
    for worklist in (folder / files.WORKLIST, phantom_eval / files.WORKLIST):
        table = read_csv(worklist, text=("image_id", "flag"))
        assert dict(zip(table["image_id"], table["flag"], strict=True)) == truth, worklist

    service = create_app(run, ServeConfig()).state.service
    answers = [
        service.result(np.r_[p, o], "x", im.shape, 3)["triage"]["flag"]
        for p, o, im in zip(ev.probs, ev.ood.scores, images, strict=True)
    ]
    assert answers == [truth[i] for i in ids]

    table = compute_robustness(
        run, data, RobustnessConfig(shifts=("gamma",), severities=(1,)), log=lambda m: None
    )
    clean = table[table["severity"] == 0].iloc[0]
    score, threshold = _score(run, ev.probs)  # robustness counts the operating point's decisions
    assert clean["flagged_share"] == pytest.approx(np.mean(score >= threshold))


def _score(run: RunModel, probs: np.ndarray) -> tuple[np.ndarray, float]:
    from cxrkit.evaluate.triage import abnormality_score

    point = run.package.operating_point
    return abnormality_score(probs, run.labels, point.score)[0], point.threshold
