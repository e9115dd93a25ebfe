"""Decode PNG, JPEG and DICOM files into one grey uint8 channel, with errors that name the file.

Every source goes through ``read_image`` so that RGB/RGBA copies of grey X-rays (an NIH quirk),
16-bit PNGs and 12/16-bit DICOMs all arrive as (H, W) uint8 with 0 = black (air) and 255 = white.
"""

from __future__ import annotations

import errno
import functools
import io
import os
import re
import stat
import struct
import zlib
from pathlib import Path

import numpy as np

from cxrkit.outputs import printable

# THE accepted formats, for the CLI, the Python API and the service alike (decoded by content, not
# by name): Pillow is asked for these two only; anything else Pillow could open (TIFF, BMP, GIF,
# WebP, EPS...) is refused as "not a PNG/JPEG/DICOM image"
PILLOW_FORMATS = ("PNG", "JPEG")
ACCEPTED_FORMATS = (*PILLOW_FORMATS, "DICOM")
FORMATS_TEXT = "/".join(ACCEPTED_FORMATS)  # "PNG/JPEG/DICOM", as messages say it
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".dcm", ".dicom")  # what folder scans pick up
# pictures in formats cxrkit does not read: folder scans list them too, so each is reported, not lost
OTHER_IMAGE_SUFFIXES = (".tif", ".tiff", ".bmp", ".gif", ".webp", ".jp2", ".j2k", ".heic", ".heif", ".avif")


class SettingError(ValueError):
    """An environment setting cxrkit reads (``CXRKIT_*``) holds a value it does not understand."""


def opencv():
    """The cv2 module when OpenCV is installed (extra ``fast``) and ``CXRKIT_OPENCV`` is not 0, else None.

    cxrkit uses it only where its result equals the Pillow/numpy one to the last pixel or count
    (plain 8-bit grey PNGs, the assessability histogram): it is a speed-up, never another reading.
    ``CXRKIT_OPENCV=0`` turns it off (to measure the difference, or to rule it out).
    """
    raw = os.environ.get("CXRKIT_OPENCV", "").strip().lower()
    if raw in ("0", "no", "false", "off"):
        return None
    if raw not in ("", "1", "yes", "true", "on"):
        raise SettingError(f"CXRKIT_OPENCV={raw!r}: expected 1 (use OpenCV when installed) or 0")
    return _import_cv2()


@functools.lru_cache(maxsize=1)
def _import_cv2():
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def is_dicom_file(path: str | Path) -> bool:
    """A DICOM by its name, else (a name without an image suffix, ``IM0001``) by its first bytes.

    PNG/JPEG names are never opened here: a folder of 100,000 PNGs costs no extra reads.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".dcm", ".dicom"):
        return True
    if suffix in IMAGE_SUFFIXES or suffix in OTHER_IMAGE_SUFFIXES or not path.is_file():
        return False
    return is_dicom(path)


def has_image_magic(head: bytes) -> bool:
    """PNG, JPEG or DICOM by their first bytes (files without a suffix, as PACS exports name them)."""
    return head[:8] == b"\x89PNG\r\n\x1a\n" or head[:3] == b"\xff\xd8\xff" or head[128:132] == b"DICM"


class ImageReadError(ValueError):
    """A file that cannot be decoded; ``str()`` is one line naming the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{printable(self.path)}: {reason}")  # a newline in a name cannot forge a line


class ImageTooLargeError(ImageReadError):
    """An image that declares more pixels than allowed (e.g. a decompression bomb); nothing was decoded."""


class NotAssessableError(ImageReadError):
    """A readable image that cannot be a radiograph to score (too small): flagged, never scored."""


def is_dicom(path: str | Path, head: bytes | None = None) -> bool:
    """True for a ``.dcm`` name or a file with the ``DICM`` magic at byte 128."""
    if str(path).lower().endswith((".dcm", ".dicom")):
        return True
    if head is None:
        try:
            with open(path, "rb") as fh:
                head = fh.read(132)
        except OSError:
            return False
    return len(head) >= 132 and head[128:132] == b"DICM"


