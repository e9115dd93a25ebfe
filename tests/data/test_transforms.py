"""Resizing: pad keeps aspect with black borders, crop fills; boxes map exactly both ways."""

import numpy as np
import pytest

from cxrkit.data.transforms import compute_geometry, resize_square


def test_pad_keeps_whole_image_and_centres_it():
    img = np.full((100, 200), 200, np.uint8)
    out, geo = resize_square(img, 64, "pad")
    assert out.shape == (64, 64)
    assert geo.sx == geo.sy == 64 / 200 and (geo.ox, geo.oy) == (0, 16)
    assert (out[:16] == 0).all() and (out[48:] == 0).all() and (out[16:48] == 200).all()


def test_crop_fills_square_and_cuts_long_side():
    img = np.zeros((100, 200), np.uint8)
    img[:, 50:150] = 255  # the central square
    out, geo = resize_square(img, 50, "crop")
    assert geo.sx == 0.5 and geo.ox == -25
    assert (out[:, 1:-1] == 255).all() and (out > 127).all()  # edge columns blend (antialiasing)


@pytest.mark.parametrize("mode", ["pad", "crop"])
@pytest.mark.parametrize("w, h", [(1024, 1024), (2500, 2048), (600, 900)])
def test_box_maps_to_output_and_back_exactly(mode, w, h):
    geo = compute_geometry(w, h, 224, mode)
    box = (123.5, 456.25, 78.0, 90.5)
    assert np.allclose(geo.to_source(*geo.to_output(*box)), box)


def test_a_bright_box_lands_where_geometry_says():
    img = np.zeros((300, 400), np.uint8)
    img[100:160, 200:280] = 255  # box x=200, y=100, w=80, h=60
    out, geo = resize_square(img, 100, "pad")
    x, y, w, h = geo.to_output(200, 100, 80, 60)
    ys, xs = np.nonzero(out > 127)
    assert abs(xs.min() - x) <= 1 and abs(xs.max() + 1 - (x + w)) <= 1
    assert abs(ys.min() - y) <= 1 and abs(ys.max() + 1 - (y + h)) <= 1


def test_bad_mode_is_named():
    with pytest.raises(ValueError, match="'stretch'"):
        compute_geometry(10, 10, 5, "stretch")  # type: ignore[arg-type]
