"""Acquisition shifts for chest radiographs, in the spirit of ImageNet-C: 12 named shifts at 5 severities.

Hendrycks & Dietterich (2019) corrupt ImageNet at five severities to measure robustness; these are the
radiograph counterparts: what another hospital's post-processing, dose, detector, compression, positioning,
collimation and burned-in annotations do to the same chest. They serve the robustness benchmark, a corrupted
validation set for model selection (``mixed_shift``) and, for ``PHOTOMETRIC``, training augmentation
(``augment_shifts``). Severity 0 is the identity (an exact copy). Polarity inversion (white lungs) is
deliberately not a shift: it is an input bug, caught where images are decoded, not a site difference.

Randomness: each image draws from its own generator, seeded by (seed, shift, a digest of the image's pixels,
how many identical images came before it in the batch), never by severity or position. So an image gets the
same result alone, in any batch and in any order, and a higher severity strengthens the same draw (same
rotation sign, noise field, collimated sides, text corners). Pure numpy + Pillow: uint8 (N, H, W) in, a new
uint8 (N, H, W) out; inputs are never modified.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Shift:
    """One acquisition shift: name, kind, what it stands for, its parameter at severities 1..5, the
    function that applies it, and whether it draws random numbers (then seeded per image).

    Adding a shift is one entry in ``SHIFTS`` (and its function): every list here derives from it.
    """

    name: str
    kind: str  # "photometric", "resolution", "noise", "geometric" or "artifact"
    simulates: str
    levels: tuple[float, ...]
    function: Callable[..., np.ndarray]  # (images (N, H, W) uint8, severity, generators) -> images
    random: bool = False


SEVERITIES = (1, 2, 3, 4, 5)

_MIXED_TAG = 1000  # seeds mixed_shift's per-image choice, apart from the shifts' own indices 0..11
_CHUNK_PIXELS = 1 << 19  # batch-vectorised shifts work on chunks of about this many pixels (bounded memory)

# ---------------------------------------------------------------------------------------------- helpers


def _to_uint8(f: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


def _chunks(n: int, pixels: int) -> list[slice]:
    step = max(1, _CHUNK_PIXELS // max(pixels, 1))
    return [slice(i, i + step) for i in range(0, n, step)]


def _content_keys(x: np.ndarray) -> list[tuple[int, int]]:
    """Per image: (128-bit digest of its pixels, how many identical images precede it in the batch)."""
    seen: dict[int, int] = {}
    keys = []
    for img in x:
        d = int.from_bytes(hashlib.blake2b(img, digest_size=16).digest(), "little")
        k = seen.get(d, 0)
        seen[d] = k + 1
        keys.append((d, k))
    return keys


def _generators(keys: Sequence[tuple[int, int]], seed: int, tag: int) -> list[np.random.Generator]:
    return [np.random.default_rng(np.random.SeedSequence([seed, tag, d, k])) for d, k in keys]


def _check_images(images: np.ndarray) -> np.ndarray:
    if not isinstance(images, np.ndarray):
        raise ValueError(f"images must be a numpy uint8 array (N, H, W), got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 grey levels 0..255, got dtype {images.dtype}")
    if images.ndim != 3:
        raise ValueError(
            f"images must be 3-D (N, H, W), got shape {images.shape}; for one image pass image[None]"
        )
    if len(images) and min(images.shape[1:]) < 2:
        raise ValueError(f"images must be at least 2x2 pixels, got shape {images.shape}")
    return np.ascontiguousarray(images)


def _check_name(name: str) -> str:
    if name not in SHIFTS:
        raise ValueError(f"unknown shift {name!r}; valid shifts: {', '.join(SHIFTS)}")
    return name


def _check_severity(severity: int) -> int:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 0 <= severity <= 5:
        raise ValueError(f"severity must be an int in 0..5, got {severity!r}")
    return int(severity)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _level(name: str, severity: int) -> float:
    return SHIFTS[name].levels[severity - 1]


# ----------------------------------------------------------------------------------------------- shifts
# Each takes (images uint8 (n, H, W), severity 1..5, per-image generators or None) -> new uint8 (n, H, W).


def _gamma(x: np.ndarray, severity: int, gens: object) -> np.ndarray:
    lut = _to_uint8(255 * (np.arange(256) / 255) ** _level("gamma", severity))
    return lut[x]


def _contrast(x: np.ndarray, severity: int, gens: object) -> np.ndarray:
    c = _level("contrast", severity)
    out = np.empty_like(x)
    for sl in _chunks(len(x), x[0].size):
        f = x[sl].astype(np.float32)
        mean = f.mean(axis=(1, 2), keepdims=True)
        out[sl] = _to_uint8(mean + c * (f - mean))
    return out


def _brightness(x: np.ndarray, severity: int, gens: list[np.random.Generator]) -> np.ndarray:
    signs = np.array([1 if g.integers(2) else -1 for g in gens], np.int16)
    offset = (signs * int(_level("brightness", severity)))[:, None, None]
    return np.clip(x.astype(np.int16) + offset, 0, 255).astype(np.uint8)


def _gaussian_noise(x: np.ndarray, severity: int, gens: list[np.random.Generator]) -> np.ndarray:
    sigma = np.float32(_level("gaussian_noise", severity))
    out = np.empty_like(x)
    for i, g in enumerate(gens):
        out[i] = _to_uint8(x[i] + sigma * g.standard_normal(x.shape[1:], dtype=np.float32))
    return out


def _poisson_noise(x: np.ndarray, severity: int, gens: list[np.random.Generator]) -> np.ndarray:
    lam = _level("poisson_noise", severity)
    out = np.empty_like(x)
    for i, g in enumerate(gens):
        out[i] = _to_uint8(g.poisson(x[i] * (lam / 255)) * (255 / lam))
    return out


@lru_cache(maxsize=64)
def _gaussian_kernel(sigma: float) -> np.ndarray:
    """Discrete Gaussian kernel: variance exactly sigma**2 (so sub-pixel sigmas blur), radius 4 sigma + 1."""
    r = int(np.ceil(4 * sigma)) + 1
    m = 2 * r + 1
    k = np.roll(np.fft.ifft(np.exp(sigma**2 * (np.cos(2 * np.pi * np.arange(m) / m) - 1))).real, r)
    return (k / k.sum()).astype(np.float32)


def _convolve_last(f: np.ndarray, k: np.ndarray) -> np.ndarray:
    r = len(k) // 2
    n = f.shape[-1]
    p = np.pad(f, [(0, 0)] * (f.ndim - 1) + [(r, r)], mode="edge")
    acc = k[0] * p[..., :n]
    for j in range(1, len(k)):
        acc += k[j] * p[..., j : j + n]
    return acc


def _blur(x: np.ndarray, severity: int, gens: object) -> np.ndarray:
    k = _gaussian_kernel(_level("blur", severity) * min(x.shape[1:]) / 128)
    out = np.empty_like(x)
    for sl in _chunks(len(x), x[0].size):
        f = _convolve_last(x[sl].astype(np.float32), k)
        out[sl] = _to_uint8(_convolve_last(f.swapaxes(1, 2), k).swapaxes(1, 2))
    return out


def _downsample(x: np.ndarray, severity: int, gens: object) -> np.ndarray:
    factor = _level("downsample", severity)
    h, w = x.shape[1:]
    small = (max(1, round(w / factor)), max(1, round(h / factor)))
    out = np.empty_like(x)
    for i in range(len(x)):
        im = Image.fromarray(x[i]).resize(small, Image.Resampling.BOX)
        out[i] = np.asarray(im.resize((w, h), Image.Resampling.BILINEAR))
    return out


def _jpeg(x: np.ndarray, severity: int, gens: object) -> np.ndarray:
    quality = int(_level("jpeg", severity))
    out = np.empty_like(x)
    for i in range(len(x)):
        buf = io.BytesIO()
        Image.fromarray(x[i]).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf) as im:
            out[i] = np.asarray(im.convert("L"))
    return out


def _warp(x: np.ndarray, mats: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Bilinear sample of image i at (y, x)_src = mats[i] @ (y, x) + offsets[i].

    Source coordinates are clamped to the image, so uncovered borders repeat the edge pixels (as in the
    training augmentation: zero fill would cut black bands into anatomy reaching the edge).
    """
    n, h, w = x.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty_like(x)
    for sl in _chunks(n, h * w):  # in place where possible: this is the hot loop of rotate and translate
        xs = x[sl]
        flat = xs.reshape(-1)
        m = mats[sl, :, :, None, None].astype(np.float32)
        o = offsets[sl, :, None, None].astype(np.float32)
        sy = m[:, 0, 0] * yy + m[:, 0, 1] * xx + o[:, 0]
        sx = m[:, 1, 0] * yy + m[:, 1, 1] * xx + o[:, 1]
        np.clip(sy, 0, h - 1, out=sy)
        np.clip(sx, 0, w - 1, out=sx)
        y0 = np.minimum(sy.astype(np.int32), h - 2)
        x0 = np.minimum(sx.astype(np.int32), w - 2)
        sy -= y0  # now the fractional weights
        sx -= x0
        i00 = y0 * w + x0 + (np.arange(len(xs), dtype=np.int32) * (h * w))[:, None, None]
        top, right = flat[i00].astype(np.float32), flat[i00 + 1].astype(np.float32)
        bottom, corner = flat[i00 + w].astype(np.float32), flat[i00 + (w + 1)].astype(np.float32)
        top += (right - top) * sx
        bottom += (corner - bottom) * sx
        top += (bottom - top) * sy
        out[sl] = _to_uint8(top)
    return out


