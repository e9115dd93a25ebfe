"""The OpenCV fast path (extra ``fast``) reads exactly what Pillow reads, or steps aside for Pillow.

Each PNG below is decoded with ``CXRKIT_OPENCV=1`` and ``=0`` and compared with the array it was
written from (an independent reference); damaged files give the same one-line error either way and
print nothing of libpng's to stderr. The assessability histogram is compared with numpy's bincount.
"""

from __future__ import annotations

import io
import re
import struct
import zlib

import numpy as np
import pytest
from conftest import chest_like
from PIL import Image

from cxrkit.data.assess import compute_content_stats, grey_histogram
from cxrkit.data.decode import ImageReadError, _opencv_png, decode_bytes, opencv

cv2 = pytest.importorskip("cv2", reason="OpenCV (extra `fast`) is not installed: its fast path is off")

ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def make_png(img: np.ndarray, extra: tuple[tuple[bytes, bytes], ...] = (), interlaced: bool = False) -> bytes:
    """An 8-bit grey PNG of ``img`` written here (not by Pillow or OpenCV), ``extra`` chunks before IDAT."""
    h, w = img.shape
    rows = []
    passes = ADAM7 if interlaced else ((0, 0, 1, 1),)
    for x0, y0, dx, dy in passes:
        sub = img[y0::dy, x0::dx]
        if sub.size:
            rows += [b"\x00" + row.tobytes() for row in sub]  # filter type 0 on every scanline
    body = zlib.compress(b"".join(rows), 6)
    idat = [_chunk(b"IDAT", body[i : i + 8192]) for i in range(0, len(body), 8192)]  # many IDATs
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, int(interlaced))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + b"".join(_chunk(k, v) for k, v in extra)
        + b"".join(idat)
        + _chunk(b"IEND", b"")
    )


def _both(data: bytes, monkeypatch) -> tuple[np.ndarray, np.ndarray]:
    monkeypatch.setenv("CXRKIT_OPENCV", "1")
    fast = decode_bytes(data, "x.png")
    monkeypatch.setenv("CXRKIT_OPENCV", "0")
    slow = decode_bytes(data, "x.png")
    return fast, slow


@pytest.mark.parametrize("shape", [(1, 1), (37, 53), (256, 200), (1024, 1024)])
@pytest.mark.parametrize(
    "extra",
    [(), ((b"gAMA", struct.pack(">I", 100_000)),), ((b"sBIT", b"\x05"),), ((b"tEXt", b"Comment\x00x"),)],
    ids=["plain", "gAMA", "sBIT", "tEXt"],
)
def test_plain_grey_pngs_take_the_fast_path_with_identical_pixels(shape, extra, monkeypatch):
    img = chest_like(shape[0], shape[1]) if min(shape) > 8 else np.full(shape, 77, np.uint8)
    data = make_png(img, extra)
    assert _opencv_png(data, shape[1], shape[0]) is not None  # the fast path really runs
    fast, slow = _both(data, monkeypatch)
    assert fast.dtype == np.uint8 and np.array_equal(fast, img) and np.array_equal(slow, img)


def test_pillow_written_png_is_read_the_same_way(monkeypatch):
    img = chest_like(240, 300)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    fast, slow = _both(buf.getvalue(), monkeypatch)
    assert np.array_equal(fast, img) and np.array_equal(slow, img)


def _rotated_exif_png(img: np.ndarray) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", exif=exif.tobytes())
    return buf.getvalue()


