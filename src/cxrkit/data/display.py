"""What a reading view shows of an image: its full dynamic range as 8 bits, and the windows the file names.

The model sees the decoded image (the DICOM's first VOI window applied, then stretched to 0..255). A
radiologist windows the film themselves, so the viewer gets the modality values (rescale applied, no
window) mapped linearly from their [low, high] range onto 0..255, and every window of the header
(WindowCenter/WindowWidth, with its explanation) converted into those display units. Windowing
happens on this 8-bit rendering: 12-bit data is quantised to 256 levels across its range (a narrow
window shows steps of (high - low) / 255 modality units).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Display:
    """An 8-bit rendering (H, W) and the windows (display units, 0..255) a viewer offers for it."""

    image: np.ndarray
    windows: list[dict] = field(default_factory=list)  # {"name", "center", "width"} in display units
    source: str = "image"  # "dicom": rendered from modality values; "image": the decoded PNG/JPEG
    value_range: tuple[float, float] = (0.0, 255.0)  # modality values at display 0 and 255
    inverted: bool = False  # MONOCHROME1: high values are shown dark, as the file asks

    def as_dict(self) -> dict:
        """JSON-ready facts (without the pixels)."""
        return {
            "source": self.source,
            "windows": self.windows,
            "value_range": list(self.value_range),
            "inverted": self.inverted,
            "width": int(self.image.shape[1]),
            "height": int(self.image.shape[0]),
        }


def _values(x) -> list[float]:
    """A DICOM DS/multi-valued element as floats ([] when absent or unreadable)."""
    if x is None:
        return []
    try:
        items = list(x) if not isinstance(x, (str, bytes, int, float)) and hasattr(x, "__iter__") else [x]
        return [float(v) for v in items]
    except (TypeError, ValueError):
        return []


def dicom_display(data: bytes, decoded: np.ndarray) -> Display:
    """The full-range rendering of a DICOM (already decoded once into ``decoded`` by the scoring path,
    so a file that gets here is readable); falls back to ``decoded`` for colour or odd pixel data."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    try:
        from pydicom.pixels import apply_modality_lut
    except ImportError:  # pragma: no cover - pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_modality_lut
    try:
        raw = ds.pixel_array
        arr = np.asarray(apply_modality_lut(raw, ds), dtype=np.float64)
    except Exception:  # the scoring path decoded it: show that rendering instead
        return Display(decoded)
    if arr.shape != decoded.shape or not np.isfinite(arr).all():
        return Display(decoded)
    pad = _values(ds.get("PixelPaddingValue"))  # the frame around the film: not part of its range
    film = arr[raw != pad[0]] if pad else arr
    film = film if film.size else arr
    lo, hi = float(film.min()), float(film.max())
    span = hi - lo if hi > lo else 1.0
    inverted = str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1"
    unit = (arr - lo) * (255.0 / span)
    image = np.clip(np.rint(255.0 - unit if inverted else unit), 0, 255).astype(np.uint8)
    centers, widths = _values(ds.get("WindowCenter")), _values(ds.get("WindowWidth"))
    raw = ds.get("WindowCenterWidthExplanation")
    names = [str(n) for n in raw] if raw is not None and not isinstance(raw, str) else ([raw] if raw else [])
    windows = []
    for k, (c, w) in enumerate(zip(centers, widths, strict=False)):
        if w <= 0:
            continue
        center = (c - lo) * 255.0 / span
        windows.append(
            {
                "name": names[k] if k < len(names) and names[k].strip() else f"header window {k + 1}",
                "center": 255.0 - center if inverted else center,
                "width": w * 255.0 / span,
                "file_center": c,
                "file_width": w,
            }
        )
    windows += _lut_windows(ds, lo, span, inverted)
    return Display(image, windows, "dicom", (lo, hi), inverted)


def _lut_windows(ds, lo: float, span: float, inverted: bool) -> list[dict]:
    """A VOI LUT Sequence's tables as windows over their input range (the linear window closest to
    each table; its name says it is an approximation of the file's curve)."""
    out = []
    for k, item in enumerate(ds.get("VOILUTSequence") or []):
        desc = _values(item.get("LUTDescriptor"))
        if len(desc) < 2 or desc[0] <= 1:
            continue
        entries = desc[0] if desc[0] > 0 else 65536
        first = desc[1]
        center, width = first + (entries - 1) / 2, entries
        c = (center - lo) * 255.0 / span
        name = str(item.get("LUTExplanation", "") or "").strip() or f"VOI LUT {k + 1}"
        out.append(
            {
                "name": f"{name} (linear approximation of the file's LUT)",
                "center": 255.0 - c if inverted else c,
                "width": width * 255.0 / span,
                "file_center": center,
                "file_width": width,
            }
        )
    return out
