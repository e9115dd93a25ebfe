"""Hand-built service answers and study ids for the feedback store's tests (no HTTP service needed)."""

from __future__ import annotations

import hashlib

MODEL = {"name": "demo", "digest": "ab" * 32, "version": "0.1.0"}
LABELS = ("Effusion", "Nodule", "No Finding")
PATIENT = "SMITH^JOHN"  # a name that must never leave the store


def study_id(key: object) -> str:
    """The sha256 hex id of a study (as the service hashes the uploaded bytes)."""
    return hashlib.sha256(str(key).encode()).hexdigest()


def service_answer(
    probs: dict[str, float], flag: str, thresholds: dict[str, float] | float = 0.5, score: float = 0.7
) -> dict:
    """A /v1/predict answer as the service gives it, with a file name and header that must not be stored."""
    if not isinstance(thresholds, dict):
        thresholds = {lab: float(thresholds) for lab in probs}
    return {
        "filename": f"{PATIENT}.dcm",
        "image": {"width": 64, "height": 64},
        "probabilities": dict(probs),
        "thresholds": thresholds,
        "positive": [lab for lab, p in probs.items() if p >= thresholds[lab]],
        "top_findings": [],
        "triage": {"score": score, "flag": flag, "threshold": 0.5, "target_sensitivity": 0.95},
        "ood": {"in_distribution": flag != "out of distribution", "header": {"PatientName": PATIENT}},
    }