def _rotate(x: np.ndarray, severity: int, gens: list[np.random.Generator]) -> np.ndarray:
    signs = np.array([1.0 if g.integers(2) else -1.0 for g in gens])
    a = np.deg2rad(signs * _level("rotate", severity))
    cos, sin = np.cos(a), np.sin(a)
    mats = np.stack([np.stack([cos, sin], 1), np.stack([-sin, cos], 1)], 1)  # (n, 2, 2), output -> source
    centre = (np.array(x.shape[1:], np.float64) - 1) / 2
    return _warp(x, mats, centre - mats @ centre)


def _translate(x: np.ndarray, severity: int, gens: list[np.random.Generator]) -> np.ndarray:
    phi = np.array([g.uniform(0, 2 * np.pi) for g in gens])
    frac = _level("translate", severity)
    offsets = -frac * np.stack([np.sin(phi) * x.shape[1], np.cos(phi) * x.shape[2]], 1)
    return _warp(x, np.broadcast_to(np.eye(2), (len(x), 2, 2)), offsets)


def _crop(x: np.ndarray, severity: int, gens: list[np.random.Generator]) -> np.ndarray:
    level = _level("crop", severity)
    h, w = x.shape[1:]
    out = x.copy()
    for i, g in enumerate(gens):
        top, bottom, left, right = np.ceil(level * g.uniform(0.5, 1.0, 4) * [h, h, w, w] - 1e-9).astype(int)
        out[i, :top] = 0
        out[i, h - bottom :] = 0
        out[i, :, :left] = 0
        out[i, :, w - right :] = 0
    return out