MAX_PIXELS = 50_000_000  # default cap on declared pixels (a 7,000 x 7,000 image); CXRKIT_MAX_PIXELS overrides
RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "DR", "RG", "OT", "SC"})  # CT, MR, MG...: not assessable


def max_pixels_setting() -> int:
    """The pixel cap for reading files: ``CXRKIT_MAX_PIXELS`` from the environment, else ``MAX_PIXELS``."""
    raw = os.environ.get("CXRKIT_MAX_PIXELS", "").strip()
    if not raw:
        return MAX_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        raise ValueError(f"CXRKIT_MAX_PIXELS={raw!r}: expected a number of pixels, e.g. 50000000") from None
    if value < 1:
        raise ValueError(f"CXRKIT_MAX_PIXELS={raw!r}: expected a positive number of pixels")
    return value


def check_regular_file(path: str | Path) -> os.stat_result:
    """Refuse, before opening, what is not a regular file: reading a FIFO would block forever."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        if os.path.islink(path):
            raise ImageReadError(path, "broken symbolic link (its target does not exist)") from None
        raise ImageReadError(path, "file not found") from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ImageReadError(path, "symbolic link loop (the link points back to itself)") from None
        raise ImageReadError(path, f"cannot read file ({err.strerror or err})") from None
    if stat.S_ISDIR(st.st_mode):
        if not os.access(path, os.R_OK | os.X_OK):
            raise ImageReadError(path, "folder cannot be read (permission denied); its files were not listed")
        raise ImageReadError(path, "is a folder, not an image file")
    if stat.S_ISFIFO(st.st_mode):
        raise ImageReadError(path, "is a named pipe (FIFO), not an image file")
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        raise ImageReadError(path, "is a device file, not an image file")
    if stat.S_ISSOCK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise ImageReadError(path, "is not a regular file")
    return st


def read_image(
    path: str | Path, max_pixels: int | None = None, *, accept_missing_modality: bool = False
) -> np.ndarray:
    """Read a PNG/JPEG/DICOM file as (H, W) uint8 grey; raise ImageReadError naming the file.

    ``max_pixels`` (default: ``max_pixels_setting()``): an image declaring more pixels is refused
    from its header, before any pixel is decoded (ImageTooLargeError). ``accept_missing_modality``:
    score a DICOM without a Modality tag (otherwise not assessable: it could be a CT slice).
    """
    path = Path(path)
    cap = max_pixels_setting() if max_pixels is None else max_pixels
    size = check_regular_file(path).st_size
    if size > 4 * cap + (16 << 20):  # more bytes than any image within the cap holds, even uncompressed
        raise ImageTooLargeError(
            path, f"file is {size / 1e6:,.0f} MB, more than an image within the limit of {cap:,} pixels holds"
        )
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except OSError as err:
        raise ImageReadError(path, f"cannot read file ({err.strerror or err})") from None
    return decode_bytes(data, path, cap, accept_missing_modality=accept_missing_modality)


def decode_bytes(
    data: bytes,
    name: str | Path = "<bytes>",
    max_pixels: int | None = None,
    *,
    accept_missing_modality: bool = False,
) -> np.ndarray:
    """PNG/JPEG/DICOM bytes (an upload, a file's content) -> (H, W) uint8 grey.

    ``max_pixels``: refuse, before decoding, an image that declares more pixels (ImageTooLargeError).
    ``accept_missing_modality``: as in ``read_image``.
    """
    try:  # whatever a decoder raises on a hostile file is that file's problem: one ImageReadError
        return _decode_any(data, name, max_pixels, accept_missing_modality)
    except (ImageReadError, SettingError):  # a bad setting is the whole run's problem, not this file's
        raise
    except MemoryError:
        raise ImageTooLargeError(name, "not enough memory to decode it") from None
    except Exception as err:
        detail = (str(err).strip().splitlines() or [""])[0][:200]
        raise ImageReadError(name, f"cannot decode ({type(err).__name__}: {detail})") from None


def _decode_any(data: bytes, name: str | Path, max_pixels: int | None, accept_missing: bool) -> np.ndarray:
    if not data:
        raise ImageReadError(name, "empty file (0 bytes)")
    looks_like_image = data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff"
    if not looks_like_image and is_dicom(name, data[:132]):  # the content decides, then the name
        return _decode_dicom(data, Path(str(name)), max_pixels, accept_missing)
    return decode_image_bytes(data, name, max_pixels)


MAX_SIDE = 32_768  # with a pixel limit, a longer side is refused too (a 60,000,000 x 1 "image")


def _check_pixels(name: str | Path, w: int, h: int, frames: int, max_pixels: int | None) -> None:
    if max_pixels is not None and max(w, h) > MAX_SIDE:
        raise ImageTooLargeError(name, f"declares {w}x{h} pixels: a side over the limit of {MAX_SIDE:,}")
    if max_pixels is not None and w * h * frames > max_pixels:
        raise ImageTooLargeError(
            name,
            f"declares {w}x{h}"
            + (f"x{frames}" if frames > 1 else "")
            + f" = {w * h * frames:,} pixels, over the limit of {max_pixels:,}",
        )


def decode_image_bytes(
    data: bytes, name: str | Path = "<bytes>", max_pixels: int | None = None
) -> np.ndarray:
    """Decode PNG/JPEG bytes into (H, W) uint8 grey; ``name`` is used in error messages."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageReadError(name, "empty file (0 bytes)")
    if len(data) >= 24 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":  # our limit first
        w, h = struct.unpack(">II", data[16:24])
        _check_pixels(name, w, h, 1, max_pixels)
        fast = _opencv_png(data, w, h)
        if fast is not None:
            return fast
    try:  # no warnings filter here: it is process-wide state, and uploads decode in parallel threads
        with Image.open(io.BytesIO(data), formats=PILLOW_FORMATS) as im:  # never EPS & co. (Ghostscript)
            _check_pixels(name, im.width, im.height, 1, max_pixels)
            im.load()
            return _pil_to_grey(_upright(im), name)
    except UnidentifiedImageError:
        raise ImageReadError(name, f"not a {FORMATS_TEXT} image (unrecognised format)") from None
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(name, f"refused as a decompression bomb ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, ImageReadError):
            raise
        raise ImageReadError(name, f"truncated or corrupt image data ({err})") from None


# the ancillary chunks a plain grey PNG may hold and still take OpenCV's path, each with the check
# that keeps libpng quiet about it: none changes the pixels, the orientation or whether Pillow accepts
# the file. Anything else (tRNS, eXIf, iCCP, PLTE, compressed or XMP text that may carry an EXIF
# orientation, APNG frames, unknown chunks, a chunk out of place) goes to Pillow.
PNG_FAST_CHUNKS = {
    b"gAMA": lambda b: len(b) == 4 and b != b"\x00\x00\x00\x00",
    b"sBIT": lambda b: len(b) == 1 and 1 <= b[0] <= 8,
    b"sRGB": lambda b: len(b) == 1 and b[0] <= 3,
    b"pHYs": lambda b: len(b) == 9 and b[8] <= 1,
    b"bKGD": lambda b: len(b) == 2 and b[0] == 0,
    b"tIME": lambda b: (
        len(b) == 7 and 1 <= b[2] <= 12 and 1 <= b[3] <= 31 and b[4] < 24 and b[5] < 60 and b[6] <= 60
    ),
    # a keyword of 1-79 Latin-1 characters, then the text; ImageMagick's "Raw profile type exif/xmp"
    # can hold an orientation that Pillow applies
    b"tEXt": lambda b: 0 < b.find(b"\x00") < 80 and len(b) <= 1 << 16 and not b.startswith(b"Raw profile"),
}
PNG_AFTER_IDAT = (b"tIME", b"tEXt")  # where the PNG specification lets them stand after the image data


def _opencv_png(data: bytes, w: int, h: int) -> np.ndarray | None:
    """An 8-bit grey, non-interlaced PNG decoded by OpenCV (libpng: about 1.1x Pillow, identical pixels).

    None for anything else (colour, 16-bit, interlaced, a chunk outside ``PNG_FAST_*``, more pixels
    than Pillow's bomb limit, OpenCV absent) and for any file libpng refuses: Pillow then decodes
    it, or words its error, as before. A file damaged behind valid CRCs (crafted, not corrupted on
    disk) may get a libpng line on stderr before Pillow's error.
    """
    from PIL import Image

    if len(data) < 33 or data[8:12] != b"\x00\x00\x00\x0d" or data[24:29] != b"\x08\x00\x00\x00\x00":
        return None  # IHDR of 13 bytes: bit depth 8, grey, deflate, filter 0, not interlaced
    if Image.MAX_IMAGE_PIXELS is not None and w * h > Image.MAX_IMAGE_PIXELS:
        return None  # Pillow warns or refuses it as a bomb: its decision, not ours
    cv2 = opencv()  # imported only now: a 16-bit or colour file never loads OpenCV
    if cv2 is None or not _png_chunks_plain(data):
        return None
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION)
    if arr is None or arr.shape != (h, w) or arr.dtype != np.uint8:
        return None
    return arr


def _png_chunks_plain(data: bytes) -> bool:
    """Every chunk whole with a right CRC up to an empty IEND, the IDATs in one run, only
    ``PNG_FAST_CHUNKS`` that pass their check, in their place (about 0.1 ms for a 1024 px X-ray).

    A damaged file goes to Pillow, whose error names it: libpng would print its own complaint to
    stderr first, a line no one asked for in a CLI or a service log.
    """
    view, pos, state = memoryview(data), 33, "before"  # after the signature and IHDR
    while pos + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 8 + length
        if end + 4 > len(data) or zlib.crc32(view[pos + 4 : end]) != struct.unpack_from(">I", data, end)[0]:
            return False
        if kind == b"IEND":
            return length == 0 and state != "before"
        if kind == b"IDAT":
            if state == "after":
                return False
            state = "in"
        else:
            check = PNG_FAST_CHUNKS.get(kind)
            if check is None or (state != "before" and kind not in PNG_AFTER_IDAT):
                return False
            if not check(bytes(view[pos + 8 : end])):
                return False
            state = "after" if state == "in" else state
        pos = end + 4
    return False


def _check_memory(name: str | Path, w: int, h: int, nbytes: int, what: str, max_pixels: int | None) -> None:
    """Refuse an image whose decoded pixels would need over 4 bytes per allowed pixel (200 MB by default).

    Pillow keeps at most 4 bytes a pixel, so this bites on DICOM: many frames, colour, 32-bit samples.
    """
    if max_pixels is not None and nbytes > 4 * max_pixels:
        raise ImageTooLargeError(
            name,
            f"decoding its {w}x{h} {what} pixels would need {nbytes / 1e6:,.1f} MB, over the "
            f"{4 * max_pixels / 1e6:,.1f} MB that the limit of {max_pixels:,} pixels allows",
        )


def _upright(im):
    """Apply an EXIF orientation tag (photos of films taken with a phone), so the image is upright."""
    from PIL import ImageOps

    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # a malformed EXIF block: keep the pixels as stored
        return im
    if orientation in (None, 1):
        return im
    return ImageOps.exif_transpose(im)


def _pil_to_grey(im, name: str | Path) -> np.ndarray:
    mode = im.mode
    if mode == "L":
        return np.asarray(im, dtype=np.uint8).copy()
    if mode == "1":
        return np.asarray(im, dtype=np.uint8) * np.uint8(255)
    if mode in ("LA", "La"):
        return np.asarray(im.getchannel("L"), dtype=np.uint8).copy()
    if mode.startswith("I"):
        return _scale_strips(im)
    if mode == "F":
        return scale_to_uint8(np.asarray(im), name)
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr"):
        rgb = np.asarray(im.convert("RGB"))
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        if np.array_equal(r, g) and np.array_equal(r, b):
            return r.copy()  # grey stored as colour: keep the exact grey values
        return np.asarray(im.convert("RGB").convert("L"), dtype=np.uint8).copy()
    raise ImageReadError(name, f"unsupported image mode {mode!r}")


def _scale_strips(im) -> np.ndarray:  # im: a PIL integer image (16-bit PNG)
    """``scale_to_uint8`` of a PIL integer image, a strip of rows at a time: no full-size copies."""
    lo, hi = (float(v) for v in im.getextrema())
    out = np.zeros((im.height, im.width), dtype=np.uint8)
    if hi <= lo:
        return out
    step, scale = max(1, (1 << 22) // max(im.width, 1)), 255.0 / (hi - lo)
    for r in range(0, im.height, step):
        strip = np.asarray(im.crop((0, r, im.width, min(r + step, im.height))), dtype=np.float64)
        out[r : r + step] = np.round((strip - lo) * scale)
    return out


def scale_to_uint8(arr: np.ndarray, name: str | Path = "<array>") -> np.ndarray:
    """Linearly map an integer/float image's own min..max onto 0..255 (12/16-bit PNG, DICOM)."""
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise ImageReadError(name, f"expected a 2-D grey image, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ImageReadError(name, "image holds NaN or infinite pixel values")
    lo, hi = float(arr.min()), float(arr.max())
    out = np.zeros(arr.shape, dtype=np.uint8)
    if hi <= lo:
        return out
    step = max(1, (1 << 22) // max(arr.shape[1], 1))  # ~4 M pixels at a time: memory stays flat
    scale = 255.0 / (hi - lo)
    if np.issubdtype(arr.dtype, np.integer) and arr.dtype.itemsize <= 2:
        # 8/16-bit: the same float64 arithmetic once per possible value, then one lookup a pixel
        arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)  # big-endian DICOM: native order first
        table = np.round(np.arange(int(hi - lo) + 1, dtype=np.float64) * scale).astype(np.uint8)
        unsigned = arr.view(f"u{arr.dtype.itemsize}")  # two's complement: v - lo is exact modulo 2**bits
        base = unsigned.dtype.type(int(lo) % (1 << (8 * arr.dtype.itemsize)))
        for r in range(0, arr.shape[0], step):
            np.take(table, unsigned[r : r + step] - base, out=out[r : r + step])
        return out
    for r in range(0, arr.shape[0], step):
        strip = arr[r : r + step].astype(np.float64)  # in place from here: no further temporaries
        strip -= lo
        strip *= scale
        out[r : r + step] = np.rint(strip, out=strip)  # np.round's half-to-even, as before
    return out


def _decode_dicom(
    data: bytes, path: Path, max_pixels: int | None = None, accept_missing_modality: bool = False
) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=path.suffix.lower() in (".dcm", ".dicom"))
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError) as err:
        raise ImageReadError(path, f"not a readable DICOM file ({err})") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise ImageReadError(path, "DICOM has no pixel data (no PixelData element)")
    raw_modality = ds.get("Modality", "") or ""
    if isinstance(raw_modality, (list, tuple)) or type(raw_modality).__name__ == "MultiValue":
        raw_modality = "\\".join(str(v) for v in raw_modality)  # as DICOM writes several values
    modality = str(raw_modality).strip().upper()
    if not modality and not accept_missing_modality:
        raise NotAssessableError(
            path,
            "DICOM has no Modality tag: it cannot be told from a CT or MR slice "
            "(--accept-missing-modality scores it as a radiograph)",
        )
    if modality and modality not in RADIOGRAPH_MODALITIES:
        raise NotAssessableError(
            path,
            f"DICOM modality {modality} is not a projection radiograph "
            f"(expected one of {', '.join(sorted(RADIOGRAPH_MODALITIES))})",
        )
    try:
        rows, cols, frames = (
            int(ds.get("Rows", 0)),
            int(ds.get("Columns", 0)),
            int(ds.get("NumberOfFrames", 1) or 1),
        )
    except (TypeError, ValueError):
        raise ImageReadError(path, "DICOM Rows/Columns/NumberOfFrames are not numbers") from None
    _check_pixels(path, cols, rows, frames, max_pixels)
    if frames > 1:  # a radiograph is one image; a cine/tomosynthesis series is not what was trained on
        raise NotAssessableError(path, f"DICOM holds {frames} frames; expected a single radiograph")
    try:
        samples, bits = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("BitsAllocated", 16) or 16)
    except (TypeError, ValueError):
        raise ImageReadError(path, "DICOM SamplesPerPixel/BitsAllocated are not numbers") from None
    what = f"{samples}-sample {bits}-bit" + (f" x{frames} frames" if frames > 1 else "")
    _check_memory(path, cols, rows, rows * cols * frames * samples * max(1, -(-bits // 8)), what, max_pixels)
    _check_stored_bits(ds, path, bits)
    try:
        arr = _pixels(ds)
    except Exception as err:  # pydicom raises many types for unsupported/corrupt pixel data
        raise ImageReadError(path, _pixel_error(ds, err)) from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    expected = (rows, cols, 3) if samples == 3 else (rows, cols)
    if arr.shape != expected:  # e.g. frames without a NumberOfFrames tag: never read as colour or one image
        raise NotAssessableError(
            path,
            f"DICOM pixel data decodes to shape {tuple(arr.shape)}, not the single {cols}x{rows} image "
            f"with {samples} sample(s) per pixel its header declares (undeclared frames?)",
        )
    if arr.ndim == 3:  # colour DICOM: luma
        arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return scale_to_uint8(arr, path)
    try:
        arr = _apply_luts(arr, ds)
    except (ValueError, TypeError, ZeroDivisionError, IndexError) as err:
        raise ImageReadError(path, f"DICOM rescale/window values cannot be applied ({err})") from None
    out = scale_to_uint8(arr, path)
    if photometric == "MONOCHROME1":  # high values are black: invert so that air is dark
        out = 255 - out
    return out


# compressed transfer syntaxes (UID prefix) -> the packages pydicom needs to decode them
DICOM_DECODERS = {
    "1.2.840.10008.1.2.4.5": "pylibjpeg pylibjpeg-libjpeg",  # JPEG baseline/extended
    "1.2.840.10008.1.2.4.7": "pylibjpeg pylibjpeg-libjpeg",  # JPEG lossless
    "1.2.840.10008.1.2.4.8": "pylibjpeg pylibjpeg-libjpeg",  # JPEG-LS
    "1.2.840.10008.1.2.4.9": "pylibjpeg pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.20": "pylibjpeg pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle",  # RLE (pydicom also decodes it itself)
}


JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def _pixels(ds) -> np.ndarray:
    """``ds.pixel_array``, with JPEG baseline decoded by Pillow's libjpeg-turbo whenever it can.

    Measured by bench/bench_predict.py: 2.7x pylibjpeg (which pydicom prefers when both are
    installed) on a 1024 px image, within 2 grey levels of it, and the decoder every install
    has, so the base install and ``.[dicom]`` read such a file alike. Anything Pillow's plugin refuses
    (12-bit, damaged) goes to pydicom's own choice, whose error is the one reported.
    """
    uid = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if uid == JPEG_BASELINE and hasattr(ds, "pixel_array_options"):  # pydicom >= 3
        try:
            ds.pixel_array_options(decoding_plugin="pillow")
            return ds.pixel_array
        except Exception:
            ds.pixel_array_options(decoding_plugin="")
    return ds.pixel_array


def _pixel_error(ds, err: Exception) -> str:
    """One line for DICOM pixels pydicom cannot decode; names the packages when a decoder is missing."""
    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    name = f"{getattr(uid, 'name', uid)} ({uid})" if uid else "unknown transfer syntax"
    text = re.sub(r"<[^<>]*? at 0x[0-9a-fA-F]+>", "<data>", str(err))  # no object addresses
    detail = " ".join(text.split())[:200]
    extra = next((pkgs for prefix, pkgs in DICOM_DECODERS.items() if str(uid or "").startswith(prefix)), None)
    if extra and "missing" in text.lower() and "dependenc" in text.lower():
        return (
            f"DICOM pixel data is compressed as {name} and no decoder for it is installed: "
            f"pip install 'cxrkit[dicom]' (or: pip install {extra})"
        )
    return f"cannot decode DICOM pixel data ({name}: {detail})"


def _check_stored_bits(ds, path: Path, bits: int) -> None:
    """Refuse uncompressed pixel values beyond BitsStored (pydicom would mask them into noise)."""
    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        stored, signed = int(ds.get("BitsStored", bits) or bits), int(ds.get("PixelRepresentation", 0) or 0)
    except (TypeError, ValueError):
        raise ImageReadError(path, "DICOM BitsStored/PixelRepresentation are not numbers") from None
    if uid is None or uid.is_compressed or bits not in (8, 16, 32) or stored >= bits or "PixelData" not in ds:
        return
    if stored < 1:
        raise ImageReadError(path, f"DICOM BitsStored {stored}: expected 1..{bits}")
    tags = list(ds.keys())
    if any((tag.group & 0xFF00) == 0x6000 for tag in tags):
        return  # overlay planes: old files may keep them in the bits above BitsStored, legitimately
    order = "<" if uid.is_little_endian else ">"
    data, width = ds.PixelData, bits // 8
    raw = np.frombuffer(data[: len(data) // width * width], dtype=f"{order}u{width}")  # a view: no copy
    kind = raw.dtype.type
    if not signed and raw.size and int(raw.max()) < 1 << stored:  # the usual case: one pass, no copies
        return
    high = raw >> kind(stored)
    ones = kind((1 << (bits - stored)) - 1)
    negative = (raw >> kind(stored - 1)) & kind(1)
    # signed data may be sign-extended (high bits all ones for a negative value) or not (all zero)
    bad = (high != 0) & ~((high == ones) & (negative == 1)) if signed else high != 0
    if bad.any():
        raise ImageReadError(
            path,
            f"DICOM pixel values use bits above BitsStored {stored} ({int(bad.sum()):,} pixels, raw "
            f"{int(raw[bad].min())}..{int(raw[bad].max())}): the header contradicts the pixels, so they "
            "cannot be trusted",
        )


def _apply_luts(arr: np.ndarray, ds) -> np.ndarray:
    """Modality LUT (rescale slope/intercept) then VOI LUT/window when the file has one."""
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut
    out = apply_modality_lut(arr, ds)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        out = apply_voi_lut(out, ds, index=0)
    out = np.asarray(out)  # integers stay integers: scale_to_uint8 maps them by a table, same values
    return out if np.issubdtype(out.dtype, np.integer) else out.astype(np.float64)


def array_to_grey(arr: np.ndarray, name: str | Path = "<array>") -> np.ndarray:
    """Any in-memory image as (H, W) uint8 grey, by the same rules as files.

    uint8 is kept as is; bool as 0/255; other integers (12/16-bit) by their own range; floats in
    [0, 1] as x * 255, other floats by their own range; (H, W, 3|4) colour by the file rules
    (equal channels keep their exact grey, otherwise luma; alpha dropped).
    """
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        a = a[..., :3]
        if np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2]):
            a = a[..., 0]
        else:
            a = a.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
            if np.asarray(arr).dtype == np.uint8:
                return np.clip(np.round(a), 0, 255).astype(np.uint8)
    if a.ndim != 2:
        raise ImageReadError(
            name, f"expected a (H, W) or (H, W, 3|4) image, got shape {np.asarray(arr).shape}"
        )
    if min(a.shape) < 1:
        raise ImageReadError(name, f"empty image of shape {a.shape}")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * np.uint8(255)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ImageReadError(name, "image holds NaN or infinite pixel values")
        if a.min() >= 0.0 and a.max() <= 1.0:
            return np.round(a.astype(np.float64) * 255.0).astype(np.uint8)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ImageReadError(name, f"unsupported pixel type {a.dtype}")
    return scale_to_uint8(a, name)
