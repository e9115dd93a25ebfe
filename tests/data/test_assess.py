"""The one assessability rule: blank, nearly blank, posterized and absurdly shaped images are never scored."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import chest_like, shared_path

from cxrkit.data.assess import (
    MAX_ASPECT,
    MAX_MODE_SHARE,
    MIN_CORRELATION,
    MIN_LEVELS,
    MIN_RELIEF,
    MIN_SPAN,
    assessment_problem,
    check_assessable,
    compute_content_stats,
)
from cxrkit.data.decode import NotAssessableError, read_image


def test_content_stats_match_an_independent_numpy_computation():
    rng = np.random.default_rng(3)
    img = np.clip(rng.normal(100, 30, (70, 90)), 0, 255).astype(np.uint8)
    stats = compute_content_stats(img)
    values, counts = np.unique(img, return_counts=True)
    assert stats.levels == len(values)
    assert stats.mode_share == pytest.approx(counts.max() / img.size)
    # the histogram percentiles are the "lower" order statistics numpy computes
    lo, hi = np.percentile(img, [1, 99], method="inverted_cdf")
    assert stats.span == int(hi) - int(lo)
    assert stats.aspect == pytest.approx(90 / 70)


@pytest.mark.parametrize(
    ("name", "img", "words"),
    [
        ("black", np.zeros((256, 256), np.uint8), "one grey value"),
        ("white", np.full((256, 256), 255, np.uint8), "one grey value"),
        ("grey", np.full((300, 200), 117, np.uint8), "one grey value"),
        # a blank film with a burned-in marker: 96 % of pixels one value
        ("blank+marker", np.pad(np.full((20, 20), 250, np.uint8), 48), "one grey value"),
        # faint noise around one value: many values, but 98 % within 6 levels
        (
            "faint noise",
            (100 + np.random.default_rng(0).integers(0, 7, (128, 128))).astype(np.uint8),
            "within",
        ),
        # two levels (a 16-bit image of values 1000/1001 stretched to 0/255 looks like this)
        ("binary", (np.random.default_rng(1).random((128, 128)) > 0.5).astype(np.uint8) * 255, "distinct"),
    ],
)
def test_images_without_content_are_not_assessable(name, img, words):
    problem = assessment_problem(img)
    assert problem is not None and words in problem, (name, problem)
    with pytest.raises(NotAssessableError, match="no image content"):
        check_assessable(img, f"{name}.png")


def test_each_limit_bites_exactly_at_its_documented_value():
    base = chest_like(200, 200)
    assert assessment_problem(base) is None
    # aspect: 3:1 passes, just over fails
    assert assessment_problem(chest_like(64, int(64 * MAX_ASPECT))) is None
    assert "ratio" in assessment_problem(chest_like(64, int(64 * MAX_ASPECT) + 1))
    assert assessment_problem(chest_like(64, 192)) is None  # 3:1, as documented
    assert "ratio" in assessment_problem(chest_like(64, 193))
    # mode share: just under the limit passes the mode test
    img = chest_like(100, 100, seed=2).copy()
    flat = img.reshape(-1)
    n = int(MAX_MODE_SHARE * flat.size)
    flat[: n - 1] = 7
    assert "one grey value" not in (assessment_problem(img) or "")
    flat[: n + 1] = 7
    assert "one grey value" in assessment_problem(img)

    # span: a smooth picture squeezed into w grey levels: w = MIN_SPAN + 12 passes, MIN_SPAN - 4 fails
    def squeezed(w: int) -> np.ndarray:
        base = chest_like(200, 200, seed=5).astype(np.float64)
        return np.round(100 + (base - base.min()) * w / np.ptp(base)).astype(np.uint8)

    assert compute_content_stats(squeezed(MIN_SPAN + 12)).span >= MIN_SPAN
    assert assessment_problem(squeezed(MIN_SPAN + 12)) is None
    assert compute_content_stats(squeezed(MIN_SPAN - 4)).span < MIN_SPAN
    assert "nearly constant" in assessment_problem(squeezed(MIN_SPAN - 4))
    # levels: MIN_LEVELS - 1 distinct values spread over the range fails
    levels = np.linspace(0, 255, MIN_LEVELS - 1).astype(np.uint8)
    poster = levels[np.random.default_rng(4).integers(0, len(levels), (120, 120))]
    assert "distinct" in assessment_problem(poster)


def test_what_a_min_max_stretch_makes_of_blank_images_is_not_assessable(tmp_path):
    """A blank detector or a constant 16-bit file with faint noise becomes full-range noise when
    stretched; a blank film with a heel-effect gradient is a plane; a binary JPEG gains levels."""
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    faint = np.round(rng.normal(30000, 3, (256, 256))).astype(np.uint16)
    Image.fromarray(faint).save(tmp_path / "faint16.png")
    assert "uncorrelated" in assessment_problem(read_image(tmp_path / "faint16.png"))
    heel = np.linspace(60, 200, 256)[None, :] + rng.normal(0, 0.5, (256, 256))  # wide: passes the span
    assert "smooth gradient" in assessment_problem(np.clip(np.round(heel), 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    Image.fromarray((rng.random((256, 256)) > 0.5).astype(np.uint8) * 255).save(buf, "JPEG", quality=90)
    assert "uncorrelated" in assessment_problem(np.asarray(Image.open(buf)))
    for stats in (compute_content_stats(chest_like(128, 128, seed=k)) for k in range(3)):
        assert stats.correlation > MIN_CORRELATION and stats.relief > MIN_RELIEF


def test_a_hot_pixel_that_took_the_grey_range_is_named(tmp_path):
    from conftest import shared_path

    real = read_image(shared_path("data", "samples", "00000001_000.png")).astype(np.uint16) * 16
    real[0, 0] = 65535  # a burned-in marker at full white squeezes the anatomy into 16 of 255 levels
    from PIL import Image

    Image.fromarray(real).save(tmp_path / "hot.png")
    problem = assessment_problem(read_image(tmp_path / "hot.png"))
    assert "outliers span 255" in problem and "window the image" in problem


def test_extreme_aspect_is_not_assessable_with_its_size_named():
    problem = assessment_problem(np.tile(chest_like(40, 400), (1, 75)))
    assert "30000x40" in problem and "3:1" in problem


def test_too_small_keeps_its_message_and_the_model_size_exception():
    assert "below the 32 px" in assessment_problem(chest_like(20, 200))
    assert assessment_problem(chest_like(28, 28), min_side=28) is None


def test_no_real_chest_xray_in_shared_is_called_not_assessable():
    """The limits were set from these images: none of the 6,221 may trip them (no false alarms)."""
    root = shared_path("data")
    paths = sorted(root.glob("nih14-64px/images/*.png"))
    paths += sorted(root.glob("kermany-pneumonia/train/*/*.jpeg"))[::5]  # a fifth: the suite's time
    paths += sorted((root / "samples").iterdir())
    assert len(paths) > 2000
    tripped = [(p.name, assessment_problem(read_image(p))) for p in paths]
    assert [t for t in tripped if t[1]] == []


def test_synthetic_phantoms_are_assessable():
    from cxrkit.data.synthetic import PhantomDataset

    ds = PhantomDataset(n=20, size=128, seed=0)
    assert all(assessment_problem(ds.load_image(i)) is None for i in range(20))


def _shaped(values: np.ndarray, side: int = 200) -> np.ndarray:
    """``values`` (side*side of them) placed on a smooth, non-planar field by rank: the same histogram,
    neighbours correlated and relief left after a plane (so only the histogram limit is tested)."""
    field = chest_like(side, side, seed=7).astype(np.float64) + np.linspace(0, 1e-3, side * side).reshape(
        side, side
    )
    out = np.empty(side * side, dtype=np.uint8)
    out[np.argsort(field.ravel(), kind="stable")] = np.sort(values)
    return out.reshape(side, side)


def _spread(lo: int, hi: int, n: int = 40_000, tail: float = 0.02) -> np.ndarray:
    """n values: ``tail`` of them at lo, ``tail`` at hi, the rest evenly between: p1 = lo, p99 = hi."""
    k = int(n * tail)
    return np.r_[np.full(k, lo), np.linspace(lo, hi, n - 2 * k).round(), np.full(k, hi)].astype(np.uint8)


def test_span_mode_and_levels_limits_are_exact():
    at = _shaped(_spread(100, 148))  # literal limits, as documented: 48 levels, 90 %, 24 values
    assert compute_content_stats(at).span == 48 and assessment_problem(at) is None
    below = _shaped(_spread(100, 147))
    assert compute_content_stats(below).span == 47 and "nearly constant" in assessment_problem(below)
    # the outlier wording from a full range of exactly 4x the span
    values = _spread(100, 100 + 20)
    values[0] = 100 + 80  # one pixel: full range 80 = 4 x 20
    assert "outliers span 80" in assessment_problem(_shaped(values))
    values[0] = 100 + 79
    assert "nearly constant" in assessment_problem(_shaped(values))
    # mode share: exactly the limit is blank, just under is not
    n, k = 40_000, 36_000  # 90 %
    blank = np.r_[np.full(k, 50), np.linspace(60, 250, n - k).round()].astype(np.uint8)
    assert compute_content_stats(_shaped(blank)).mode_share == 0.90
    assert "one grey value" in assessment_problem(_shaped(blank))
    blank[0] = 51
    assert "one grey value" not in (assessment_problem(_shaped(blank)) or "")
    # levels: exactly MIN_LEVELS pass, one fewer fails
    for count, ok in ((24, True), (23, False)):
        steps = np.linspace(0, 230, count).round().astype(np.uint8)
        poster = _shaped(np.repeat(steps, -(-40_000 // count))[:40_000])
        assert compute_content_stats(poster).levels == count
        assert (assessment_problem(poster) is None) == ok, (count, assessment_problem(poster))


def test_correlation_matches_an_independent_computation():
    from cxrkit.data.assess import _neighbour_correlation

    rng = np.random.default_rng(2)
    for img in (
        chest_like(60, 90, seed=1),
        rng.integers(0, 256, (40, 50)).astype(np.uint8),
        chest_like(2, 30),
    ):
        c = img.astype(np.float64) - img.mean()
        across = (c[:, 1:] * c[:, :-1]).mean() / (c * c).mean()
        down = (c[1:, :] * c[:-1, :]).mean() / (c * c).mean()
        assert _neighbour_correlation(img) == pytest.approx(min(across, down), abs=1e-12)
    assert _neighbour_correlation(np.full((40, 40), 9, np.uint8)) == 0.0  # flat: no correlation at all
    assert _neighbour_correlation(chest_like(1, 40)) == 0.0  # one row: no vertical neighbours


def test_relief_is_what_a_plane_leaves_of_the_thumbnail():
    from cxrkit.data.assess import _relief

    side = 64 * 10  # the thumbnail is 64 px: 10 px blocks are its pixels
    y, x = np.mgrid[0:side, 0:side]
    plane = 60 + 0.1 * x + 0.05 * y
    assert _relief(np.round(plane).astype(np.uint8)) < 0.6  # a plane (rounded): nothing left
    checker = np.where(((y // 10) + (x // 10)) % 2 == 0, 7.0, -7.0)  # +-7 on THUMB x THUMB blocks
    img = (np.round(plane) + checker).astype(np.uint8)
    assert _relief(img) == pytest.approx(14.0, abs=0.6)  # p5..p95 of +-7 after the plane


def test_the_two_structure_limits_compare_as_documented(monkeypatch):
    import dataclasses

    from cxrkit.data import assess

    base = assess.compute_content_stats(chest_like(128, 128))
    for field, limit, words in (
        ("correlation", 0.3, "uncorrelated"),
        ("relief", 12.0, "gradient"),
    ):
        for value, ok in ((limit, True), (limit - 1e-9, False)):
            stats = dataclasses.replace(base, **{field: value})
            monkeypatch.setattr(assess, "compute_content_stats", lambda _img, s=stats: s)
            problem = assessment_problem(chest_like(128, 128))
            assert (problem is None) == ok and (ok or words in problem), (field, value, problem)


def test_relief_is_the_5th_to_95th_percentile_of_what_the_plane_leaves():
    """A bowl symmetric about the centre is orthogonal to every plane: the residual is the bowl itself,
    so the relief is its 5th-95th percentile range, computed here without fitting anything."""
    from cxrkit.data.assess import THUMB, _relief

    y, x = np.mgrid[0:THUMB, 0:THUMB]
    bowl = np.round(((x - (THUMB - 1) / 2) ** 2 + (y - (THUMB - 1) / 2) ** 2) / 20)
    img = (20 + x + bowl).astype(np.uint8)  # a tilt plus the bowl, one thumbnail pixel per pixel
    lo, hi = np.percentile(bowl, [5, 95])
    assert _relief(img) == pytest.approx(hi - lo, abs=1e-6)


def test_content_stats_of_degenerate_shapes_and_the_full_grey_range():
    one = compute_content_stats(np.full((1, 1), 7, np.uint8))
    assert (one.mode_share, one.levels, one.aspect, one.full_range, one.span) == (1.0, 1, 1.0, 0, 0)
    line = compute_content_stats(np.array([[0, 10, 200, 10, 10]], np.uint8))
    assert line.aspect == 5.0 and line.full_range == 200 and line.mode_share == pytest.approx(0.6)
