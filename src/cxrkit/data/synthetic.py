"""Synthetic chest phantoms: chest-like grey images with the 14 findings drawn where they occur.

Each case is sampled from ``default_rng([seed, i])``: anatomy jitter (lungs, heart, ribs,
vessel markings) and each finding with probability ``prevalence``, placed on a random side and
height within its anatomical zone (nodule in either lung, effusion at a costophrenic angle,
pneumothorax at an apex, hernia behind the heart...). Labels and boxes come from the sampled
parameters; pixels are rendered lazily at any size, so the same case exists at 64 and 224 px.
The image is patient-right on image-left (PA convention). Boxes are in output pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cxrkit.data.base import XRayDataset, standard_meta
from cxrkit.labels import FINDINGS, LABELS

PHANTOM_VERSION = 4
_GRID = 96  # resolution at which finding masks are evaluated to get their boxes
Field = np.ndarray
Drawer = Callable[[Field, Field, dict, dict], Field]


def _ellipse(u: Field, v: Field, cx: float, cy: float, rx: float, ry: float, edge: float = 0.08) -> Field:
    """Soft ellipse mask in [0, 1]: 1 inside, fading over ``edge`` of the radius."""
    r = np.sqrt(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2)
    return np.clip((1.0 - r) / edge, 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, cells: int, u: Field, v: Field) -> Field:
    """Unit-variance noise on a ``cells`` x ``cells`` grid, bilinearly interpolated at (u, v)."""
    grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    gx, gy = u * cells, v * cells
    x0 = np.clip(gx.astype(int), 0, cells - 1)
    y0 = np.clip(gy.astype(int), 0, cells - 1)
    fx, fy = gx - x0, gy - y0
    top = grid[y0, x0] * (1 - fx) + grid[y0, x0 + 1] * fx
    bottom = grid[y0 + 1, x0] * (1 - fx) + grid[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _gauss(u: Field, v: Field, cx: float, cy: float, s: float) -> Field:
    """Gaussian bump cut to zero beyond ~2.4 sigma, so a finding has a finite extent (and box)."""
    g = np.exp(-(((u - cx) ** 2 + (v - cy) ** 2) / (2 * s * s)))
    return np.clip((g - 0.05) / 0.95, 0.0, 1.0)


def _lung(a: dict, side: int) -> tuple[float, float, float, float]:
    """(cx, cy, rx, ry) of the lung on ``side`` (0 = patient right = image left)."""
    return a["lungs"][side]


def _lung_mask(u: Field, v: Field, a: dict, side: int) -> Field:
    cx, cy, rx, ry = _lung(a, side)
    return _ellipse(u, v, cx, cy, rx, ry, 0.06) * (v < a["dome"] + 0.0)


# --- findings: each returns an additive intensity field (and reads its parameters) -------------


def _nodule(u, v, a, p):
    return 0.45 * _ellipse(u, v, p["x"], p["y"], p["r"], p["r"], 0.3)


def _mass(u, v, a, p):
    return 0.42 * _ellipse(u, v, p["x"], p["y"], p["r"], p["r"] * 0.9, 0.1)


def _effusion(u, v, a, p):
    cx, _cy, rx, _ry = _lung(a, p["side"])
    lateral = np.abs(u - cx) / rx  # meniscus: fluid climbs the lateral wall
    level = a["dome"] - p["depth"] - 0.06 * lateral**2 * (np.sign(u - cx) == (1 if p["side"] else -1))
    return 0.45 * _lung_mask(u, v, a, p["side"]) * np.clip((v - level) / 0.015, 0, 1)


def _pneumothorax(u, v, a, p):
    cx, cy, rx, ry = _lung(a, p["side"])
    r = np.sqrt(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2)
    apex = (v < cy - p["extent"] * ry) | ((r > 1 - p["rim"]) & (v < cy))
    zone = _lung_mask(u, v, a, p["side"]) * apex
    line = 0.25 * np.exp(-(((v - (cy - p["extent"] * ry)) / 0.006) ** 2)) * _lung_mask(u, v, a, p["side"])
    return -a["markings"] * zone - 0.1 * zone + line * (v > cy - ry) * (v < cy)


def _atelectasis(u, v, a, p):
    du, dv = u - p["x"], v - p["y"]
    c, s = np.cos(p["tilt"]), np.sin(p["tilt"])
    return 0.32 * _ellipse(c * du + s * dv, -s * du + c * dv, 0, 0, p["len"], 0.022, 0.4)


def _infiltration(u, v, a, p):
    out = np.zeros_like(u)
    for bx, by in p["blobs"]:
        out += 0.2 * _gauss(u, v, bx, by, 0.02)
    return out * _lung_mask(u, v, a, p["side"])


def _consolidation(u, v, a, p):
    """Lobar: the lung below a fissure-like boundary fills in, bounded by the lung itself."""
    _, cy, _, ry = _lung(a, p["side"])
    fill = np.clip((v - (cy + p["top"] * ry)) / 0.02, 0, 1)
    return 0.3 * fill * _lung_mask(u, v, a, p["side"])


def _pneumonia(u, v, a, p):
    """Ill-defined: a broad, faint patch without a sharp edge."""
    return 0.24 * _gauss(u, v, p["x"], p["y"], p["s"]) * _lung_mask(u, v, a, p["side"])


def _edema(u, v, a, p):
    haze = sum(
        _gauss(u, v, _lung(a, s)[0] + (0.05 if s == 0 else -0.05), _lung(a, s)[1], 0.07) for s in (0, 1)
    )
    lungs = np.maximum(_lung_mask(u, v, a, 0), _lung_mask(u, v, a, 1))
    return 0.2 * haze * lungs


def _fibrosis(u, v, a, p):
    pattern = (np.abs(np.sin(u * p["freq"])) < 0.3) | (np.abs(np.sin(v * p["freq"] * 1.2)) < 0.3)
    zone = _ellipse(u, v, p["x"], p["y"], 0.07, 0.08, 0.3) * _lung_mask(u, v, a, p["side"])
    return 0.28 * pattern * zone


def _pleural(u, v, a, p):
    cx, cy, rx, ry = _lung(a, p["side"])
    r = np.sqrt(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2)
    lateral = (u < cx) if p["side"] == 0 else (u > cx)
    band = (r > 0.78) & (r < 1.0) & lateral & (v > p["y0"]) & (v < p["y0"] + p["len"])
    return 0.35 * band


def _hernia(u, v, a, p):
    disk = _ellipse(u, v, p["x"], p["y"], p["r"], p["r"] * 0.85, 0.1)
    return disk * np.where(v < p["y"] - 0.01, -0.35, 0.12)


def _emphysema(u, v, a, p):
    lungs = np.maximum(_lung_mask(u, v, a, 0), _lung_mask(u, v, a, 1))
    return -(0.09 + a["markings"]) * lungs


def _cardiomegaly(u, v, a, p):
    return np.zeros_like(u)  # drawn by enlarging the heart in the anatomy


DRAWERS: dict[str, Drawer] = {
    "Atelectasis": _atelectasis, "Cardiomegaly": _cardiomegaly, "Effusion": _effusion,
    "Infiltration": _infiltration, "Mass": _mass, "Nodule": _nodule, "Pneumonia": _pneumonia,
    "Pneumothorax": _pneumothorax, "Consolidation": _consolidation, "Edema": _edema,
    "Emphysema": _emphysema, "Fibrosis": _fibrosis, "Pleural_Thickening": _pleural,
    "Hernia": _hernia,
}  # fmt: skip


def _point_in_lung(
    rng: np.random.Generator, a: dict, side: int, vmin: float, vmax: float, margin: float
) -> tuple[float, float]:
    cx, cy, rx, ry = _lung(a, side)
    for _ in range(50):
        x = rng.uniform(cx - rx * (1 - margin), cx + rx * (1 - margin))
        y = rng.uniform(cy - ry * (1 - vmin), cy + ry * vmax)
        if ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < (1 - margin) ** 2 and y < a["dome"] - 0.03:
            return x, y
    return cx, cy


def _sample_params(name: str, rng: np.random.Generator, a: dict) -> dict:
    side = int(rng.integers(2))
    p: dict = {"side": side}
    if name in ("Nodule", "Mass"):
        p["r"] = rng.uniform(0.022, 0.03) if name == "Nodule" else rng.uniform(0.06, 0.08)
        p["x"], p["y"] = _point_in_lung(rng, a, side, 0.2, 0.5, 0.35 if name == "Mass" else 0.2)
    elif name == "Effusion":
        p["depth"] = rng.uniform(0.06, 0.12)
    elif name == "Pneumothorax":
        p["extent"], p["rim"] = rng.uniform(0.45, 0.7), rng.uniform(0.1, 0.2)
    elif name == "Atelectasis":
        p["x"], p["y"] = _point_in_lung(rng, a, side, -0.2, 0.6, 0.3)
        p["len"], p["tilt"] = rng.uniform(0.06, 0.09), rng.uniform(-0.3, 0.3)
    elif name == "Infiltration":
        x, y = _point_in_lung(rng, a, side, 0.0, 0.4, 0.3)
        p["blobs"] = [(x + dx, y + dy) for dx, dy in rng.uniform(-0.05, 0.05, (6, 2))]
    elif name == "Consolidation":
        p["top"] = rng.uniform(0.05, 0.35)  # fraction of the lung's half-height below its centre
    elif name == "Pneumonia":
        p["x"], p["y"] = _point_in_lung(rng, a, side, -0.2, 0.6, 0.3)
        p["s"] = rng.uniform(0.05, 0.065)
    elif name == "Fibrosis":
        p["x"], p["y"] = _point_in_lung(rng, a, side, 0.0, 0.6, 0.3)
        p["freq"] = rng.uniform(45, 60)  # reticular lines ~2 px wide at 64 px
    elif name == "Pleural_Thickening":
        cy, ry = _lung(a, side)[1], _lung(a, side)[3]
        p["y0"], p["len"] = rng.uniform(cy - 0.7 * ry, cy), rng.uniform(0.12, 0.2)
    elif name == "Hernia":
        hx, hy = a["heart"][:2]
        p["x"], p["y"], p["r"] = (
            hx + rng.uniform(-0.03, 0.03),
            hy + rng.uniform(0.0, 0.04),
            rng.uniform(0.045, 0.06),
        )
    return p


def _sample_anatomy(rng: np.random.Generator) -> dict:
    j = lambda s: rng.uniform(-s, s)  # noqa: E731
    ry = 0.29 + j(0.02)
    lungs = [
        (0.3 + j(0.015), 0.45 + j(0.015), 0.14 + j(0.01), ry),
        (0.7 + j(0.015), 0.45 + j(0.015), 0.14 + j(0.01), ry),
    ]
    return {
        "lungs": lungs,
        "dome": 0.45 + ry * 0.82 + j(0.02),
        "heart": [0.55 + j(0.01), 0.62 + j(0.015), 0.13 + j(0.008), 0.105 + j(0.008)],
        "body": 0.5 + j(0.05),
        "lung_level": 0.2 + j(0.03),
        "markings": 0.06 + j(0.015),
        "rib_phase": rng.uniform(0, 1),
        "texture_seed": int(rng.integers(1 << 31)),
    }


@dataclass(frozen=True)
class PhantomCase:
    """One sampled case: anatomy, the findings present with their parameters, and boxes (0..1)."""

    anatomy: dict
    findings: dict[str, dict]
    boxes: dict[str, tuple[float, float, float, float]]


def _mask_box(name: str, a: dict, p: dict) -> tuple[float, float, float, float]:
    if name == "Cardiomegaly":
        cx, cy, rx, ry = a["heart"]
        return cx - rx, cy - ry, 2 * rx, 2 * ry
    if name == "Emphysema":
        (lx, ly, lrx, lry), (rx_, _, rrx, _) = a["lungs"]
        return lx - lrx, ly - lry, (rx_ + rrx) - (lx - lrx), a["dome"] - (ly - lry)
    g = (np.arange(_GRID, dtype=np.float32) + 0.5) / _GRID
    u, v = np.meshgrid(g, g)
    m = np.abs(DRAWERS[name](u, v, a, p)) > 0.015  # ~4 grey levels
    if not m.any():
        return 0.0, 0.0, 0.0, 0.0
    ys, xs = np.nonzero(m)
    return (
        xs.min() / _GRID,
        ys.min() / _GRID,
        (xs.max() + 1 - xs.min()) / _GRID,
        (ys.max() + 1 - ys.min()) / _GRID,
    )


def sample_case(seed: int, index: int, prevalence: float = 0.08) -> PhantomCase:
    """Sample case ``index`` of the set with ``seed``; each finding present with ``prevalence``."""
    rng = np.random.default_rng([seed, index])
    a = _sample_anatomy(rng)
    present = [f for f in FINDINGS if rng.random() < prevalence]
    findings = {f: _sample_params(f, rng, a) for f in present}
    if "Cardiomegaly" in findings:
        a["heart"][2] *= rng.uniform(1.4, 1.55)
        a["heart"][3] *= 1.15
    if "Emphysema" in findings:
        a["dome"] += 0.04
    boxes = {f: _mask_box(f, a, p) for f, p in findings.items()}
    return PhantomCase(a, findings, boxes)


def render_case(case: PhantomCase, size: int) -> np.ndarray:
    """Draw a case as (size, size) uint8."""
    a = case.anatomy
    g = (np.arange(size, dtype=np.float32) + 0.5) / size
    u, v = np.meshgrid(g, g)
    body = _ellipse(u, v, 0.5, 0.58, 0.46, 0.56, 0.05)
    img = 0.04 + a["body"] * body
    trng = np.random.default_rng(a["texture_seed"])
    lungs = np.maximum(_lung_mask(u, v, a, 0), _lung_mask(u, v, a, 1))
    markings = a["markings"] * (0.6 + 0.4 * _smooth_noise(trng, 12, u, v)) * (1 - np.abs(u - 0.5) * 1.6)
    ribs = 0.06 * (np.sin((v + 0.25 * (u - 0.5) ** 2) * 55 + a["rib_phase"] * 6.28) > 0.6)
    img = img * (1 - lungs) + lungs * (a["lung_level"] + markings + ribs)
    hx, hy, hrx, hry = a["heart"]
    heart = _ellipse(u, v, hx, hy, hrx, hry, 0.1)
    spine = np.clip(1 - np.abs(u - 0.5) / 0.04, 0, 1) * (v > 0.1)
    img = np.maximum(img, 0.6 * np.maximum(heart, spine))
    for name, p in case.findings.items():
        img = img + DRAWERS[name](u, v, a, p)
    # mottle at a fixed anatomical scale plus faint grain: like a downsampled radiograph, not
    # per-pixel white noise (which resampling augmentations would visibly smooth away)
    img = (
        img
        + 0.02 * _smooth_noise(trng, 24, u, v)
        + 0.006 * trng.standard_normal(img.shape).astype(np.float32)
    )
    return np.clip(img * 255, 0, 255).astype(np.uint8)


class PhantomDataset(XRayDataset):
    """``n`` seeded phantom cases at ``size`` px with 15 labels and a box per finding.

    ``images_per_patient`` groups consecutive cases under one patient ID (as NIH follow-ups are),
    so patient-grouped splitting is exercised.
    """

    source = "phantom"

    def __init__(
        self,
        n: int = 512,
        size: int = 64,
        seed: int = 0,
        prevalence: float = 0.08,
        images_per_patient: int = 1,
    ) -> None:
        if n <= 0 or size < 16:
            raise ValueError(f"phantoms need n > 0 and size >= 16, got n={n}, size={size}")
        self.size, self.seed, self.prevalence = size, seed, prevalence
        self.cases = [sample_case(seed, i, prevalence) for i in range(n)]
        y = np.zeros((n, len(LABELS)), dtype=np.float32)
        rows = []
        for i, c in enumerate(self.cases):
            for f, (bx, by, bw, bh) in c.boxes.items():
                y[i, LABELS.index(f)] = 1.0
                rows.append((f"phantom_{i:06d}", f, bx * size, by * size, bw * size, bh * size, size, size))
            y[i, -1] = float(not c.findings)
        rng = np.random.default_rng([seed, n, 7])
        meta = standard_meta(
            [f"phantom_{i:06d}" for i in range(n)],
            [f"p{i // max(1, images_per_patient):06d}" for i in range(n)],
            y,
            LABELS,
            age=rng.integers(18, 90, n).astype(float),
            sex=rng.choice(["M", "F"], n),
            view=rng.choice(["PA", "AP"], n, p=[0.65, 0.35]),
        )
        boxes = pd.DataFrame(rows, columns=["image_id", "label", "x", "y", "w", "h", "ref_w", "ref_h"])
        super().__init__(meta, LABELS, task="multilabel", boxes=boxes)

    def load_image(self, i: int) -> np.ndarray:
        return render_case(self.cases[i], self.size)

    def fingerprint(self) -> str:
        return f"phantom-v{PHANTOM_VERSION}-{len(self)}-{self.size}-{self.seed}-{self.prevalence}"


def from_config(cfg) -> PhantomDataset:
    """``data.source: phantom`` (the table: ``cxrkit.config.SOURCES``)."""
    return PhantomDataset(n=cfg.n, size=cfg.size, seed=cfg.seed, images_per_patient=cfg.images_per_patient)
