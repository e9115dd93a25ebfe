"""What a reader of one prediction must know about the model behind it: warnings drawn from model.json.

Every figure comes from the run's files; a run packaged before these facts were stored says so
instead of guessing.
"""

from __future__ import annotations

from cxrkit.run.package import ModelPackage

WEAK_AUC = 0.6  # below this macro AUC (without an interval) the model barely ranks studies


def model_warnings(pkg: ModelPackage) -> list[str]:
    """Banners for a viewer or model card: weak model, temperatures at a bound, synthetic training
    data, a small or degenerate validation, and the warnings training stored."""
    v, out = pkg.validation or {}, []
    auc, ci = v.get("macro_auc"), v.get("macro_auc_ci")
    if isinstance(ci, list) and len(ci) == 2 and ci[0] is not None and ci[0] <= 0.5:
        out.append(
            f"weak model: validation macro AUC {auc:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f}) includes 0.5, "
            "i.e. chance"
        )
    elif isinstance(auc, (int, float)) and auc < WEAK_AUC:
        out.append(f"weak model: validation macro AUC {auc:.3f}")
    bound = v.get("temperature_at_bound") or []
    if bound:
        out.append(
            "calibration stopped at a temperature bound for "
            + ", ".join(bound)
            + ": their probabilities are not calibrated (validation separates them perfectly or has too few)"
        )
    if (pkg.data or {}).get("synthetic"):
        out.append("trained on synthetic phantoms (cxr demo): its scores on real radiographs mean nothing")
    images = v.get("images")
    if isinstance(images, int) and images < 200:
        out.append(f"validated on {images} images only: every figure here is uncertain")
    if not v.get("reliability"):
        out.append(
            "this run stores no reliability data or intervals (packaged by an older cxrkit): "
            "`cxr package RUN` adds them (`cxr train --resume RUN` for a K-fold ensemble)"
        )
    out.extend(str(w) for w in v.get("warnings") or [])
    return out


def borderline_band(pkg: ModelPackage) -> tuple[float, float] | None:
    """The bootstrap interval of the triage threshold (scores inside it are "borderline"), or None."""
    band = (pkg.validation or {}).get("operating_point_ci")
    if not isinstance(band, list) or len(band) != 2:
        return None
    try:
        lo, hi = float(band[0]), float(band[1])
    except (TypeError, ValueError):
        return None
    return (lo, hi) if lo <= hi else None
