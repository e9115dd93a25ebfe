"""Drift of what a deployed model receives, without labels: one window of studies against the run's
validation reference, as CheXstray does (Soin et al., arXiv 2202.02833: image features, metadata and
model outputs combined into one signal).

Components of a window's statistic:

- ``features``: squared maximum mean discrepancy (Gretton et al., JMLR 2012; RBF kernel, median
  bandwidth) between the window's low-dimensional feature summaries and the reference's;
- ``pixels``: the same MMD on standardised acquisition statistics of the images (``pixel_stats``),
  which see what the network's own normalisation hides (a gamma or contrast change under histogram
  equalisation);
- ``ood``: two-sample Kolmogorov-Smirnov statistic of the OOD scores;
- ``scores``: KS statistic of the triage (abnormality) scores;
- ``flag_rate``: the window's share flagged abnormal minus the reference share;
- ``categories``: chi-squared statistic of categorical header fields (view, sex) against the
  reference's frequencies, where both have them.

Each component is standardised by its mean and spread over windows drawn from validation images the
reference was not built from; the drift signal is the largest standardised component, and the alarm
threshold is its 95th percentile over those windows (about 5% false alarms on in-distribution
windows by construction). Pure numpy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

COMPONENTS = ("features", "pixels", "ood", "scores", "flag_rate", "categories")
PIXEL_STATS = ("mean", "sd", "p05", "p50", "p95", "gradient", "laplacian", "blockiness")


def pixel_stats(images: np.ndarray) -> np.ndarray:
    """(N, 8) acquisition statistics of prepared uint8 images, before the network: grey level, contrast,
    percentiles, edge and fine-detail energy, and blockiness (steps across JPEG's 8-pixel grid over the
    others). They move with exposure, post-processing, noise, blur and
    compression even where the network's own input normalisation hides the change from its features."""
    x = np.asarray(images, dtype=np.float32).reshape(len(images), images.shape[-2], images.shape[-1]) / 255.0
    if not len(x):
        return np.zeros((0, len(PIXEL_STATS)))
    flat = x.reshape(len(x), -1)
    pct = np.percentile(flat, [5, 50, 95], axis=1).T
    grad = (np.abs(np.diff(x, axis=1)).mean((1, 2)) + np.abs(np.diff(x, axis=2)).mean((1, 2))) / 2
    lap = np.abs(4 * x[:, 1:-1, 1:-1] - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:])
    dx = np.abs(np.diff(x, axis=2))  # (N, H, W-1): the step between columns c and c+1
    edge = (np.arange(dx.shape[2]) % 8) == 7  # steps across an 8-pixel block boundary (JPEG's grid)
    block = dx[:, :, edge].mean((1, 2)) / (dx[:, :, ~edge].mean((1, 2)) + 1e-6) if edge.any() else grad * 0
    stats = [flat.mean(1), flat.std(1), pct, grad, lap.mean((1, 2)), block]
    return np.column_stack(stats).astype(np.float64)


FALSE_ALARMS = 0.05
MIN_CATEGORY = 20  # studies with a header field needed before its chi-squared counts


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    if not len(a) or not len(b):
        return float("nan")
    grid = np.r_[a, b]
    return float(
        np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b)).max()
    )


def median_bandwidth(x: np.ndarray, limit: int = 500) -> float:
    """The median pairwise distance of (up to ``limit``) rows: the usual RBF bandwidth heuristic."""
    x = np.asarray(x, np.float64)[:limit]
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    m = float(np.median(d[np.triu_indices(len(x), 1)])) if len(x) > 1 else 1.0
    return m if m > 0 else 1.0


