"""Test-time augmentation: deterministic shifted views whose logits a run averages (model.tta)."""

import numpy as np
import pytest
from conftest import chest_like

from cxrkit.data.transforms import tta_views


def test_views_are_the_image_and_small_shifts_with_edge_fill():
    imgs = np.random.default_rng(0).integers(0, 256, (2, 40, 40), dtype=np.uint8)
    views = tta_views(imgs, 5)
    d = round(0.03 * 40)
    assert len(views) == 5 and views[0] is imgs
    right, left, down, up = views[1:]
    np.testing.assert_array_equal(right[:, :, d:], imgs[:, :, :-d])
    np.testing.assert_array_equal(right[:, :, :d], np.repeat(imgs[:, :, :1], d, axis=2))
    np.testing.assert_array_equal(left[:, :, :-d], imgs[:, :, d:])
    np.testing.assert_array_equal(down[:, d:], imgs[:, :-d])
    np.testing.assert_array_equal(up[:, :-d], imgs[:, d:])
    assert len(tta_views(imgs, 1)) == 1
    with pytest.raises(ValueError, match=r"1\.\.5"):
        tta_views(imgs, 6)


def test_a_run_averages_the_views_logits(phantom_run):
    from cxrkit.run.model import RunModel

    run = RunModel.load(phantom_run, "cpu")
    assert run.tta == 0
    imgs = np.stack([chest_like(64, 64, seed=k) for k in range(4)])  # assessable: predict scores them
    expect = np.mean([run.logits(v, tta=0) for v in tta_views(imgs, 3)], axis=0)
    np.testing.assert_allclose(run.logits(imgs, tta=3), expect, rtol=1e-6)
    assert not np.allclose(run.logits(imgs, tta=3), run.logits(imgs))
    table = run.predict(list(imgs), tta=3)
    np.testing.assert_allclose(table[list(run.labels)].to_numpy(), run.package.probs(expect), rtol=1e-5)


def test_tta_is_checked_in_the_config_and_the_package():
    from cxrkit.config import build_run_config

    with pytest.raises(ValueError, match=r"model\.tta"):
        build_run_config({"data": {"source": "phantom"}, "model": {"tta": 9}})
