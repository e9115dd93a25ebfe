"""Hostile and odd image files: each is decoded correctly or refused with one line naming the file.

Nothing here may hang (a FIFO), crash (a bomb) or decode into a silently wrong image.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import chest_like, jpeg_bytes, png_bytes, write_dicom
from PIL import Image
from pngs import write_png

from cxrkit.data.decode import (
    ImageReadError,
    ImageTooLargeError,
    NotAssessableError,
    read_image,
)


def _read_within(path: Path, seconds: float = 10.0):
    """read_image in a thread: a test that would block forever (reading a FIFO) fails instead."""
    box: dict = {}

    def run() -> None:
        try:
            box["img"] = read_image(path)
        except BaseException as err:  # handed to the test
            box["err"] = err

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"reading {path} blocked for {seconds} s"
    if "err" in box:
        raise box["err"]
    return box["img"]


def _refused(path: Path, words: str, kind: type[ImageReadError] = ImageReadError) -> str:
    with pytest.raises(kind) as info:
        _read_within(path)
    msg = str(info.value)
    assert msg.startswith(str(path)) and "\n" not in msg and words in msg, msg
    return msg


def test_empty_truncated_and_text_files(tmp_path):
    good_png, good_jpg = png_bytes(chest_like(64, 64)), jpeg_bytes(chest_like(64, 64))
    cases = {
        "empty.png": (b"", "empty file"),
        "trunc.png": (good_png[: len(good_png) // 2], "truncated or corrupt"),
        "trunc.jpg": (good_jpg[: len(good_jpg) // 2], "truncated or corrupt"),
        "text.png": (b"hello, I am not an image", "not a PNG/JPEG/DICOM"),
    }
    for name, (data, words) in cases.items():
        (tmp_path / name).write_bytes(data)
        _refused(tmp_path / name, words)


def test_declared_bomb_is_refused_from_its_header(tmp_path):
    bomb = write_png(tmp_path / "bomb.png", 30_000, 30_000, pixels=False)
    msg = _refused(bomb, "900,000,000 pixels, over the limit of 50,000,000", ImageTooLargeError)
    assert "30000x30000" in msg


def test_pixel_cap_is_configurable_from_the_environment(tmp_path, monkeypatch):
    img = tmp_path / "big.png"
    img.write_bytes(png_bytes(chest_like(100, 100)))
    monkeypatch.setenv("CXRKIT_MAX_PIXELS", "5000")
    _refused(img, "over the limit of 5,000", ImageTooLargeError)
    monkeypatch.setenv("CXRKIT_MAX_PIXELS", "20000")
    assert read_image(img).shape == (100, 100)
    monkeypatch.setenv("CXRKIT_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="CXRKIT_MAX_PIXELS"):
        read_image(img)


def test_memory_cap_refuses_wide_dicom_pixels_within_the_pixel_cap(tmp_path, monkeypatch):
    """A 40 x 40 DICOM declaring 3 samples of 32 bits (19 KB) fits a 2,000 pixel cap but not its 8 KB."""
    import pydicom

    path = write_dicom(tmp_path / "wide.dcm", chest_like(40, 40).astype(np.uint16))
    monkeypatch.setenv("CXRKIT_MAX_PIXELS", "2000")
    assert read_image(path).shape == (40, 40)
    ds = pydicom.dcmread(path)
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 3, 32, 32, 31
    ds.save_as(path)
    _refused(path, "3-sample 32-bit pixels would need", ImageTooLargeError)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this OS")
def test_fifo_device_loop_and_folder_named_like_images_are_refused(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    _refused(fifo, "named pipe")
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    _refused(loop, "symbolic link loop")
    broken = tmp_path / "broken.png"
    broken.symlink_to(tmp_path / "nowhere.png")
    _refused(broken, "broken symbolic link")
    (tmp_path / "dir.png").mkdir()
    _refused(tmp_path / "dir.png", "is a folder")
    if Path("/dev/null").exists():
        dev = tmp_path / "dev.png"
        dev.symlink_to("/dev/null")
        _refused(dev, "device file")


def test_colour_palette_cmyk_rgba_and_16bit_decode_to_the_right_grey(tmp_path):
    grey = chest_like(40, 50)
    cases = {
        "rgba.png": Image.fromarray(np.dstack([grey] * 3 + [np.full_like(grey, 7)]), "RGBA"),
        "palette.png": Image.fromarray(grey, "L").convert("P"),
        "cmyk.jpg": Image.fromarray(grey, "L").convert("CMYK"),
    }
    for name, im in cases.items():
        buf = io.BytesIO()
        im.save(
            buf,
            format="JPEG" if name.endswith("jpg") else "PNG",
            **({"quality": 100} if "jpg" in name else {}),
        )
        (tmp_path / name).write_bytes(buf.getvalue())
        out = read_image(tmp_path / name)
        assert out.shape == grey.shape and out.dtype == np.uint8
        tol = 6 if name.endswith("jpg") else 0  # JPEG is lossy; PNG must be exact
        assert np.abs(out.astype(int) - grey.astype(int)).max() <= tol, name
    sixteen = grey.astype(np.uint16) * 257
    Image.fromarray(sixteen).save(tmp_path / "16.png")
    assert np.array_equal(
        read_image(tmp_path / "16.png"),
        np.round((grey - grey.min()) * (255.0 / (grey.max() - grey.min()))).astype(np.uint8),
    )


def test_exif_orientation_of_phone_photos_is_applied(tmp_path):
    """A photo of a film stored sideways with Orientation=6 (rotate 90 clockwise to view) reads upright."""
    upright = np.zeros((60, 40), np.uint8)
    upright[:10] = 255  # bright band at the top of the upright image
    stored = np.rot90(upright, k=1)  # what the camera wrote: the band on the left
    exif = Image.Exif()
    exif[0x0112] = 6
    for fmt in ("JPEG", "PNG"):
        path = tmp_path / f"photo.{fmt.lower()}"
        Image.fromarray(stored).save(
            path, format=fmt, exif=exif, **({"quality": 100} if fmt == "JPEG" else {})
        )
        out = read_image(path)
        assert out.shape == upright.shape, fmt
        assert out[:10].mean() > 200 and out[20:].mean() < 50, fmt


def test_dicom_without_pixels_monochrome1_and_ct(tmp_path):
    _refused(write_dicom(tmp_path / "nopix.dcm", None), "no pixel data")
    arr = chest_like(48, 48).astype(np.uint16) * 16
    m1 = read_image(write_dicom(tmp_path / "m1.dcm", arr, photometric="MONOCHROME1"))
    m2 = read_image(write_dicom(tmp_path / "m2.dcm", arr))
    assert np.array_equal(m1, 255 - m2)
    ct = write_dicom(tmp_path / "ct.dcm", arr)
    import pydicom

    ds = pydicom.dcmread(ct)
    ds.Modality = "CT"
    ds.save_as(ct)
    _refused(ct, "modality CT is not a projection radiograph", NotAssessableError)


def test_unicode_and_space_paths_read(tmp_path):
    d = tmp_path / "Röntgen Bilder" / "患者 1"
    d.mkdir(parents=True)
    p = d / "thorax ä.png"
    p.write_bytes(png_bytes(chest_like(40, 40)))
    assert read_image(p).shape == (40, 40)
    _refused(d / "fehlt ö.png", "file not found")


def test_mutated_headers_only_ever_raise_image_read_errors(tmp_path):
    """A small fuzz: single-byte changes in the first bytes of PNG, JPEG and DICOM files, and cut-offs."""
    rng = np.random.default_rng(0)
    dcm = write_dicom(tmp_path / "base.dcm", chest_like(32, 32).astype(np.uint16)).read_bytes()
    seeds = {".png": png_bytes(chest_like(40, 40)), ".jpg": jpeg_bytes(chest_like(40, 40)), ".dcm": dcm}
    path = tmp_path / "f"
    for suffix, good in seeds.items():
        cases = [good[:n] for n in (1, 8, 16, 18, 23, 24, 33, 140, 200)]
        for _ in range(150):
            b = bytearray(good)
            b[int(rng.integers(0, min(len(b), 400)))] = int(rng.integers(0, 256))
            cases.append(bytes(b))
        for data in cases:
            p = path.with_suffix(suffix)
            p.write_bytes(data)
            try:
                img = read_image(p)
            except ImageReadError as err:
                assert str(err).startswith(str(p)) and "\n" not in str(err)
            else:
                assert img.dtype == np.uint8 and img.ndim == 2


def test_oversized_file_is_refused_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRKIT_MAX_PIXELS", "1000")
    path = tmp_path / "huge.dcm"
    with open(path, "wb") as fh:
        fh.truncate(17 << 20)  # sparse: 17 MB of nothing, more than 4 x 1,000 + 16 MB
    _refused(path, "more than an image within the limit", ImageTooLargeError)


def test_only_png_and_jpeg_reach_pillow(tmp_path):
    """An EPS (run by Ghostscript) or a GIF named .png is not decoded as such."""
    Image.fromarray(chest_like(40, 40)).save(tmp_path / "x.gif", format="GIF")
    (tmp_path / "gif.png").write_bytes((tmp_path / "x.gif").read_bytes())
    _refused(tmp_path / "gif.png", "not a PNG/JPEG/DICOM")
    (tmp_path / "eps.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    _refused(tmp_path / "eps.png", "not a PNG/JPEG/DICOM")


def test_a_newline_in_a_file_name_cannot_forge_a_second_line(tmp_path):
    path = tmp_path / "bad\nFAKE: ok.png"
    path.write_bytes(b"")
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert "\n" not in str(info.value) and "bad\\nFAKE" in str(info.value)


def test_multi_frame_dicom_is_not_assessable(tmp_path):
    import pydicom

    path = write_dicom(tmp_path / "cine.dcm", np.zeros((3 * 40, 40), np.uint16))
    ds = pydicom.dcmread(path)
    ds.Rows, ds.NumberOfFrames = 40, 3
    ds.save_as(path)
    _refused(path, "3 frames", NotAssessableError)
