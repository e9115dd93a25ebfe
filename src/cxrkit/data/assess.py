"""Is a decoded image a radiograph that can be assessed? The one rule, used by every path that scores.

A study that fails it is flagged "not assessable" and put in front of a reader, never scored and
never called normal: predict, triage, explain, the API and the service all call ``check_assessable``.

The content limits were set from the 6,221 real chest X-rays in ``../shared`` (NIH, Kermany, the
samples), whose extremes were: p1..p99 span at least 85 grey levels, the commonest grey value at
most 29 % of pixels, at least 113 distinct grey values, long/short side at most 1.17, neighbouring
pixels correlated at least 0.77, and at least 61 grey levels of relief left after removing the best
plane (on a 64 x 64 thumbnail). Each limit below leaves a wide margin to those while catching blank,
black, white and two-level images, and what a min-max stretch makes of a blank detector or a constant
16-bit file with a little noise (full-range noise: uncorrelated pixels) or of a blank film with a
heel-effect gradient (a plane and nothing else).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrkit.data.decode import NotAssessableError, opencv

MIN_SIDE = 32  # a shorter side is not an assessable radiograph (unless the model input is smaller)
MAX_ASPECT = 3.0  # longer/shorter side: beyond it the chest is lost after resizing to a square
MIN_SPAN = 48  # grey levels (of 255) between the 1st and 99th percentile: less is too little contrast
MAX_MODE_SHARE = 0.90  # share of pixels holding the commonest grey value: more is a blank image
MIN_LEVELS = 24  # distinct grey values: fewer is a binary or posterized picture, not a radiograph
MIN_CORRELATION = 0.3  # of neighbouring pixels: less is noise (anatomy is smooth at the pixel scale)
MIN_RELIEF = 12  # grey levels (p5..p95) left after removing the best plane: less is a bare gradient
THUMB = 64  # side of the thumbnail the plane is fitted on


@dataclass(frozen=True)
class ContentStats:
    """What the content rule looks at, from the (H, W) uint8 image the model would see."""

    span: int  # p99 - p1 in grey levels
    mode_share: float  # share of pixels at the commonest value
    levels: int  # distinct grey values
    aspect: float  # longer side / shorter side
    full_range: int  # max - min grey value
    correlation: float  # of horizontally and vertically neighbouring pixels (the smaller), centre crop
    relief: float  # p5..p95 of what is left after removing the best plane from a 64 px thumbnail


def grey_histogram(img: np.ndarray) -> np.ndarray:
    """The 256 pixel counts of a uint8 image: OpenCV's calcHist when installed (3-4x numpy), same counts."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    cv2 = opencv() if img.ndim == 2 and img.size < 1 << 24 else None  # float32 counts: exact below 2**24
    if cv2 is not None:
        return cv2.calcHist([img], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    # pragma: no mutate (next line) -- a 257th bin stays empty: the same percentiles, mode and levels
    return np.bincount(img.ravel(), minlength=256)


def compute_content_stats(img: np.ndarray) -> ContentStats:
    """Content statistics of an (H, W) uint8 image, from one histogram (fast on a 3,000 px image)."""
    h, w = img.shape[:2]  # pragma: no mutate (a 2-D image: [:2] and [:3] are the same)
    hist = grey_histogram(img)
    cdf = np.cumsum(hist) / max(hist.sum(), 1)  # pragma: no mutate (an image has pixels: the sum is >= 1)
    lo, hi = int(np.searchsorted(cdf, 0.01)), int(np.searchsorted(cdf, 0.99))
    present = np.flatnonzero(hist)
    return ContentStats(
        span=hi - lo,
        mode_share=float(hist.max() / max(hist.sum(), 1)),
        levels=len(present),
        aspect=max(h, w) / max(min(h, w), 1),
        full_range=int(present[-1] - present[0]),  # an image has pixels: present is never empty
        correlation=_neighbour_correlation(img),
        relief=_relief(img),
    )


# pragma: no mutate (next line) -- the crop only bounds the cost; any size near 512 gives the same verdict
def _neighbour_correlation(img: np.ndarray, crop: int = 512) -> float:
    """Lag-1 correlation of the centre crop (the smaller of horizontal and vertical); 0 when flat."""
    h, w = img.shape[:2]  # pragma: no mutate (a 2-D image: [:2] and [:3] are the same)
    top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
    c = np.array(img[top : top + crop, left : left + crop], dtype=np.float64)
    c -= c.mean()
    ch, cw = c.shape
    var = float(np.einsum("ij,ij->", c, c)) / c.size  # einsum: sums of products without temporaries
    if var == 0.0 or min(ch, cw) < 2:
        return 0.0
    across = float(np.einsum("ij,ij->", c[:, 1:], c[:, :-1])) / (ch * (cw - 1)) / var
    down = float(np.einsum("ij,ij->", c[1:, :], c[:-1, :])) / ((ch - 1) * cw) / var
    return min(across, down)


def _relief(img: np.ndarray) -> float:
    """Grey levels (p5..p95) of a THUMB x THUMB box-filtered thumbnail after removing its best plane."""
    from PIL import Image

    thumb = np.asarray(
        Image.fromarray(np.asarray(img, dtype=np.uint8)).resize((THUMB, THUMB), Image.Resampling.BOX),
        dtype=np.float64,
    ).ravel()
    y, x = np.divmod(np.arange(THUMB * THUMB), THUMB)
    design = np.c_[np.ones(THUMB * THUMB), x, y]
    coef, *_ = np.linalg.lstsq(design, thumb, rcond=None)
    lo, hi = np.percentile(thumb - design @ coef, [5, 95])
    return float(hi - lo)


def assessment_problem(img: np.ndarray, min_side: int = MIN_SIDE) -> str | None:
    """Why an (H, W) uint8 image cannot be assessed (too small, extreme shape, no content), or None."""
    h, w = img.shape[:2]  # pragma: no mutate (a 2-D image: [:2] and [:3] are the same)
    if min(h, w) < min_side:
        return f"image is {w}x{h} pixels, below the {min_side} px minimum side of an assessable radiograph"
    stats = compute_content_stats(img)
    if stats.aspect > MAX_ASPECT:
        return (
            f"image is {w}x{h} pixels: sides in ratio {stats.aspect:.2f}:1, over the {MAX_ASPECT:g}:1 "
            "limit (the chest would be lost after resizing)"
        )
    if stats.mode_share >= MAX_MODE_SHARE:
        return (
            f"no image content: {stats.mode_share:.0%} of pixels have one grey value "
            f"(blank, black or white image; limit {MAX_MODE_SHARE:.0%})"
        )
    if stats.span < MIN_SPAN:
        outliers = stats.full_range >= 4 * stats.span  # span >= 1 here: a span of 0 is a blank image
        return f"no image content: 98% of pixels lie within {stats.span} grey levels " + (
            f"while a few outliers span {stats.full_range} (a burned-in marker or a hot pixel took the "
            "grey range: window the image before scoring it)"
            if outliers
            else f"(nearly constant; at least {MIN_SPAN} expected)"
        )
    if stats.levels < MIN_LEVELS:
        return (
            f"no image content: only {stats.levels} distinct grey values (binary or posterized; "
            f"at least {MIN_LEVELS} expected)"
        )
    if stats.correlation < MIN_CORRELATION:
        return (
            f"no image content: neighbouring pixels are uncorrelated ({stats.correlation:.2f}; a radiograph "
            f"is above {MIN_CORRELATION:g}): noise, e.g. a blank detector stretched to full range"
        )
    if stats.relief < MIN_RELIEF:
        return (
            f"no image content: nothing but a smooth gradient ({stats.relief:.1f} grey levels of relief, "
            f"at least {MIN_RELIEF} expected): a blank film or an empty field"
        )
    return None


def check_assessable(img: np.ndarray, name: str | Path, min_side: int = MIN_SIDE) -> None:
    """Raise NotAssessableError (naming ``name``) when ``assessment_problem`` finds one."""
    problem = assessment_problem(img, min_side)
    if problem is not None:
        raise NotAssessableError(name, problem)
