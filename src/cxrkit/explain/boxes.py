"""Heatmap -> box, and box scoring by IoBB and IoU (the ChestX-ray8 localization protocol).

A heatmap at the model's input resolution is thresholded at a fraction of its maximum; the largest
connected component(s) (8-connected) give boxes, first in model-input pixels, then mapped back to
original-image pixels through the resize/pad :class:`~cxrkit.data.transforms.Geometry`. NIH boxes
come in the 1024x1024 frame of the original PNGs and are rescaled to the image actually used.

A ground-truth box counts as localized at threshold T when some predicted box for its label has
IoBB (intersection over the *predicted* box's area) or IoU above T, as in Wang et al. (CVPR 2017).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cxrkit.data.transforms import Geometry

IOBB_THRESHOLDS = (0.1, 0.25, 0.5, 0.75, 0.9)
IOU_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


@dataclass(frozen=True)
class Box:
    """An axis-aligned box: top-left (x, y), width and height, in pixels (continuous coordinates)."""

    x: float
    y: float
    w: float
    h: float

    @property
    def area(self) -> float:
        return max(self.w, 0.0) * max(self.h, 0.0)

    def scaled(self, kx: float, ky: float) -> Box:
        """The box with x and w times ``kx``, y and h times ``ky`` (a change of frame)."""
        return Box(self.x * kx, self.y * ky, self.w * kx, self.h * ky)

    def to_source(self, geo: Geometry) -> Box:
        """From model-input pixels to original-image pixels, clipped to the image."""
        x, y, w, h = geo.to_source(self.x, self.y, self.w, self.h)
        x0, y0 = max(x, 0.0), max(y, 0.0)
        x1, y1 = min(x + w, float(geo.src_w)), min(y + h, float(geo.src_h))
        return Box(x0, y0, max(x1 - x0, 0.0), max(y1 - y0, 0.0))

    def to_output(self, geo: Geometry) -> Box:
        """From original-image pixels to model-input pixels."""
        return Box(*geo.to_output(self.x, self.y, self.w, self.h))


def heatmap_boxes(heat: np.ndarray, frac: float = 0.5, max_boxes: int = 1) -> list[Box]:
    """Boxes around the ``max_boxes`` largest 8-connected regions where heat >= ``frac`` x its max.

    Pixel (r, c) covers [c, c + 1) x [r, r + 1), so a region spanning columns c0..c1 gives x = c0 and
    w = c1 - c0 + 1. An all-zero heatmap gives no box.
    """
    from scipy import ndimage

    if not 0.0 < frac <= 1.0:
        raise ValueError(f"box threshold fraction {frac}: expected a value in (0, 1]")
    h = np.asarray(heat, dtype=np.float64)
    if h.size == 0 or h.max() <= 0:
        return []
    peak = float(h.max())
    components, _ = ndimage.label(h >= frac * peak, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(components.ravel())[1:]
    order = np.argsort(-sizes, kind="stable")[:max_boxes]
    slices = ndimage.find_objects(components)
    out = []
    for k in order:
        rs, cs = slices[k]
        out.append(
            Box(float(cs.start), float(rs.start), float(cs.stop - cs.start), float(rs.stop - rs.start))
        )
    return out


def intersection(a: Box, b: Box) -> float:
    """Area of the overlap of two boxes."""
    w = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    h = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    return max(w, 0.0) * max(h, 0.0)


def iobb(pred: Box, true: Box) -> float:
    """Intersection over the detected (predicted) box's area; 0 for an empty predicted box."""
    return intersection(pred, true) / pred.area if pred.area > 0 else 0.0


def iou(pred: Box, true: Box) -> float:
    """Intersection over union; 0 when both are empty."""
    inter = intersection(pred, true)
    union = pred.area + true.area - inter
    return inter / union if union > 0 else 0.0


def best_overlaps(preds: Sequence[Box], true: Box) -> tuple[float, float]:
    """The best IoBB and best IoU of any predicted box with ``true`` (0, 0 without predictions)."""
    if not preds:
        return 0.0, 0.0
    return max(iobb(p, true) for p in preds), max(iou(p, true) for p in preds)


def localization_table(scores: pd.DataFrame) -> pd.DataFrame:
    """Accuracy at each T(IoBB) and T(IoU) per finding and over all boxes, plus the number of boxes.

    ``scores`` has one row per ground-truth box with columns ``label``, ``iobb``, ``iou``; rows of the
    result are "T(IoBB)=0.1" ... "T(IoU)=0.7" and "boxes"; columns the findings, then "all".
    """
    labels = sorted(scores["label"].unique()) if len(scores) else []
    rows = {}
    for name, col, ts in (("IoBB", "iobb", IOBB_THRESHOLDS), ("IoU", "iou", IOU_THRESHOLDS)):
        for t in ts:
            row = {lab: float((scores.loc[scores["label"] == lab, col] > t).mean()) for lab in labels}
            row["all"] = float((scores[col] > t).mean()) if len(scores) else float("nan")
            rows[f"T({name})={t:g}"] = row
    rows["boxes"] = {**{lab: int((scores["label"] == lab).sum()) for lab in labels}, "all": len(scores)}
    return pd.DataFrame(rows).T[[*labels, "all"]]
