"""Is a decoded image a radiograph that can be assessed? The one rule, used by every path that scores.

A study that fails it is flagged "not assessable" and put in front of a reader, never scored and
never called normal: predict, triage, the service and the DICOM node all call ``check_assessable``.

The content limits were set from the 6,221 real chest X-rays in ``../shared`` (NIH, Kermany, the
samples), whose extremes were: p1..p99 span at least 85 grey levels, the commonest grey value at
most 29 % of pixels, at least 113 distinct grey values, long/short side at most 1.17. Each limit
below leaves a wide margin to those while catching blank, black, white and two-level images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrkit.data.decode import NotAssessableError

MIN_SIDE = 32  # a shorter side is not an assessable radiograph (unless the model input is smaller)
MAX_ASPECT = 3.0  # longer/shorter side: beyond it the chest is lost after resizing to a square
MIN_SPAN = 16  # grey levels (of 255) between the 1st and 99th percentile: less is no contrast
MAX_MODE_SHARE = 0.90  # share of pixels holding the commonest grey value: more is a blank image
MIN_LEVELS = 24  # distinct grey values: fewer is a binary or posterized picture, not a radiograph


@dataclass(frozen=True)
class ContentStats:
    """What the content rule looks at, from the (H, W) uint8 image the model would see."""

    span: int  # p99 - p1 in grey levels
    mode_share: float  # share of pixels at the commonest value
    levels: int  # distinct grey values
    aspect: float  # longer side / shorter side


def compute_content_stats(img: np.ndarray) -> ContentStats:
    """Content statistics of an (H, W) uint8 image, from one histogram (fast on a 3,000 px image)."""
    h, w = img.shape[:2]
    hist = np.bincount(np.asarray(img, dtype=np.uint8).ravel(), minlength=256)
    cdf = np.cumsum(hist) / max(hist.sum(), 1)
    lo, hi = int(np.searchsorted(cdf, 0.01)), int(np.searchsorted(cdf, 0.99))
    return ContentStats(
        span=hi - lo,
        mode_share=float(hist.max() / max(hist.sum(), 1)),
        levels=int((hist > 0).sum()),
        aspect=max(h, w) / max(min(h, w), 1),
    )


def assessment_problem(img: np.ndarray, min_side: int = MIN_SIDE) -> str | None:
    """Why an (H, W) uint8 image cannot be assessed (too small, extreme shape, no content), or None."""
    h, w = img.shape[:2]
    if min(h, w) < min_side:
        return f"image is {w}x{h} pixels, below the {min_side} px minimum side of an assessable radiograph"
    stats = compute_content_stats(img)
    if stats.aspect > MAX_ASPECT:
        return (
            f"image is {w}x{h} pixels: sides in ratio {stats.aspect:.1f}:1, over the {MAX_ASPECT:g}:1 "
            "limit (the chest would be lost after resizing)"
        )
    if stats.mode_share >= MAX_MODE_SHARE:
        return (
            f"no image content: {stats.mode_share:.0%} of pixels have one grey value "
            f"(blank, black or white image; limit {MAX_MODE_SHARE:.0%})"
        )
    if stats.span < MIN_SPAN:
        return (
            f"no image content: 98% of pixels lie within {stats.span} grey levels "
            f"(nearly constant; at least {MIN_SPAN} expected)"
        )
    if stats.levels < MIN_LEVELS:
        return (
            f"no image content: only {stats.levels} distinct grey values (binary or posterized; "
            f"at least {MIN_LEVELS} expected)"
        )
    return None


def check_assessable(img: np.ndarray, name: str | Path, min_side: int = MIN_SIDE) -> None:
    """Raise NotAssessableError (naming ``name``) when ``assessment_problem`` finds one."""
    problem = assessment_problem(img, min_side)
    if problem is not None:
        raise NotAssessableError(name, problem)
