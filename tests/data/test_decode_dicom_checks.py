"""DICOM header checks: stored bits, a missing Modality, compressed pixel data and its decoders."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import chest_like, write_dicom
from PIL import Image

from cxrkit.data.decode import ImageReadError, NotAssessableError, decode_bytes, read_image


def _image16() -> np.ndarray:
    return chest_like(64, 64).astype(np.uint16) * 16  # 12-bit values, up to 4080


def test_pixels_beyond_bits_stored_are_unreadable_not_masked(tmp_path):
    path = write_dicom(tmp_path / "liar.dcm", _image16(), bits_stored=8)  # 12-bit values, header says 8
    with pytest.raises(ImageReadError, match=r"use bits above BitsStored 8 \(4,0\d\d pixels") as info:
        read_image(path)
    assert not isinstance(info.value, NotAssessableError) and str(info.value).startswith(str(path))
    # the same pixels with an honest header decode as the 12-bit image they are
    honest = write_dicom(tmp_path / "honest.dcm", _image16(), bits_stored=12)
    expected = np.round((_image16() - _image16().min()) * 255.0 / np.ptp(_image16())).astype(np.uint8)
    assert np.array_equal(read_image(honest), expected)


def test_signed_pixels_are_checked_in_their_signed_range(tmp_path):
    img = chest_like(64, 64).astype(np.int16) - 128  # -128..127 fits 8 signed bits
    path = write_dicom(tmp_path / "signed.dcm", img.astype(np.uint16), bits_stored=8)
    ds = pydicom.dcmread(path)
    ds.PixelRepresentation = 1
    ds.PixelData = img.astype("<i2").tobytes()
    ds.save_as(path)
    assert read_image(path).shape == (64, 64)
    ds.PixelData = (img * 4).astype("<i2").tobytes()  # -512..508: over 8 signed bits
    ds.save_as(path)
    with pytest.raises(ImageReadError, match=r"use bits above BitsStored 8"):
        read_image(path)
    # -1..-128 stored without sign extension (0x00FF for -1) is legal: pydicom extends it
    ds.PixelData = (img.astype("<i2") & 0xFF).astype("<u2").tobytes()
    ds.save_as(path)
    assert np.array_equal(read_image(path), read_image(write_dicom(tmp_path / "ref.dcm", img + 128)))


def test_overlay_planes_in_the_high_bits_are_not_a_contradiction(tmp_path):
    """Old CR files kept overlays in the bits above BitsStored, announced by an overlay group (60xx)."""
    low = chest_like(64, 64).astype(np.uint16) * 16  # 12-bit values
    path = write_dicom(tmp_path / "ov.dcm", low | np.uint16(1 << 15), bits_stored=12)
    with pytest.raises(ImageReadError, match="use bits above BitsStored 12"):
        read_image(path)
    ds = pydicom.dcmread(path)
    ds.add_new(0x60000102, "US", 15)  # OverlayBitPosition: the overlay lives in bit 15
    ds.save_as(path)
    assert read_image(path).shape == (64, 64)


def test_a_dicom_without_modality_is_not_assessable_unless_accepted(tmp_path):
    path = write_dicom(tmp_path / "nomod.dcm", _image16(), bits_stored=12)
    ds = pydicom.dcmread(path)
    del ds.Modality
    ds.save_as(path)
    with pytest.raises(NotAssessableError, match=r"no Modality tag.*--accept-missing-modality"):
        read_image(path)
    assert read_image(path, accept_missing_modality=True).shape == (64, 64)
    data = path.read_bytes()
    with pytest.raises(NotAssessableError):
        decode_bytes(data, "upload.dcm")
    assert decode_bytes(data, "upload.dcm", accept_missing_modality=True).shape == (64, 64)


def _encapsulated(tmp_path: Path, syntax, frame: bytes, name: str) -> Path:
    from pydicom.encaps import encapsulate

    path = write_dicom(tmp_path / name, chest_like(64, 64))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds.save_as(path)
    return path


def test_a_missing_decoder_names_the_packages_to_install(tmp_path, monkeypatch):
    from pydicom.pixels.decoders import JPEGLSLosslessDecoder
    from pydicom.uid import JPEGLSLossless

    # the node's extra brings JPEG-LS decoders (highdicom needs pyjpegls): hide them, as on a base install
    monkeypatch.setattr(JPEGLSLosslessDecoder, "_available", {})
    path = _encapsulated(tmp_path, JPEGLSLossless, b"\xff\xd8" + b"\0" * 98, "jls.dcm")
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    msg = str(info.value)
    assert "JPEG-LS Lossless" in msg and "no decoder for it is installed" in msg, msg
    assert "pip install 'cxrkit[dicom]'" in msg and "pylibjpeg-libjpeg" in msg
    assert "\n" not in msg and not re.search(r"0x[0-9a-f]{6,}", msg), msg


def test_a_corrupt_compressed_frame_gives_no_object_address(tmp_path):
    from pydicom.uid import JPEG2000Lossless

    path = _encapsulated(tmp_path, JPEG2000Lossless, b"\0" * 100, "j2k.dcm")
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    msg = str(info.value)
    assert "JPEG 2000" in msg and "\n" not in msg and not re.search(r" at 0x[0-9a-fA-F]+", msg), msg


def test_rle_and_jpeg2000_compressed_dicoms_decode_to_the_same_grey(tmp_path):
    """Two real compressed syntaxes, decoded by what pydicom and Pillow bring (no extra needed)."""
    from pydicom.uid import JPEG2000Lossless, RLELossless

    img = chest_like(64, 64, seed=3)
    plain = read_image(write_dicom(tmp_path / "plain.dcm", img))
    rle = write_dicom(tmp_path / "rle.dcm", img)
    ds = pydicom.dcmread(rle)
    ds.compress(RLELossless)
    ds.save_as(rle)
    assert pydicom.dcmread(rle).file_meta.TransferSyntaxUID == RLELossless
    assert np.array_equal(read_image(rle), plain)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG2000", irreversible=False, no_jp2=True)
    j2k = _encapsulated(tmp_path, JPEG2000Lossless, buf.getvalue(), "j2k-ok.dcm")
    try:
        decoded = read_image(j2k)
    except ImageReadError as err:
        pytest.skip(f"no JPEG 2000 decoder in this environment ({err.reason})")
    assert np.array_equal(decoded, plain)


def test_the_pixel_cap_counts_every_frame(tmp_path):
    """40 x 40 is under a 2,000 pixel cap; 3 frames of it (4,800 pixels) are not: refused before decoding."""
    from cxrkit.data.decode import ImageTooLargeError

    frames = np.stack([chest_like(40, 40, seed=k) for k in range(3)])
    path = write_dicom(tmp_path / "cine.dcm", frames[0])
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 3
    ds.PixelData = frames.tobytes()
    ds.save_as(path)
    with pytest.raises(ImageTooLargeError, match=r"declares 40x40x3 = 4,800 pixels, over the limit of 2,000"):
        read_image(path, max_pixels=2000)
    with pytest.raises(NotAssessableError, match="3 frames"):  # within the cap: read, but not one radiograph
        read_image(path, max_pixels=5000)


def test_undeclared_frames_are_never_read_as_colour_or_one_image(tmp_path):
    """Pixel data for 3 frames under a header that declares one (no NumberOfFrames)."""
    frames = np.stack([chest_like(64, 64, seed=k) for k in range(3)]).astype(np.uint16) * 16
    path = write_dicom(tmp_path / "hidden.dcm", frames[0], bits_stored=12)
    ds = pydicom.dcmread(path)
    ds.PixelData = frames.tobytes()
    ds.save_as(path)
    with pytest.raises((NotAssessableError, ImageReadError)) as info:
        read_image(path)
    assert "64x64" in str(info.value) or "frames" in str(info.value)


def test_a_multi_valued_modality_is_shown_as_dicom_writes_it(tmp_path):
    path = write_dicom(tmp_path / "two.dcm", chest_like(64, 64))
    ds = pydicom.dcmread(path)
    ds.Modality = ["DX", "CT"]
    ds.save_as(path)
    with pytest.raises(NotAssessableError, match=r"modality DX\\CT is not a projection radiograph"):
        read_image(path)


def test_jpeg_baseline_dicom_is_read_by_libjpeg_turbo_as_a_plain_jpeg_would_be(tmp_path):
    """Pillow's libjpeg-turbo decodes JPEG baseline DICOMs, whatever else is installed: the same grey
    as the encapsulated JPEG opened on its own (an independent read), stretched to its range."""
    from pydicom.uid import JPEGBaseline8Bit

    img = chest_like(96, 80, seed=5)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    path = _encapsulated(tmp_path, JPEGBaseline8Bit, buf.getvalue(), "jpeg.dcm")
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = img.shape
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.save_as(path)
    plain = np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float64)
    expected = np.round((plain - plain.min()) * (255.0 / np.ptp(plain))).astype(np.uint8)
    assert np.array_equal(read_image(path), expected)


def test_damaged_jpeg_baseline_dicom_still_names_the_file(tmp_path):
    from pydicom.uid import JPEGBaseline8Bit

    path = _encapsulated(tmp_path, JPEGBaseline8Bit, b"\xff\xd8\xff\xe0" + b"\0" * 96, "bad-jpeg.dcm")
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    msg = str(info.value)
    assert msg.startswith(str(path)) and "\n" not in msg, msg
