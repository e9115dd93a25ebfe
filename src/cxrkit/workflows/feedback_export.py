"""Readers' feedback -> a labels table ``cxr train`` reads (``data.source: table``) to fine-tune a run.

Each reader's latest verdict on a study (``feedback.latest_feedback``) becomes labels by these rules,
then the readers of one study are combined (``export_labels``). ``reader_labels`` and ``combine_readers``
are the rules; ``export_labels`` documents them in full.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cxrkit.labels import NO_FINDING
from cxrkit.outputs import make_out_dir, write_csv
from cxrkit.workflows.feedback import FeedbackStore, latest_feedback

NORMAL, ABNORMAL = "normal", "abnormal"  # the triage flags a verdict can confirm or reverse (flag_names)
VALUES = {"present": 1.0, "absent": 0.0}  # "unsure" and unmarked: unknown
NOT_KEPT = "not kept: start the service with --keep-images DIR"
NO_LABEL = "no label in the feedback (comments only, unsure, or no normal/abnormal verdict)"


def reader_verdict(triage: str | None, flag: str) -> str | None:
    """What a reader says the study is: ``normal``, ``abnormal``, or None (no verdict, or a flag such as
    "out of distribution" that says neither, so agreeing with it says neither too)."""
    if triage is None or flag not in (NORMAL, ABNORMAL):
        return None
    return flag if triage == "agree" else (NORMAL if flag == ABNORMAL else ABNORMAL)


def reader_labels(
    findings: dict[str, str], verdict: str | None, labels: list[str]
) -> tuple[dict[str, float | None], bool]:
    """One reader's labels over ``labels`` (1, 0 or None: unknown) and whether they contradict themselves.

    present -> 1, absent -> 0, unsure or unmarked -> None. Abnormal (the verdict, a finding marked
    present, or No Finding marked absent) -> No Finding 0. Normal (the verdict, or No Finding marked
    present) -> No Finding 1 and every finding left unmarked 0 ("unsure" stays unknown). Both at once is
    a conflict: the marks are kept, No Finding is unknown and nothing is inferred.
    """
    out = {lab: VALUES.get(findings.get(lab, "")) for lab in labels}
    marked_nf = out.get(NO_FINDING)
    present = any(v == 1.0 for lab, v in out.items() if lab != NO_FINDING)
    normal = verdict == NORMAL or marked_nf == 1.0
    abnormal = verdict == ABNORMAL or present or marked_nf == 0.0
    if normal and abnormal:
        if NO_FINDING in out:
            out[NO_FINDING] = None
        return out, True
    if abnormal and NO_FINDING in out:
        out[NO_FINDING] = 0.0
    if normal:
        for lab in labels:
            if lab == NO_FINDING:
                out[lab] = 1.0
            elif lab not in findings:
                out[lab] = 0.0
    return out, False


def combine_readers(per_reader: list[dict[str, float | None]], labels: list[str]) -> tuple[dict, int]:
    """Per label: the value every reader who gave one agrees on, else None; and how many labels disagreed."""
    out, disagreed = {}, 0
    for lab in labels:
        given = {r[lab] for r in per_reader if r.get(lab) is not None}
        out[lab] = given.pop() if len(given) == 1 else None
        disagreed += len(given) > 1
    return out, disagreed


@dataclass(frozen=True)
class ExportSummary:
    """What ``export_labels`` wrote and what it left out, and why."""

    path: Path
    rows: int  # studies written
    labels: tuple[str, ...]  # label columns, the model's label names
    studies: int  # studies with feedback
    readers: int  # distinct readers (the unnamed counted as one)
    not_kept: int  # studies skipped: no kept image (NOT_KEPT)
    no_labels: int  # studies skipped: their feedback gave no label (NO_LABEL)
    conflicts: int  # verdicts contradicting the reader's own findings (No Finding left unknown)
    disagreements: int  # label cells left unknown because readers of one study disagreed
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> studies
    holdout: Path | None = None  # the held-out table, when a share was held out
    holdout_rows: int = 0

    def lines(self) -> list[str]:
        """The summary as lines for a terminal."""
        out = [f"wrote {self.path}: {self.rows:,} studies, {len(self.labels)} label columns"]
        if self.holdout is not None:
            out.append(f"wrote {self.holdout}: {self.holdout_rows:,} held-out studies (never train on them)")
        out += [f"skipped {n:,} of {self.studies:,} studies: {why}" for why, n in self.skipped.items() if n]
        if self.conflicts:
            out.append(
                f"{self.conflicts:,} verdicts contradict the reader's own findings (a finding present on a "
                "study called normal): their findings kept, No Finding left unknown"
            )
        if self.disagreements:
            out.append(f"{self.disagreements:,} labels left unknown because the study's readers disagreed")
        return out


def _table_path(image: str, folder: Path) -> str:
    """The kept image's path as the table gives it: relative to the CSV's folder when inside it."""
    image_path = Path(image).resolve()
    try:
        return image_path.relative_to(folder.resolve()).as_posix()
    except ValueError:
        return str(image_path)


def export_labels(
    store: FeedbackStore, out_csv: str | Path, holdout: float = 0.0, seed: int = 0
) -> ExportSummary:
    """Write the readers' labels as a ``data.source: table`` CSV; return what was written and skipped.

    Rules:

    - one row per study with feedback whose kept image exists (the service's ``--keep-images``); the
      others are counted and skipped, as are studies whose feedback gives no label at all;
    - ``path``: the kept image, relative to the CSV's folder when inside it, else absolute;
      ``patient_id``: the salted hash of the DICOM PatientID the service recorded (a patient's films
      stay in one part of a patient-wise split), else the study's sha256 (a PNG/JPEG upload); no
      file names, reader names or comments;
    - one column per label of the model that made the study's latest prediction (union over studies,
      in the models' order): 1 present, 0 absent, empty unknown;
    - per reader, their latest row: present -> 1, absent -> 0, unsure / unmarked -> empty; a reader
      who calls the study abnormal (agrees with an "abnormal" flag, disagrees with a "normal" one, or
      marks a finding present) gives No Finding 0; one who calls it normal (agrees with "normal",
      disagrees with "abnormal") gives No Finding 1 and 0 for every finding not marked (unsure stays
      empty); a finding present on a study called normal is a conflict: findings kept, No Finding
      empty, counted. Other flags ("out of distribution") say neither normal nor abnormal;
    - several readers: a label is 1 or 0 where every reader who gave it agrees, else empty (counted).

    ``holdout``: the share of patients written instead to ``NAME-holdout.csv`` beside it (drawn with
    ``seed``), never trained on, for ``cxr validate`` of the parent and the fine-tuned run alike.
    """
    out = Path(out_csv)
    preds = store.predictions()  # oldest first: later rows win below
    latest_pred, image_of, by_key = {}, {}, {}
    for p in preds:
        latest_pred[p["study"]] = p
        by_key[(p["study"], p["model"]["digest"])] = p
        if p["image"] and Path(p["image"]).is_file():
            image_of[p["study"]] = p["image"]
    rows = latest_feedback(store.feedback())
    studies: dict[str, list[dict]] = {}
    for row in reversed(rows):  # oldest first: studies in the order readers first reached them
        studies.setdefault(row["study"], []).append(row)
    columns: list[str] = []
    records, skipped = [], {NOT_KEPT: 0, NO_LABEL: 0}
    conflicts = disagreements = 0
    for study, feedback in studies.items():
        if study not in image_of:
            skipped[NOT_KEPT] += 1
            continue
        labels = list(latest_pred[study]["probabilities"])
        per_reader = []
        for row in feedback:
            flag = by_key.get((study, row["model_digest"]), latest_pred[study])["flag"]
            values, conflict = reader_labels(row["findings"], reader_verdict(row["triage"], flag), labels)
            per_reader.append(values)
            conflicts += conflict
        combined, disagreed = combine_readers(per_reader, labels)
        disagreements += disagreed
        if all(v is None for v in combined.values()):
            skipped[NO_LABEL] += 1
            continue
        columns += [lab for lab in labels if lab not in columns]
        patient = latest_pred[study].get("patient") or study
        records.append({"path": _table_path(image_of[study], out.parent), "patient_id": patient, **combined})
    frame = pd.DataFrame(records, columns=["path", "patient_id", *columns])
    for lab in columns:
        frame[lab] = frame[lab].map({1.0: "1", 0.0: "0"}).fillna("")
    make_out_dir(out.parent)
    held = None
    if holdout > 0:
        if not 0 < holdout < 1:
            raise ValueError(f"holdout {holdout}: expected a share of patients between 0 and 1")
        patients = sorted(set(frame["patient_id"]))
        rng = np.random.default_rng(seed)
        chosen = set(rng.choice(patients, size=round(holdout * len(patients)), replace=False).tolist())
        mask = frame["patient_id"].isin(chosen)
        held = out.with_name(f"{out.stem}-holdout{out.suffix or '.csv'}")
        write_csv(held, frame[mask], index=False)
        frame = frame[~mask]
    write_csv(out, frame, index=False)
    return ExportSummary(
        path=out,
        rows=len(frame),
        holdout=held,
        holdout_rows=0 if held is None else len(records) - len(frame),
        labels=tuple(columns),
        studies=len(studies),
        readers=len({r["reader"] for r in rows}),
        not_kept=skipped[NOT_KEPT],
        no_labels=skipped[NO_LABEL],
        conflicts=conflicts,
        disagreements=disagreements,
        skipped=skipped,
    )