def mmd2(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """Biased squared MMD between rows ``x`` and ``y`` with an RBF kernel of ``bandwidth``."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)

    def k(a: np.ndarray, b: np.ndarray) -> float:
        d2 = (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2 * a @ b.T
        return float(np.exp(-np.maximum(d2, 0) / (2 * bandwidth**2)).mean())

    return k(x, x) + k(y, y) - 2 * k(x, y)


def chi2_statistic(values: Sequence[str], reference: Mapping[str, float]) -> float:
    """Pearson's chi-squared of observed categories against reference frequencies (unknown ones
    pooled into one extra cell with a small expected share, so a new category counts heavily)."""
    values = [v for v in values if v]
    if not values or not reference:
        return float("nan")
    cats = list(reference)
    floor = 0.5 / max(len(values), 1)  # expected share of a category the reference never had
    probs = np.array([max(reference[c], floor) for c in cats] + [floor])
    probs /= probs.sum()
    obs = np.array([sum(v == c for v in values) for c in cats] + [sum(v not in reference for v in values)])
    exp = probs * len(values)
    return float(((obs - exp) ** 2 / exp).sum())


@dataclass
class Window:
    """One window of monitored studies (scored ones; categorical fields may be empty strings)."""

    summary: np.ndarray  # (n, k)
    ood: np.ndarray  # (n,)
    scores: np.ndarray  # (n,) triage scores
    flagged: np.ndarray  # (n,) bool, flagged abnormal at the operating point
    categories: dict[str, list[str]] = field(default_factory=dict)
    pixels: np.ndarray | None = None  # (n, 7) pixel_stats; None where not recorded


@dataclass
class DriftReference:
    """What windows are compared with, and how each component is standardised."""

    reference: Window
    bandwidth: float
    category_freq: dict[str, dict[str, float]]
    mean: dict[str, float]
    sd: dict[str, float]
    threshold: float
    window: int
    pixel_center: np.ndarray | None = None  # standardisation of pixel_stats (the reference's mean, sd)
    pixel_scale: np.ndarray | None = None
    pixel_bandwidth: float = 1.0


def _pixels(w: Window, ref: Window, pixel: tuple | None) -> float:
    if pixel is None or w.pixels is None or ref.pixels is None or len(w.pixels) < 2:
        return float("nan")
    if w.pixels.shape[1] != ref.pixels.shape[1]:  # recorded by another cxrkit version: not comparable
        return float("nan")
    center, scale, bandwidth = pixel
    keep = np.isfinite(w.pixels).all(1)
    return mmd2((w.pixels[keep] - center) / scale, (ref.pixels - center) / scale, bandwidth)


def raw_components(
    w: Window,
    ref: Window,
    bandwidth: float,
    freq: Mapping[str, Mapping[str, float]],
    pixel: tuple | None = None,
) -> dict:
    """The unstandardised component statistics of window ``w`` against ``ref`` (``pixel``: the pixel
    statistics' centre, scale and bandwidth)."""
    cats = [
        chi2_statistic(w.categories.get(name, []), f) / max(len(f), 1)
        for name, f in freq.items()
        if sum(1 for v in w.categories.get(name, []) if v) >= MIN_CATEGORY
    ]
    return {
        "features": mmd2(w.summary, ref.summary, bandwidth),
        "pixels": _pixels(w, ref, pixel),
        "ood": ks_statistic(w.ood, ref.ood),
        "scores": ks_statistic(w.scores, ref.scores),
        "flag_rate": abs(float(np.mean(w.flagged)) - float(np.mean(ref.flagged))),
        "categories": max(cats) if cats else float("nan"),
    }


def window_signal(w: Window, ref: DriftReference) -> dict:
    """Each standardised component, the drift signal (their maximum), which moved most, and the alarm."""
    raw = raw_components(w, ref.reference, ref.bandwidth, ref.category_freq, _pixel(ref))
    z = {
        k: (raw[k] - ref.mean[k]) / ref.sd[k] if np.isfinite(raw[k]) and ref.sd.get(k) else float("nan")
        for k in COMPONENTS
    }
    finite = {k: v for k, v in z.items() if np.isfinite(v)}
    signal = max(finite.values()) if finite else float("nan")
    return {
        "signal": signal,
        "driver": max(finite, key=finite.get) if finite else "",
        "alarm": bool(signal > ref.threshold) if np.isfinite(signal) else False,
        **{f"raw_{k}": v for k, v in raw.items()},
        **{f"z_{k}": v for k, v in z.items()},
    }


def _pixel(ref: DriftReference) -> tuple | None:
    if ref.pixel_center is None:
        return None
    return ref.pixel_center, ref.pixel_scale, ref.pixel_bandwidth


def _take(w: Window, idx: np.ndarray) -> Window:
    return Window(
        w.summary[idx],
        w.ood[idx],
        w.scores[idx],
        w.flagged[idx],
        {k: [v[i] for i in idx] for k, v in w.categories.items()},
        w.pixels[idx] if w.pixels is not None else None,
    )


def fit_drift(val: Window, window: int = 200, simulations: int = 200, seed: int = 0) -> DriftReference:
    """Split validation studies in two: one half is the reference, windows of ``window`` studies drawn
    (with replacement) from the other half standardise each component and set the alarm threshold."""
    n = len(val.ood)
    if n < 20:
        raise ValueError(f"drift monitoring needs a validation reference of at least 20 studies (got {n})")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    ref, held = _take(val, np.sort(order[: n // 2])), _take(val, np.sort(order[n // 2 :]))
    bandwidth = median_bandwidth(ref.summary)
    freq = {}
    for name, values in ref.categories.items():
        known = [v for v in values if v]
        if len(known) >= MIN_CATEGORY:
            freq[name] = {c: known.count(c) / len(known) for c in sorted(set(known))}
    pixel = None
    if ref.pixels is not None and len(ref.pixels) > 1:
        center, scale = ref.pixels.mean(0), ref.pixels.std(0)
        scale = np.where(scale > 0, scale, 1.0)
        pixel = (center, scale, median_bandwidth((ref.pixels - center) / scale))
    sims = [
        raw_components(_take(held, rng.integers(0, len(held.ood), window)), ref, bandwidth, freq, pixel)
        for _ in range(simulations)
    ]
    mean, sd = {}, {}
    for k in COMPONENTS:
        vals = np.array([s[k] for s in sims], np.float64)
        vals = vals[np.isfinite(vals)]
        mean[k] = float(vals.mean()) if len(vals) else float("nan")
        sd[k] = float(vals.std()) if len(vals) and vals.std() > 0 else 0.0
    drift = DriftReference(
        ref, bandwidth, freq, mean, sd, float("inf"), window, *(pixel or (None, None, 1.0))
    )
    signals = np.array(
        [
            window_signal(_take(held, rng.integers(0, len(held.ood), window)), drift)["signal"]
            for _ in range(simulations)
        ]
    )
    drift.threshold = float(np.quantile(signals[np.isfinite(signals)], 1 - FALSE_ALARMS))
    return drift
