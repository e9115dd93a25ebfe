"""``cxr worklist``: the node's worklist database as a table, most urgent first, without patient names."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from cxrkit.dicom.store import URGENCY, Store

NEEDS_READING = ("not assessable", "out of distribution", "abnormal")  # ``--flagged``
COLUMNS = [
    "rank",
    "received",
    "accession",
    "study_uid",
    "modality",
    "view",
    "outcome",
    "study_priority",
    "score",
    "top_finding",
    "reason",
    "results",
]


def worklist_frame(
    state_dir: str | Path, flagged: bool = False, show_patient_id: bool = False
) -> pd.DataFrame:
    """One row per received instance, most urgent study first (``store.Store.worklist``'s order).

    ``outcome``: received (not yet processed), not assessable, out of distribution, abnormal, normal or
    not applicable; ``study_priority``: the study's highest urgency so far (never lowered);
    ``results``: result objects delivered / built. Patient IDs only with ``show_patient_id``; names and
    birth dates are never stored.
    """
    store = Store(state_dir, readonly=True)
    try:
        rows = store.worklist()
    finally:
        store.close()
    names = {v: k for k, v in URGENCY.items()}
    frame = pd.DataFrame(
        {
            "received": [
                dt.datetime.fromtimestamp(r["received_at"]).strftime("%Y-%m-%d %H:%M:%S") for r in rows
            ],
            "accession": [r["accession"] or "" for r in rows],
            "study_uid": [r["study_uid"] or "" for r in rows],
            "modality": [r["modality"] or "" for r in rows],
            "view": [r["view"] or "" for r in rows],
            "outcome": [r["outcome"] if r["state"] == "done" else "received" for r in rows],
            "study_priority": [names.get(r["study_priority"], "") for r in rows],
            "score": [r["score"] for r in rows],
            "top_finding": [r["top_finding"] or "" for r in rows],
            "reason": [r["reason"] or "" for r in rows],
            "results": [f"{r['delivered']}/{r['results']} delivered" if r["results"] else "" for r in rows],
            "patient_id": [r["patient_id"] or "" for r in rows],
            "sop_uid": [r["sop_uid"] for r in rows],
        },
        columns=[c for c in COLUMNS if c != "rank"] + ["patient_id", "sop_uid"],
    )
    if flagged:
        frame = frame[frame["outcome"].isin(NEEDS_READING)]
    frame.insert(0, "rank", range(1, len(frame) + 1))
    if not show_patient_id:
        frame = frame.drop(columns="patient_id")
    return frame.reset_index(drop=True)
