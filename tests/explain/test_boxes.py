"""Heatmap -> box is exact through resize and padding; IoBB and IoU are what the papers define."""

import numpy as np
import pandas as pd
import pytest

from cxrkit.data.transforms import Geometry, compute_geometry
from cxrkit.explain.boxes import Box, best_overlaps, heatmap_boxes, iobb, iou, localization_table
from cxrkit.explain.overlay import heatmap_to_source


@pytest.mark.parametrize("mode", ["pad", "crop"])
def test_box_survives_resize_and_padding_exactly(mode):
    # a 200 x 100 (w x h) image shown to a 64 px model: pad scales by 0.32 and adds 16 rows above
    geo = compute_geometry(200, 100, 64, mode)
    true = Box(50.0, 25.0, 100.0, 50.0) if mode == "pad" else Box(75.0, 25.0, 75.0, 50.0)
    out = true.to_output(geo)
    assert out == (Box(16.0, 24.0, 32.0, 16.0) if mode == "pad" else Box(16.0, 16.0, 48.0, 32.0))
    heat = np.zeros((64, 64))
    heat[int(out.y) : int(out.y + out.h), int(out.x) : int(out.x + out.w)] = 1.0
    heat[2:4, 2:4] = 0.9  # a smaller second blob: only the largest component is taken
    (box,) = heatmap_boxes(heat, frac=0.5)
    assert box == out
    assert box.to_source(geo) == true
    assert len(heatmap_boxes(heat, 0.5, max_boxes=2)) == 2


def test_nih_1024_frame_rescaled_to_the_image_used():
    # BBox_List_2017 gives boxes on 1024 x 1024 PNGs; the shared copies are 64 x 64
    nih = Box(512.0, 256.0, 128.0, 64.0)
    assert nih.scaled(64 / 1024, 64 / 1024) == Box(32.0, 16.0, 8.0, 4.0)


def test_heatmap_back_on_source_pixels():
    geo = compute_geometry(200, 100, 64, "pad")
    heat = np.zeros((64, 64), np.float32)
    heat[24:40, 16:48] = 1.0  # the box above, in model pixels
    src = heatmap_to_source(heat, geo)
    assert src.shape == (100, 200)
    inside, outside = src[30:70, 60:140], np.r_[src[:20].ravel(), src[80:].ravel()]
    assert inside.min() > 0.99 and outside.max() < 0.01


def test_iobb_iou_and_thresholds():
    t = Box(0, 0, 10, 10)
    assert iobb(Box(0, 0, 5, 5), t) == 1.0 and iou(Box(0, 0, 5, 5), t) == 0.25
    assert iobb(Box(5, 5, 10, 10), t) == 0.25 and np.isclose(iou(Box(5, 5, 10, 10), t), 25 / 175)
    assert iobb(Box(20, 20, 5, 5), t) == 0.0 and best_overlaps([], t) == (0.0, 0.0)
    assert heatmap_boxes(np.zeros((8, 8))) == []
    with pytest.raises(ValueError, match="fraction"):
        heatmap_boxes(np.ones((4, 4)), 0.0)
    scores = pd.DataFrame(
        {"label": ["Mass", "Mass", "Nodule"], "iobb": [0.6, 0.3, 0.95], "iou": [0.5, 0.1, 0.2]}
    )
    table = localization_table(scores)
    assert table.loc["T(IoBB)=0.5", "Mass"] == 0.5 and table.loc["T(IoBB)=0.9", "Nodule"] == 1.0
    assert table.loc["T(IoU)=0.3", "all"] == pytest.approx(1 / 3) and table.loc["boxes", "all"] == 3
    assert list(table.index[:5]) == [f"T(IoBB)={t:g}" for t in (0.1, 0.25, 0.5, 0.75, 0.9)]


def test_a_box_counts_only_when_its_overlap_is_strictly_above_t():
    """Wang et al. count a box as localized when IoBB > T: an overlap of exactly T does not count."""
    t = Box(0, 0, 10, 10)
    at, above = best_overlaps([Box(5, 0, 10, 10)], t), best_overlaps([Box(4, 0, 10, 10)], t)
    assert at == pytest.approx((0.5, 50 / 150)) and above == pytest.approx((0.6, 60 / 140))
    scores = pd.DataFrame({"label": ["Mass", "Mass"], "iobb": [at[0], above[0]], "iou": [0.3, 0.3 + 1e-9]})
    table = localization_table(scores)
    assert table.loc["T(IoBB)=0.5", "Mass"] == 0.5 and table.loc["T(IoBB)=0.25", "Mass"] == 1.0
    assert table.loc["T(IoU)=0.3", "Mass"] == 0.5 and table.loc["T(IoU)=0.4", "Mass"] == 0.0


def test_box_geometry_edges_clip_empty_and_tiny_boxes():
    geo = Geometry(src_w=100, src_h=50, size=100, sx=1.0, sy=1.0, ox=0.0, oy=25.0)  # 100x50 padded to 100
    assert Box(-10, 10, 30, 100).to_source(geo) == Box(0.0, 0.0, 20.0, 50.0)  # clipped to the image
    assert Box(-30, 30, 10, 10).to_source(geo).w == 0.0 and Box(0, 0, 100, 10).to_source(geo).h == 0.0
    assert Box(0, 0, 0.5, 2).area == 1.0 and Box(0, 0, -1, 2).area == 0.0 and Box(0, 0, 2, -3).area == 0.0
    t = Box(0, 0, 10, 10)
    assert iobb(Box(20, 0, 5, 5), t) == 0.0 and iou(Box(10.5, 0, 5, 5), t) == 0.0  # disjoint: nothing shared
    assert iobb(Box(1, 1, 0, 0), t) == 0.0 and iou(Box(1, 1, 0, 0), Box(3, 3, 0, 0)) == 0.0  # empty boxes
    tiny = Box(1, 1, 0.5, 0.5)  # area 0.25, inside t
    assert iobb(tiny, t) == 1.0 and iou(tiny, Box(1, 1, 0.5, 0.5)) == 1.0


def test_heatmap_threshold_is_relative_to_the_peak_and_inclusive():
    heat = np.zeros((6, 6))
    heat[1, 1], heat[1, 2], heat[4, 4] = 4.0, 2.0, 1.9  # peak 4: 2.0 is exactly half, 1.9 is below
    assert heatmap_boxes(heat, 0.5, max_boxes=5) == [Box(1.0, 1.0, 2.0, 1.0)]
    assert heatmap_boxes(heat, 1.0) == [Box(1.0, 1.0, 1.0, 1.0)]  # 1.0 (the peak alone) is allowed
    assert heatmap_boxes(np.zeros((0, 0))) == []
    with pytest.raises(ValueError, match="fraction"):
        heatmap_boxes(heat, 1.5)


def test_table_rows_counts_and_the_all_column_boundary():
    scores = pd.DataFrame(
        {"label": ["Mass", "Nodule", "Nodule"], "iobb": [0.5, 0.1, 0.9], "iou": [0.3, 0.1, 0.7]}
    )
    table = localization_table(scores)
    assert list(table.index) == [
        *(f"T(IoBB)={t:g}" for t in (0.1, 0.25, 0.5, 0.75, 0.9)),
        *(f"T(IoU)={t:g}" for t in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)),
        "boxes",
    ]
    assert list(table.loc["boxes"]) == [1, 2, 3]
    assert table.loc["T(IoBB)=0.5", "all"] == pytest.approx(1 / 3)  # 0.5 is not above 0.5
    assert table.loc["T(IoU)=0.7", "all"] == 0.0 and table.loc["T(IoU)=0.1", "all"] == pytest.approx(2 / 3)