# A 5x7 blocky font for the burned-in text (no font files: identical pixels on every machine).
_GLYPHS = {
    "A": ".###. #...# #...# ##### #...# #...# #...#",
    "E": "##### #.... #.... ####. #.... #.... #####",
    "I": ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
    "L": "#.... #.... #.... #.... #.... #.... #####",
    "N": "#...# ##..# #.#.# #..## #...# #...# #...#",
    "O": ".###. #...# #...# #...# #...# #...# .###.",
    "P": "####. #...# #...# ####. #.... #.... #....",
    "R": "####. #...# #...# ####. #.#.. #..#. #...#",
    "S": ".#### #.... #.... .###. ....# ....# ####.",
    "T": "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
    "U": "#...# #...# #...# #...# #...# #...# .###.",
    "B": "####. #...# #...# ####. #...# #...# ####.",
    "C": ".###. #...# #.... #.... #.... #...# .###.",
    "0": ".###. #...# #..## #.#.# ##..# #...# .###.",
    "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
    "2": ".###. #...# ....# ...#. ..#.. .#... #####",
    "3": "####. ....# ....# .###. ....# ....# ####.",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#.",
    "5": "##### #.... ####. ....# ....# #...# .###.",
    "6": "..##. .#... #.... ####. #...# #...# .###.",
    "7": "##### ....# ...#. ..#.. .#... .#... .#...",
    "8": ".###. #...# #...# .###. #...# #...# .###.",
    "9": ".###. #...# #...# .#### ....# ...#. .##..",
    "/": "....# ....# ...#. ..#.. .#... #.... #....",
    ":": "..... ..#.. ..#.. ..... ..#.. ..#.. .....",
    " ": "..... ..... ..... ..... ..... ..... .....",
}
_TEXT_ITEMS = (1, 2, 3, 4, 4)  # items stamped at severities 1..5 (one per corner)


@lru_cache(maxsize=1024)
def _text_bitmap(text: str, boxed: bool) -> np.ndarray:
    """Bool bitmap of ``text`` (7 rows), or framed like a lead marker when ``boxed``."""
    glyphs = [np.array([[c == "#" for c in row] for row in _GLYPHS[ch].split()]) for ch in text]
    gaps = [np.zeros((7, 1), bool)] * len(glyphs)
    bm = np.hstack([a for pair in zip(glyphs, gaps, strict=True) for a in pair][:-1])
    if boxed:
        bm = np.pad(np.pad(bm, 1), 1, constant_values=True)
    return bm


