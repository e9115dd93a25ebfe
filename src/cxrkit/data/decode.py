"""Decode PNG, JPEG and DICOM files into one grey uint8 channel, with errors that name the file.

Every source goes through ``read_image`` so that RGB/RGBA copies of grey X-rays (an NIH quirk),
16-bit PNGs and 12/16-bit DICOMs all arrive as (H, W) uint8 with 0 = black (air) and 255 = white.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")


class ImageReadError(ValueError):
    """A file that cannot be decoded; ``str()`` is one line naming the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ImageTooLargeError(ImageReadError):
    """An image that declares more pixels than allowed (e.g. a decompression bomb); nothing was decoded."""


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


def read_image(path: str | Path) -> np.ndarray:
    """Read a PNG/JPEG/DICOM file as (H, W) uint8 grey; raise ImageReadError naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except OSError as err:
        raise ImageReadError(path, f"cannot read file ({err.strerror or err})") from None
    return decode_bytes(data, path)


def decode_bytes(data: bytes, name: str | Path = "<bytes>", max_pixels: int | None = None) -> np.ndarray:
    """PNG/JPEG/DICOM bytes (an upload, a file's content) -> (H, W) uint8 grey.

    ``max_pixels``: refuse, before decoding, an image that declares more pixels (ImageTooLargeError).
    """
    if not data:
        raise ImageReadError(name, "empty file (0 bytes)")
    looks_like_image = data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff"
    if not looks_like_image and is_dicom(name, data[:132]):  # the content decides, then the name
        return _decode_dicom(data, Path(str(name)), max_pixels)
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
    try:  # no warnings filter here: it is process-wide state, and uploads decode in parallel threads
        with Image.open(io.BytesIO(data)) as im:
            _check_pixels(name, im.width, im.height, 1, max_pixels)
            im.load()
            return _pil_to_grey(im, name)
    except UnidentifiedImageError:
        raise ImageReadError(name, "not a PNG/JPEG/DICOM image (unrecognised format)") from None
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(name, f"refused as a decompression bomb ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, ImageReadError):
            raise
        raise ImageReadError(name, f"truncated or corrupt image data ({err})") from None


def _pil_to_grey(im, name: str | Path) -> np.ndarray:
    mode = im.mode
    if mode == "L":
        return np.asarray(im, dtype=np.uint8).copy()
    if mode == "1":
        return np.asarray(im, dtype=np.uint8) * np.uint8(255)
    if mode in ("LA", "La"):
        return np.asarray(im.getchannel("L"), dtype=np.uint8).copy()
    if mode.startswith("I") or mode == "F":
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


def scale_to_uint8(arr: np.ndarray, name: str | Path = "<array>") -> np.ndarray:
    """Linearly map an integer/float image's own min..max onto 0..255 (12/16-bit PNG, DICOM)."""
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise ImageReadError(name, f"expected a 2-D grey image, got shape {arr.shape}")
    a = arr.astype(np.float64)
    if not np.isfinite(a).all():
        raise ImageReadError(name, "image holds NaN or infinite pixel values")
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _decode_dicom(data: bytes, path: Path, max_pixels: int | None = None) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=path.suffix.lower() in (".dcm", ".dicom"))
    except (InvalidDicomError, EOFError, OSError, ValueError, TypeError) as err:
        raise ImageReadError(path, f"not a readable DICOM file ({err})") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise ImageReadError(path, "DICOM has no pixel data (no PixelData element)")
    try:
        rows, cols, frames = (
            int(ds.get("Rows", 0)),
            int(ds.get("Columns", 0)),
            int(ds.get("NumberOfFrames", 1) or 1),
        )
    except (TypeError, ValueError):
        raise ImageReadError(path, "DICOM Rows/Columns/NumberOfFrames are not numbers") from None
    _check_pixels(path, cols, rows, frames, max_pixels)
    try:
        arr = ds.pixel_array
    except Exception as err:  # pydicom raises many types for unsupported/corrupt pixel data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise ImageReadError(
            path, f"cannot decode DICOM pixel data (transfer syntax {syntax}: {err})"
        ) from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]
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


def _apply_luts(arr: np.ndarray, ds) -> np.ndarray:
    """Modality LUT (rescale slope/intercept) then VOI LUT/window when the file has one."""
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut
    out = apply_modality_lut(arr, ds)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        out = apply_voi_lut(out, ds, index=0)
    return np.asarray(out, dtype=np.float64)


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
