"""Decoding: every input becomes one grey uint8 channel; bad files give one line naming the file."""

import numpy as np
import pytest
from conftest import chest_like, jpeg_bytes, png_bytes, shared_path, write_dicom

from cxrkit.data.decode import (
    ImageReadError,
    ImageTooLargeError,
    decode_bytes,
    decode_image_bytes,
    read_image,
    scale_to_uint8,
)


def test_grey_png_round_trips_exactly(tmp_path):
    g = chest_like()
    (tmp_path / "a.png").write_bytes(png_bytes(g))
    assert np.array_equal(read_image(tmp_path / "a.png"), g)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA"])
def test_grey_stored_as_colour_keeps_exact_grey_values(tmp_path, mode):
    g = chest_like()
    chans = {"RGB": [g, g, g], "RGBA": [g, g, g, np.full_like(g, 200)], "LA": [g, np.full_like(g, 255)]}
    (tmp_path / "c.png").write_bytes(png_bytes(np.dstack(chans[mode]), mode))
    out = read_image(tmp_path / "c.png")
    assert out.dtype == np.uint8 and out.ndim == 2 and np.array_equal(out, g)


def test_true_colour_becomes_luma(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 255
    (tmp_path / "red.png").write_bytes(png_bytes(rgb))
    assert read_image(tmp_path / "red.png")[0, 0] == 76  # ITU-R 601: 0.299 * 255


def test_16bit_png_is_scaled_to_full_8bit_range(tmp_path):
    a = np.linspace(1000, 4000, 64 * 64).reshape(64, 64).astype(np.uint16)  # 12-bit content
    (tmp_path / "d.png").write_bytes(png_bytes(a))
    out = read_image(tmp_path / "d.png")
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)  # monotone: order of grey levels kept


def test_bad_files_each_give_one_line_naming_the_file(bad_files):
    reasons = {
        "truncated": "truncated",
        "empty": "empty file",
        "text": "unrecognised format",
        "nopixels": "no pixel data",
    }
    for stem, path in bad_files.items():
        with pytest.raises(ImageReadError) as err:
            read_image(path)
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith(str(path)) and reasons[stem] in msg


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ImageReadError, match=r"nope\.png: file not found"):
        read_image(tmp_path / "nope.png")


def test_dicom_monochrome1_is_inverted_so_air_is_dark(tmp_path):
    a = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (8, 1))  # left: low values
    m2 = read_image(write_dicom(tmp_path / "m2.dcm", a, bits_stored=12))
    m1 = read_image(write_dicom(tmp_path / "m1.dcm", a, photometric="MONOCHROME1", bits_stored=12))
    assert m2[0, 0] == 0 and m2[0, -1] == 255
    assert np.array_equal(m1, 255 - m2)


def test_dicom_rescale_and_window_are_applied(tmp_path):
    a = np.tile(np.arange(0, 2000, 20, dtype=np.uint16), (4, 1))
    # window 500..1500 in rescaled units: values outside clip to black/white
    out = read_image(
        write_dicom(tmp_path / "w.dcm", a, bits_stored=12, slope=1.0, intercept=0.0, window=(1000, 1000))
    )
    assert out[0, 0] == 0 and out[0, -1] == 255
    assert (out[0, :25] == 0).all() and (out[0, 76:] == 255).all()  # 0..480 black, >=1520 white
    assert 0 < out[0, 50] < 255


def test_dicom_detected_by_magic_without_extension(tmp_path):
    a = np.arange(64, dtype=np.uint16).reshape(8, 8) * 50
    p = write_dicom(tmp_path / "x.dcm", a, bits_stored=12)
    q = tmp_path / "noext"
    q.write_bytes(p.read_bytes())
    assert np.array_equal(read_image(q), read_image(p))


def test_scale_to_uint8_constant_image_is_black():
    assert scale_to_uint8(np.full((3, 3), 7, np.uint16)).max() == 0


def test_decode_bytes_names_the_source():
    with pytest.raises(ImageReadError, match=r"shard\[7\]"):
        decode_image_bytes(b"garbage", "shard[7]")


def test_real_dicom_decodes_to_plausible_chest():
    p = shared_path("data", "samples", "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm")
    img = read_image(p)
    assert img.shape == (1024, 1024) and img.dtype == np.uint8
    assert 60 < img.mean() < 200 and img.std() > 30  # a real exposure, not blank or saturated
    # chest X-ray: the mediastinum (centre column band) is brighter than the lung fields beside it
    centre = img[300:700, 460:560].mean()
    lungs = (img[300:700, 200:350].mean() + img[300:700, 680:830].mean()) / 2
    assert centre > lungs


@pytest.mark.parametrize(
    "name, shape",
    [("00000001_000.png", (512, 512)), ("16747_3_1.jpg", (885, 1036)), ("h0001.png", (512, 512))],
)
def test_real_sample_files_decode_to_one_grey_channel(name, shape):
    img = read_image(shared_path("data", "samples", name))
    assert img.shape == shape and img.dtype == np.uint8 and img.std() > 20


def test_pixel_limit_refuses_before_decoding_png_jpeg_and_dicom(tmp_path):
    img = chest_like(60, 80)
    dcm = write_dicom(tmp_path / "a.dcm", (img.astype(np.uint16) * 16)).read_bytes()
    for name, data in (("a.png", png_bytes(img)), ("a.jpg", jpeg_bytes(img)), ("a.dcm", dcm)):
        assert decode_bytes(data, name, max_pixels=4800).shape == (60, 80)  # exactly at the limit: fine
        with pytest.raises(ImageTooLargeError, match=r"80x60 = 4,800 pixels, over the limit of 4,799"):
            decode_bytes(data, name, max_pixels=4799)
    # DICOM detected by its magic bytes even without a .dcm name; empty bytes named
    assert decode_bytes(dcm, "upload").shape == (60, 80)
    with pytest.raises(ImageReadError, match="upload: empty file"):
        decode_bytes(b"", "upload")


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", ">u2", ">i2", "int32", "float32"])
@pytest.mark.parametrize("span", ["full", "narrow"])
def test_scale_to_uint8_is_the_min_max_formula(dtype, span):
    """The table used for 8/16-bit integers (either byte order: big-endian DICOM) and the in-place
    float path equal the plain formula."""
    rng = np.random.default_rng(7)
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        lo, hi = (info.min, info.max) if span == "full" else (max(info.min, -5), 90)
        arr = rng.integers(lo, hi, (300, 170), endpoint=True).astype(dtype)
    else:
        arr = rng.uniform(-3.5, 1e4 if span == "full" else 2.0, (300, 170)).astype(dtype)
    a = arr.astype(np.float64)
    expected = np.round((a - a.min()) * (255.0 / (a.max() - a.min()))).astype(np.uint8)
    assert np.array_equal(scale_to_uint8(arr), expected)
