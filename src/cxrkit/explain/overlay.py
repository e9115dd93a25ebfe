"""Overlays a person can read: the X-ray at its own resolution, the heatmap blended in colour, the
predicted box (red) and, where known, the true box (green), with the label and probability."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cxrkit.data.transforms import Geometry
from cxrkit.explain.boxes import Box
from cxrkit.outputs import write_with

PRED_COLOUR = (255, 40, 40)
TRUE_COLOUR = (40, 230, 60)


def heatmap_to_source(heat: np.ndarray, geo: Geometry) -> np.ndarray:
    """A model-input heatmap (S, S) resampled onto the original image's pixels (src_h, src_w)."""
    x0, y0, w, h = geo.to_output(0, 0, geo.src_w, geo.src_h)  # the image's place inside the square
    im = Image.fromarray(np.asarray(heat, dtype=np.float32), mode="F")
    crop = im.transform(
        (geo.src_w, geo.src_h), Image.Transform.EXTENT, (x0, y0, x0 + w, y0 + h), Image.Resampling.BILINEAR
    )
    return np.clip(np.asarray(crop, dtype=np.float32), 0.0, 1.0)


def _colormap(heat: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["jet"](heat)[..., :3] * 255).astype(np.uint8)


def render_overlay(
    image: np.ndarray,
    heat: np.ndarray,
    pred_boxes: Sequence[Box] = (),
    true_boxes: Sequence[Box] = (),
    caption: str = "",
    alpha: float = 0.4,
    max_side: int = 768,
) -> Image.Image:
    """RGB overlay of a grey image (H, W) uint8 and a heatmap (H, W) in [0, 1] of the same size.

    The heatmap's weight grows with its value (cold regions leave the X-ray visible); boxes are in
    the image's pixels; the result is downscaled so its longer side is at most ``max_side``.
    """
    if image.shape != heat.shape:
        raise ValueError(f"image {image.shape} and heatmap {heat.shape} differ in size")
    grey = np.repeat(image[..., None].astype(np.float32), 3, axis=2)
    weight = (alpha * np.clip(heat, 0, 1) ** 0.8)[..., None]
    rgb = (grey * (1 - weight) + _colormap(heat).astype(np.float32) * weight).clip(0, 255).astype(np.uint8)
    im = Image.fromarray(rgb, mode="RGB")
    k = min(1.0, max_side / max(im.size))
    if k < 1.0:
        im = im.resize((max(1, round(im.width * k)), max(1, round(im.height * k))), Image.Resampling.LANCZOS)
    if max(im.size) < 256:  # tiny inputs (64 px caches) are enlarged so boxes and text stay readable
        k2 = 256 / max(im.size)
        im = im.resize((round(im.width * k2), round(im.height * k2)), Image.Resampling.NEAREST)
        k *= k2
    draw = ImageDraw.Draw(im)
    line = max(2, round(max(im.size) / 250))
    for boxes, colour in ((true_boxes, TRUE_COLOUR), (pred_boxes, PRED_COLOUR)):
        for b in boxes:
            draw.rectangle(
                [b.x * k, b.y * k, (b.x + b.w) * k - 1, (b.y + b.h) * k - 1], outline=colour, width=line
            )
    if caption:
        font = ImageFont.load_default(size=max(12, round(max(im.size) / 40)))
        box = draw.textbbox((6, 6), caption, font=font)
        draw.rectangle([box[0] - 4, box[1] - 3, box[2] + 4, box[3] + 3], fill=(0, 0, 0))
        draw.text((6, 6), caption, fill=(255, 255, 255), font=font)
    return im


def save_grid(images: Sequence[Image.Image], path: str | Path, cols: int = 4, cell: int = 320) -> Path:
    """Tile overlays into one PNG (each scaled to fit a ``cell`` square), written atomically."""
    path = Path(path)
    cols = max(1, min(cols, len(images)))
    rows = -(-len(images) // cols)
    grid = Image.new("RGB", (cols * cell, rows * cell), (255, 255, 255))
    for k, im in enumerate(images):
        t = im.copy()
        t.thumbnail((cell, cell), Image.Resampling.LANCZOS)
        grid.paste(
            t, ((k % cols) * cell + (cell - t.width) // 2, (k // cols) * cell + (cell - t.height) // 2)
        )
    return write_with(path, lambda fh: grid.save(fh, format="PNG"))


def heat_layer(heat: np.ndarray, max_side: int = 1024) -> Image.Image:
    """An RGBA layer of a heatmap (H, W) in [0, 1] for a viewer to lay over the film: jet colours,
    opacity growing with the value (cold regions transparent), at most ``max_side`` px (the map is
    smooth; the viewer stretches it onto the image)."""
    h = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
    rgba = np.dstack([_colormap(h), (255 * h**0.8).astype(np.uint8)])
    im = Image.fromarray(rgba, mode="RGBA")
    k = min(1.0, max_side / max(im.size))
    if k < 1.0:
        im = im.resize((max(1, round(im.width * k)), max(1, round(im.height * k))), Image.Resampling.BILINEAR)
    return im