def test_files_the_fast_path_leaves_to_pillow(monkeypatch):
    """Interlaced, EXIF-oriented, transparent, 16-bit and colour PNGs: Pillow decides, as before."""
    img = chest_like(48, 64)
    rgb = io.BytesIO()
    Image.fromarray(np.dstack([img, img // 2, img])).save(rgb, format="PNG")
    sixteen, wide = io.BytesIO(), img.astype(np.float64) * 257  # stretched to its own range on reading
    Image.fromarray(img.astype(np.uint16) * 257).save(sixteen, format="PNG")
    cases = {
        "interlaced": (make_png(img, interlaced=True), img),
        "exif": (_rotated_exif_png(img), np.rot90(img, -1)),
        "tRNS": (make_png(img, ((b"tRNS", b"\x00\x00"),)), img),
        "rgb": (rgb.getvalue(), None),
        "16-bit": (
            sixteen.getvalue(),
            np.round((wide - wide.min()) * (255.0 / np.ptp(wide))).astype(np.uint8),
        ),
    }
    for name, (data, expected) in cases.items():
        assert _opencv_png(data, 64, 48) is None, name
        fast, slow = _both(data, monkeypatch)
        assert np.array_equal(fast, slow), name
        if expected is not None:
            assert np.array_equal(fast, expected), name


def test_damaged_pngs_give_pillows_error_and_nothing_on_stderr(monkeypatch, capfd):
    good = make_png(chest_like(128, 128))
    pos = good.index(b"IDAT") - 4
    length = struct.unpack_from(">I", good, pos)[0]
    payload = bytearray(good[pos + 8 : pos + 8 + length])
    payload[2:40] = b"\xff" * 38  # broken deflate data behind a recomputed CRC: libpng's own error path
    crafted = good[:pos] + _chunk(b"IDAT", bytes(payload)) + good[pos + 12 + length :]
    cases = {
        "truncated": good[: len(good) // 2],
        "bad CRC": good[:60] + bytes([good[60] ^ 0xFF]) + good[61:],
        "bad deflate, right CRC": crafted,
    }
    for name, data in cases.items():
        messages = []
        for flag in ("1", "0"):
            monkeypatch.setenv("CXRKIT_OPENCV", flag)
            with pytest.raises(ImageReadError) as info:
                decode_bytes(data, "scan.png")
            messages.append(str(info.value))
        assert messages[0] == messages[1] and messages[0].startswith("scan.png: "), name
    capfd.readouterr()  # libpng may speak for the crafted stream, never for a plainly damaged file:
    monkeypatch.setenv("CXRKIT_OPENCV", "1")
    for name in ("truncated", "bad CRC"):
        with pytest.raises(ImageReadError):
            decode_bytes(cases[name], "scan.png")
        assert capfd.readouterr().err == "", name


def test_opencv_setting(monkeypatch):
    monkeypatch.setenv("CXRKIT_OPENCV", "0")
    assert opencv() is None
    monkeypatch.setenv("CXRKIT_OPENCV", "")
    assert opencv() is cv2
    monkeypatch.setenv("CXRKIT_OPENCV", "sometimes")
    with pytest.raises(ValueError, match="CXRKIT_OPENCV='sometimes'"):
        opencv()
    with pytest.raises(ValueError, match="CXRKIT_OPENCV='sometimes'"):  # the run's problem, not the file's
        decode_bytes(make_png(chest_like(40, 40)), "x.png")


@pytest.mark.parametrize("seed", range(4))
def test_histogram_and_content_stats_equal_numpys(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 900, size=2)
    img = (
        rng.integers(0, 256, size=(h, w), dtype=np.uint8)
        if seed % 2
        else chest_like(int(w) + 40, int(h) + 40)
    )
    monkeypatch.setenv("CXRKIT_OPENCV", "1")
    fast_hist, fast_stats = grey_histogram(img), compute_content_stats(img)
    assert np.array_equal(fast_hist, np.bincount(img.ravel(), minlength=256))
    monkeypatch.setenv("CXRKIT_OPENCV", "0")
    assert compute_content_stats(img) == fast_stats


def _itxt(keyword: bytes, text: bytes) -> bytes:
    return keyword + b"\x00\x00\x00\x00\x00" + text  # uncompressed, no language, no translation


XMP_ROTATED = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/>'
    b"</rdf:RDF></x:xmpmeta>"
)


def test_orientation_or_oddities_outside_eXIf_also_go_to_pillow(monkeypatch, capfd):
    """XMP orientation (iTXt), chunks libpng would complain about, chunks out of place, a non-empty
    IEND, an unknown critical chunk: no fast path, the same result both ways, silence on stderr."""
    img = chest_like(37, 53)
    good = make_png(img)
    iend = good.rindex(b"IEND") - 4
    cases = {
        "XMP orientation": make_png(img, ((b"iTXt", _itxt(b"XML:com.adobe.xmp", XMP_ROTATED)),)),
        "raw exif profile": make_png(img, ((b"tEXt", b"Raw profile type exif\x00\n exif\n 0\n"),)),
        "iCCP": make_png(img, ((b"iCCP", b"icc\x00\x00" + zlib.compress(b"\x00" * 200)),)),
        "PLTE in grey": make_png(img, ((b"PLTE", b"\x00\x00\x00" * 4),)),
        "bad gAMA": make_png(img, ((b"gAMA", b"\x00\x00\x00\x00"),)),
        "gAMA after IDAT": good[:iend] + _chunk(b"gAMA", struct.pack(">I", 45455)) + good[iend:],
        "non-empty IEND": good[:iend] + _chunk(b"IEND", b"x"),
        "unknown critical": make_png(img, ((b"ABCD", b"1234"),)),
    }
    for name, data in cases.items():
        assert _opencv_png(data, 53, 37) is None, name
        try:
            fast, slow = _both(data, monkeypatch)
        except ImageReadError as err:  # refused: then the same way with OpenCV off
            monkeypatch.setenv("CXRKIT_OPENCV", "0")
            with pytest.raises(ImageReadError, match=re.escape(str(err))):
                decode_bytes(data, "x.png")
            continue
        assert np.array_equal(fast, slow), name
    assert _both(cases["XMP orientation"], monkeypatch)[0].shape == (53, 37)  # Pillow turned it upright
    assert capfd.readouterr().err == ""


def test_pillows_bomb_limit_still_decides(monkeypatch):
    """Without cxrkit's own pixel cap (max_pixels=None) Pillow's decompression-bomb limit applies,
    fast path or not."""
    from PIL import Image

    data = make_png(chest_like(48, 64))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert _opencv_png(data, 64, 48) is None
    for flag in ("1", "0"):
        monkeypatch.setenv("CXRKIT_OPENCV", flag)
        with pytest.raises(ImageReadError, match="decompression bomb"):
            decode_bytes(data, "x.png")
