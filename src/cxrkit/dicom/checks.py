"""Which received instances the node scores: a frontal CR/DX radiograph with pixel data.

Everything else is recorded with its reason and never crashes the node. Two kinds of "not scored":
``not applicable`` (a CT, a lateral view, cxrkit's own result coming back: not this node's work) and
``not assessable`` (meant to be scored - a frontal radiograph - but it cannot be: read it manually,
top of the worklist, never silently normal).
"""

from __future__ import annotations

from dataclasses import dataclass

MODALITIES = ("CR", "DX")
FRONTAL_VIEWS = ("PA", "AP")
MANUFACTURER = "cxrkit"  # stamped on every result the node writes: how it recognises its own output
NOT_APPLICABLE, NOT_ASSESSABLE = "not applicable", "not assessable"


@dataclass(frozen=True)
class Screen:
    """Whether to score an instance; if not, ``status`` (NOT_APPLICABLE or NOT_ASSESSABLE) and why."""

    score: bool
    status: str = ""
    reason: str = ""


def _text(ds, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:  # a malformed element: treated as absent
        return ""
    return "" if value is None else str(value).strip().upper()


def screen(ds) -> Screen:
    """Header checks of a received dataset (pixel data is decoded later, by the one assessability
    rule; a body part other than chest is the OOD check's, so the study is flagged, not dropped)."""
    if _text(ds, "Manufacturer") == MANUFACTURER.upper():
        return Screen(False, NOT_APPLICABLE, "a cxrkit result (the node's own output), not a study")
    modality = _text(ds, "Modality")
    if modality not in MODALITIES:
        what = f"modality {modality}" if modality else "no Modality tag"
        return Screen(False, NOT_APPLICABLE, f"{what}: the node scores chest radiographs (CR/DX) only")
    view = _text(ds, "ViewPosition")
    if view and view not in FRONTAL_VIEWS:
        return Screen(
            False, NOT_APPLICABLE, f"view position {view}: the model reads frontal (PA/AP) views only"
        )
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        return Screen(False, NOT_ASSESSABLE, "no pixel data in the instance")
    return Screen(True)
