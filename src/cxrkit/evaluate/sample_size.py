"""How many labelled studies a site needs: Wilson score intervals for a proportion, and their inverse.

The Wilson interval (Wilson 1927; recommended over the Wald interval by Newcombe, Stat Med 1998 and
Brown, Cai & DasGupta, Stat Sci 2001) keeps its coverage near 95% for proportions near 0 or 1, which
is where a triage operating point's sensitivity lives. ``needed`` inverts its width: the smallest
number of positives (for sensitivity) or negatives (for specificity) whose interval, at the expected
proportion, is no wider than asked.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``successes`` out of ``n`` (NaN, NaN when ``n`` is 0)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    return _wilson(p, n, z)


def _wilson(p: float, n: float, z: float) -> tuple[float, float]:
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson_width(p: float, n: int, z: float = Z95) -> float:
    """The width of the Wilson interval at observed proportion ``p`` with ``n`` studies (NaN for none)."""
    if n <= 0 or p != p:
        return float("nan")
    low, high = _wilson(p, n, z)
    return high - low


def needed(p: float, width: float, z: float = Z95, most: int = 10_000_000) -> int:
    """The smallest n whose Wilson interval at proportion ``p`` is at most ``width`` wide."""
    if not 0.0 <= p <= 1.0 or not 0.0 < width < 1.0:
        raise ValueError(f"proportion {p} and width {width}: expected p in [0, 1] and a width in (0, 1)")
    lo, hi = 1, most
    if wilson_width(p, hi, z) > width:
        raise ValueError(f"a width of {width} at {p} needs more than {most:,} studies")
    while lo < hi:  # the width falls as n grows
        mid = (lo + hi) // 2
        if wilson_width(p, mid, z) <= width:
            hi = mid
        else:
            lo = mid + 1
    return lo
