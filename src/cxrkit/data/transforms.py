"""Resizing for X-rays: square output by aspect-preserving pad (default) or centre crop.

``pad`` keeps the whole chest (costophrenic angles and apices matter) and fills the short side
with black, centred; ``crop`` fills the square and cuts the long side's ends, centred. Both
return a ``Geometry`` that maps boxes from source pixels to output pixels and back exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

ResizeMode = Literal["pad", "crop"]


@dataclass(frozen=True)
class Geometry:
    """Affine map from source pixel coordinates (x, y) to output ones: x' = x*sx + ox."""

    src_w: int
    src_h: int
    size: int
    sx: float
    sy: float
    ox: float
    oy: float

    def to_output(self, x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
        """Map a box (x, y, w, h) in source pixels to output pixels (may extend past a crop)."""
        return x * self.sx + self.ox, y * self.sy + self.oy, w * self.sx, h * self.sy

    def to_source(self, x: float, y: float, w: float, h: float) -> tuple[float, float, float, float]:
        """Inverse of ``to_output``."""
        return (x - self.ox) / self.sx, (y - self.oy) / self.sy, w / self.sx, h / self.sy


def compute_geometry(src_w: int, src_h: int, size: int, mode: ResizeMode = "pad") -> Geometry:
    """Geometry of resizing a (src_h, src_w) image to (size, size) by ``pad`` or ``crop``."""
    if mode not in ("pad", "crop"):
        raise ValueError(f"resize mode {mode!r}: expected 'pad' or 'crop'")
    if size <= 0 or src_w <= 0 or src_h <= 0:
        raise ValueError(f"cannot resize a {src_w}x{src_h} image to {size}")
    ref = max(src_w, src_h) if mode == "pad" else min(src_w, src_h)
    new_w = max(1, round(src_w * size / ref))
    new_h = max(1, round(src_h * size / ref))
    return Geometry(
        src_w, src_h, size, new_w / src_w, new_h / src_h, (size - new_w) // 2, (size - new_h) // 2
    )


def resize_square(img: np.ndarray, size: int, mode: ResizeMode = "pad") -> tuple[np.ndarray, Geometry]:
    """Resize a (H, W) uint8 image to (size, size) by pad or crop; returns the image and its Geometry."""
    from PIL import Image

    h, w = img.shape
    geo = compute_geometry(w, h, size, mode)
    new_w, new_h = round(w * geo.sx), round(h * geo.sy)
    if (new_w, new_h) == (w, h):
        scaled = img
    else:
        scaled = np.asarray(Image.fromarray(img).resize((new_w, new_h), Image.Resampling.BILINEAR))
    out = np.zeros((size, size), dtype=np.uint8)
    ox, oy = int(geo.ox), int(geo.oy)
    # paste with clipping: ox/oy are >= 0 for pad, <= 0 for crop
    sx0, sy0 = max(0, -ox), max(0, -oy)
    dx0, dy0 = max(0, ox), max(0, oy)
    cw, ch = min(new_w - sx0, size - dx0), min(new_h - sy0, size - dy0)
    out[dy0 : dy0 + ch, dx0 : dx0 + cw] = scaled[sy0 : sy0 + ch, sx0 : sx0 + cw]
    return out, geo


@dataclass(frozen=True)
class InputSpec:
    """What a model expects, stored with every run: one grey channel, ``size`` px square by ``mode``.

    Every path (cache building, training, evaluation, prediction, explanation, export) turns an
    image into model input the same way: decode to (H, W) uint8 grey (``data.decode``), resize
    with ``prepare_image``, then ``to_model_input`` divides by 255 (values in [0, 1]); the network
    normalises internally.
    """

    size: int
    mode: ResizeMode = "pad"
    channels: int = 1
    value_range: tuple[float, float] = (0.0, 1.0)
    intensity: str = "none"  # per-image standardization the network applies first (models.net.intensity_op)

    def as_dict(self) -> dict:
        """JSON-ready form (saved in the run's model.json)."""
        return {
            "size": self.size,
            "mode": self.mode,
            "channels": self.channels,
            "value_range": list(self.value_range),
            "intensity": self.intensity,
        }

    @classmethod
    def from_dict(cls, d: dict) -> InputSpec:
        """Inverse of ``as_dict``."""
        return cls(
            int(d["size"]),
            d.get("mode", "pad"),
            int(d.get("channels", 1)),
            tuple(d.get("value_range", (0, 1))),
            str(d.get("intensity", "none")),
        )


def prepare_image(img: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Any image (any size, uint8/uint16/float, grey or colour) -> (S, S) uint8, as training saw images."""
    from cxrkit.data.decode import array_to_grey

    grey = img if img.dtype == np.uint8 and img.ndim == 2 else array_to_grey(img)
    if grey.shape == (spec.size, spec.size):
        return grey
    return resize_square(grey, spec.size, spec.mode)[0]


TTA_SHIFT = 0.03  # test-time augmentation: views shifted by this share of the image side


def tta_views(images: np.ndarray, n: int) -> list[np.ndarray]:
    """``n`` (1..5) deterministic views of uint8 (N, S, S) images for test-time augmentation.

    The image itself, then shifted right, left, down and up by 3% of its side (edge pixels
    repeated, as the training augmentation fills borders): small positioning changes whose
    averaged logits are less sensitive to where the chest sits in the frame.
    """
    if not 1 <= n <= 5:
        raise ValueError(f"tta {n}: expected 1..5 views")
    d = max(1, round(TTA_SHIFT * images.shape[-1]))
    views = [images]
    for dy, dx in ((0, d), (0, -d), (d, 0), (-d, 0))[: n - 1]:
        padded = np.pad(images, ((0, 0), (d, d), (d, d)), mode="edge")
        s = images.shape[-1]
        views.append(np.ascontiguousarray(padded[:, d - dy : d - dy + s, d - dx : d - dx + s]))
    return views


def to_model_input(images: np.ndarray, device=None):
    """uint8 (N, S, S) -> float32 tensor (N, 1, S, S) in [0, 1] on ``device`` (the only such conversion)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images))
    if device is not None:
        x = x.to(device)
    return x.unsqueeze(1).float().div_(255.0)