def _text(x: np.ndarray, severity: int, gens: list[np.random.Generator]) -> np.ndarray:
    h, w = x.shape[1:]
    side = min(h, w)
    height = max(3, round(_level("text", severity) * side))
    margin = max(1, round(0.03 * side))
    out = x.copy()
    for i, g in enumerate(gens):  # every draw is made at every severity, so severities share them
        marker = "LR"[g.integers(2)]
        corners = g.permutation(4)
        order = g.permutation(5)
        d = g.integers([1, 1, 0, 0, 0], [29, 13, 100, 24, 60])
        pool = [
            "PORTABLE",
            "AP SUPINE",
            "ERECT",
            f"{d[0]:02d}/{d[1]:02d}/{d[2]:02d}",
            f"{d[3]:02d}:{d[4]:02d}",
        ]
        items = [(marker, True)] + [(pool[j], False) for j in order[:3]]
        for (text, boxed), corner in zip(items[: _TEXT_ITEMS[severity - 1]], corners, strict=False):
            bm = _text_bitmap(text, boxed)
            hh = min(h - 2 * margin, round(height * bm.shape[0] / 7))
            ww = min(int(0.45 * w), max(1, round(hh * bm.shape[1] / bm.shape[0])))
            mask = bm[(np.arange(hh) * bm.shape[0]) // hh][:, (np.arange(ww) * bm.shape[1]) // ww]
            y = margin if corner < 2 else h - margin - hh
            x0 = margin if corner % 2 == 0 else w - margin - ww
            out[i, y : y + hh, x0 : x0 + ww][mask] = 255
    return out


SHIFTS: dict[str, Shift] = {
    s.name: s
    for s in (
        Shift(
            "gamma",
            "photometric",
            "another site's post-processing LUT, out = 255*(x/255)**g, alternating sides of 1 (levels: g)",
            (0.8, 1.3, 0.65, 1.6, 0.5),
            _gamma,
            False,
        ),
        Shift(
            "contrast",
            "photometric",
            "a wider window (flatter contrast), out = mean + c*(x - mean) per image (levels: c)",
            (0.8, 0.65, 0.5, 0.4, 0.3),
            _contrast,
            False,
        ),
        Shift(
            "brightness",
            "photometric",
            "another window level or exposure, a +/- offset with sign per image (levels: grey levels)",
            (10.0, 20.0, 32.0, 45.0, 60.0),
            _brightness,
            True,
        ),
        Shift(
            "gaussian_noise",
            "noise",
            "detector electronic noise, additive N(0, sigma) (levels: sigma in grey levels)",
            (4.0, 8.0, 12.0, 18.0, 24.0),
            _gaussian_noise,
            True,
        ),
        Shift(
            "poisson_noise",
            "noise",
            "a lower dose: quantum noise with lam photons per pixel at full white (levels: lam)",
            (400.0, 200.0, 100.0, 50.0, 25.0),
            _poisson_noise,
            True,
        ),
        Shift(
            "blur",
            "resolution",
            "detector / focal-spot unsharpness, Gaussian blur (levels: sigma in px at 128 px, scaled)",
            (0.6, 1.0, 1.5, 2.0, 2.5),
            _blur,
            False,
        ),
        Shift(
            "downsample",
            "resolution",
            "a coarser detector, area-reduced by a factor then bilinear back up (levels: factor)",
            (1.5, 2.0, 2.5, 3.0, 4.0),
            _downsample,
            False,
        ),
        Shift(
            "jpeg",
            "resolution",
            "lossy re-compression (teleradiology, web export) (levels: JPEG quality)",
            (60.0, 40.0, 25.0, 15.0, 10.0),
            _jpeg,
            False,
        ),
        Shift(
            "rotate",
            "geometric",
            "patient positioning, rotation with sign per image, edge fill (levels: degrees)",
            (2.0, 4.0, 6.0, 8.0, 10.0),
            _rotate,
            True,
        ),
        Shift(
            "translate",
            "geometric",
            "off-centre positioning, shift in a per-image direction, edge fill (levels: fraction of side)",
            (0.02, 0.04, 0.06, 0.08, 0.10),
            _translate,
            True,
        ),
        Shift(
            "crop",
            "geometric",
            "tighter collimation / electronic shutters, black borders of 50-100% of the level on each side "
            "(levels: fraction of side)",
            (0.03, 0.06, 0.09, 0.12, 0.15),
            _crop,
            True,
        ),
        Shift(
            "text",
            "artifact",
            "burned-in L/R marker and annotations in 1, 2, 3, 4, 4 corners (levels: text height / side)",
            (0.06, 0.08, 0.10, 0.12, 0.14),
            _text,
            True,
        ),
    )
}
PHOTOMETRIC: tuple[str, ...] = tuple(
    n for n, x in SHIFTS.items() if x.kind in ("photometric", "noise", "resolution")
)
_RANDOM = frozenset(n for n, x in SHIFTS.items() if x.random)
_FUNCS: dict[str, Callable[..., np.ndarray]] = {n: x.function for n, x in SHIFTS.items()}
_INDEX = {name: i for i, name in enumerate(SHIFTS)}

# ----------------------------------------------------------------------------------------------- public


def apply_shift(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Images uint8 (N, H, W) under shift ``name`` at ``severity`` 1..5 (0 = unchanged copy, exactly equal).

    Image i's random draws depend only on (seed, name, its pixels), not on N, its position or the severity.
    """
    x = _check_images(images)
    _check_name(name)
    severity, seed = _check_severity(severity), _check_seed(seed)
    if severity == 0 or len(x) == 0:
        return images.copy()
    gens = _generators(_content_keys(x), seed, _INDEX[name]) if name in _RANDOM else None
    return _FUNCS[name](x, severity, gens)


def _apply_groups(
    x: np.ndarray, choice: np.ndarray, sev: np.ndarray, names: Sequence[str], gens_of: Callable
) -> np.ndarray:
    """x with image i under names[choice[i]] at sev[i]; ``gens_of(name, idx)`` gives its generators."""
    out = x.copy()
    for j, s in sorted({(int(c), int(v)) for c, v in zip(choice, sev, strict=True)}):
        if s == 0:
            continue
        idx = np.flatnonzero((choice == j) & (sev == s))
        name = names[j]
        gens = gens_of(name, idx) if name in _RANDOM else None
        out[idx] = _FUNCS[name](x[idx], s, gens)
    return out


def mixed_shift(
    images: np.ndarray,
    seed: int = 0,
    names: Sequence[str] | None = None,
    severities: Sequence[int] = SEVERITIES,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each image under one (shift, severity) drawn from ``names`` (default all) x ``severities``.

    Returns (shifted uint8 images, shift names (object array), severities (int array)). Image i's draw
    and result depend only on (seed, its pixels): row i is ``apply_shift(images, name_i, sev_i, seed)[i]``,
    and ``apply_shift(images[i:i+1], ...)`` too unless an identical image comes earlier in the batch.
    """
    x = _check_images(images)
    seed = _check_seed(seed)
    names = list(SHIFTS) if names is None else [_check_name(n) for n in names]
    sevs = [_check_severity(s) for s in severities]
    if not names or not sevs:
        raise ValueError("mixed_shift needs at least one shift name and one severity")
    keys = _content_keys(x)
    picks = np.array([g.integers(len(names) * len(sevs)) for g in _generators(keys, seed, _MIXED_TAG)], int)
    choice = picks // len(sevs)
    sev = np.array(sevs, np.int64)[picks % len(sevs)] if len(x) else np.zeros(0, np.int64)

    def gens_of(name: str, idx: np.ndarray) -> list[np.random.Generator]:
        return _generators([keys[i] for i in idx], seed, _INDEX[name])

    out = _apply_groups(x, choice, sev, names, gens_of)
    return out, np.array([names[c] for c in choice], dtype=object), sev


def augment_shifts(
    images: np.ndarray,
    rng: np.random.Generator,
    p: float = 0.5,
    names: Sequence[str] = PHOTOMETRIC,
    max_severity: int = 3,
) -> np.ndarray:
    """Training augmentation: each image, with probability p, under one random shift of ``names`` at a
    random severity 1..max_severity. Every draw comes from ``rng`` (the same number whatever p)."""
    x = _check_images(images)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"rng must be a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}"
        )
    if not 0 <= p <= 1:
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
    names = [_check_name(n) for n in names]
    if not names:
        raise ValueError("augment_shifts needs at least one shift name")
    if _check_severity(max_severity) < 1:
        raise ValueError(f"max_severity must be in 1..5, got {max_severity!r}")
    n = len(x)
    apply = rng.random(n) < p
    choice = rng.integers(len(names), size=n)
    sev = np.where(apply, rng.integers(1, max_severity + 1, size=n), 0)
    child = rng.integers(0, 2**63 - 1, size=n, dtype=np.int64)

    def gens_of(name: str, idx: np.ndarray) -> list[np.random.Generator]:
        return [np.random.default_rng(int(c)) for c in child[idx]]

    return _apply_groups(x, choice, sev, names, gens_of)
