"""The readers' feedback store: what the service answered for a study, and what radiologists said of it.

One SQLite file (stdlib ``sqlite3``, WAL journal, a connection per call, so the service's threads
may write at once). A study is known only by the sha256 of its uploaded bytes: the store never holds
a file name, a patient name or any DICOM header field, only the hash, the model's numbers and labels,
the kept image's path (named by the service, when ``--keep-images`` is set) and the readers' verdicts.
Feedback rows are never overwritten: a reader who changes their mind adds a row, and exports and
reports use the latest row per (study, reader) (``latest_feedback``). A reader's free-text comment
may name a patient: it stays in this file, and no export or report shows it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import sqlite3
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SCHEMA = "cxrkit-feedback"
VERSION = 2  # 2: predictions.patient (a salted hash of the DICOM PatientID)
TRIAGE_VERDICTS = ("agree", "disagree")  # of the model's triage flag; None: no verdict
FINDING_VALUES = ("present", "absent", "unsure")
MAX_COMMENT = 2000
MAX_READER = 200
_HASH = re.compile(r"[0-9a-f]{64}")

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS predictions (
    study TEXT NOT NULL, model_digest TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL,
    time TEXT NOT NULL, probabilities TEXT NOT NULL, thresholds TEXT NOT NULL,
    flag TEXT NOT NULL, score REAL, threshold REAL, image TEXT, patient TEXT,
    PRIMARY KEY (study, model_digest)
);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, study TEXT NOT NULL, time TEXT NOT NULL, reader TEXT,
    triage TEXT, findings TEXT NOT NULL, comment TEXT NOT NULL,
    model_digest TEXT NOT NULL, model_version TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_study ON feedback (study);
"""


class UnknownStudyError(ValueError):
    """Feedback on a study with no recorded prediction (the service may answer 404 for it)."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def check_study(study: object) -> str:
    """``study`` as lower-case sha256 hex, or a ValueError: no file name or other text passes as an id."""
    text = str(study).strip().lower() if isinstance(study, str) else ""
    if not _HASH.fullmatch(text):
        raise ValueError(f"study {str(study)[:20]!r}: expected the sha256 of the image (64 hex digits)")
    return text


def _number(value: Any, what: str) -> float | None:
    """A finite float, None for None or a non-finite number; a ValueError for anything else."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} {str(value)[:40]!r}: expected a number") from None
    return number if math.isfinite(number) else None


class FeedbackStore:
    """The feedback database at ``path`` (see the module docstring); safe to share between threads."""

    def __init__(self, path: str | Path, create: bool = True) -> None:
        """Open the store (``create``: make it when missing); a ValueError names a file that is not one."""
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"{self.path}: is a folder; expected a feedback database file")
        if not self.path.exists():
            if not create:
                raise FileNotFoundError(f"{self.path}: no such feedback database")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with closing(self._connect()) as con, con:
                found = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                if found and "meta" not in found:
                    raise ValueError(
                        f"{self.path}: a SQLite database, but not a cxrkit feedback store (tables: "
                        f"{', '.join(sorted(found))})"
                    )
                con.execute("PRAGMA journal_mode = WAL")
                con.executescript(_TABLES)
                con.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema', ?), ('version', ?), ('salt', ?)",
                    (SCHEMA, VERSION, secrets.token_hex(16)),
                )
                columns = {r[1] for r in con.execute("PRAGMA table_info(predictions)")}
                if "patient" not in columns:  # a version-1 store: the column, then the version
                    con.execute("ALTER TABLE predictions ADD COLUMN patient TEXT")
                meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
                if int(meta.get("version", 0)) < VERSION:
                    con.execute("UPDATE meta SET value = ? WHERE key = 'version'", (VERSION,))
                    meta["version"] = str(VERSION)
        except sqlite3.DatabaseError as err:
            raise ValueError(f"{self.path}: not a feedback database ({err})") from None
        if meta.get("schema") != SCHEMA:
            raise ValueError(f"{self.path}: not a cxrkit feedback store (schema {meta.get('schema')!r})")
        self._salt = meta.get("salt", "")
        if int(meta.get("version", 0)) > VERSION:
            raise ValueError(
                f"{self.path}: feedback store version {meta['version']} is newer than this cxrkit reads "
                f"({VERSION}); upgrade cxrkit"
            )

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30.0)
        con.row_factory = sqlite3.Row
        return con

    def patient_key(self, patient_id: str | None) -> str | None:
        """A salted hash of a DICOM PatientID (this store's own salt): studies of one patient stay in
        one part of a split, and the ID itself is never stored. None for a missing or blank ID."""
        text = (patient_id or "").strip()
        if not text:
            return None
        return hashlib.sha256(f"{self._salt}:{text}".encode()).hexdigest()[:32]

    def record_prediction(
        self,
        study: str,
        model: dict,
        answer: dict,
        image: str | None = None,
        patient_id: str | None = None,
    ) -> None:
        """Store the service's answer for ``study`` (its probabilities, thresholds and triage only).

        ``model``: ``{"name", "digest", "version"}``; ``image``: the kept image's path, or None;
        ``patient_id``: the DICOM PatientID, stored only as ``patient_key``. The same study and model
        digest again replaces the answer but keeps a kept image and patient key it had.
        """
        study = check_study(study)
        try:
            name, digest, version = (str(model[k]) for k in ("name", "digest", "version"))
            probs = {str(k): _number(v, f"probability of {k}") for k, v in answer["probabilities"].items()}
            thresholds = {str(k): _number(v, f"threshold of {k}") for k, v in answer["thresholds"].items()}
            triage = answer["triage"]
            flag = str(triage["flag"])
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"study {study[:12]}: not a /v1/predict answer and model ({err!r})") from None
        row = (
            study,
            digest,
            name,
            version,
            _now(),
            json.dumps(probs),
            json.dumps({k: thresholds.get(k) for k in probs}),
            flag,
            _number(triage.get("score"), "triage score"),
            _number(triage.get("threshold"), "triage threshold"),
            None if image is None else str(image),
            self.patient_key(patient_id),
        )
        with closing(self._connect()) as con, con:
            con.execute(
                "INSERT INTO predictions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (study, model_digest) DO UPDATE SET model_name = excluded.model_name, "
                "model_version = excluded.model_version, time = excluded.time, "
                "probabilities = excluded.probabilities, thresholds = excluded.thresholds, "
                "flag = excluded.flag, score = excluded.score, threshold = excluded.threshold, "
                "image = COALESCE(excluded.image, predictions.image), "
                "patient = COALESCE(excluded.patient, predictions.patient)",
                row,
            )

    def add_feedback(
        self,
        study: str,
        triage: str | None,
        findings: dict[str, str],
        comment: str = "",
        reader: str | None = None,
    ) -> dict:
        """Store one reader's verdict on a recorded study; return the stored row.

        ``triage``: agree / disagree with the model's flag, or None; ``findings``: label -> present,
        absent or unsure, labels of the study's latest prediction. A ValueError says what is wrong
        (``UnknownStudyError`` when the study has no recorded prediction).
        """
        study = check_study(study)
        if triage is not None and triage not in TRIAGE_VERDICTS:
            raise ValueError(f"triage {str(triage)[:40]!r}: expected agree, disagree or none")
        if not isinstance(findings, dict):
            raise ValueError(f"findings: expected a mapping of label to {', '.join(FINDING_VALUES)}")
        if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
            raise ValueError(f"comment: expected text of at most {MAX_COMMENT} characters")
        if reader is not None and (not isinstance(reader, str) or len(reader) > MAX_READER):
            raise ValueError(f"reader: expected a name of at most {MAX_READER} characters")
        reader = (reader.strip() or None) if reader is not None else None  # blank: unnamed
        if triage is None and not findings and not comment.strip():
            raise ValueError("empty feedback: give a triage verdict, a finding or a comment")
        with closing(self._connect()) as con, con:
            pred = con.execute(
                "SELECT probabilities, model_digest, model_version FROM predictions WHERE study = ? "
                "ORDER BY time DESC, rowid DESC LIMIT 1",
                (study,),
            ).fetchone()
            if pred is None:
                raise UnknownStudyError(
                    f"no prediction recorded for study {study[:12]}: feedback needs the model's answer "
                    "first (POST the image to /v1/predict with --feedback set)"
                )
            labels = list(json.loads(pred["probabilities"]))
            for label, value in findings.items():
                if label not in labels:
                    raise ValueError(
                        f"finding {str(label)[:60]!r}: not a label of the model; expected one of "
                        f"{', '.join(labels)}"
                    )
                if value not in FINDING_VALUES:
                    raise ValueError(
                        f"finding {label}: {str(value)[:40]!r}; expected one of {', '.join(FINDING_VALUES)}"
                    )
            row = {
                "study": study,
                "time": _now(),
                "reader": reader,
                "triage": triage,
                "findings": dict(findings),
                "comment": comment,
                "model_digest": pred["model_digest"],
                "model_version": pred["model_version"],
            }
            cur = con.execute(
                "INSERT INTO feedback (study, time, reader, triage, findings, comment, model_digest, "
                "model_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    study,
                    row["time"],
                    reader,
                    triage,
                    json.dumps(findings),
                    comment,
                    row["model_digest"],
                    row["model_version"],
                ),
            )
        return {"id": cur.lastrowid, **row}

    def feedback(self, limit: int | None = None) -> list[dict]:
        """Every feedback row, newest first (at most ``limit``), as ``add_feedback`` returns them."""
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit {limit!r}: expected a count >= 0")
        sql = "SELECT * FROM feedback ORDER BY id DESC" + (" LIMIT ?" if limit is not None else "")
        with closing(self._connect()) as con:
            rows = con.execute(sql, () if limit is None else (limit,)).fetchall()
        return [{**dict(r), "findings": json.loads(r["findings"])} for r in rows]

    def predictions(self) -> list[dict]:
        """Every recorded prediction, oldest first: study, model, probabilities, thresholds, triage, image."""
        with closing(self._connect()) as con:
            rows = con.execute("SELECT * FROM predictions ORDER BY time, rowid").fetchall()
        return [
            {
                "study": r["study"],
                "model": {
                    "name": r["model_name"],
                    "digest": r["model_digest"],
                    "version": r["model_version"],
                },
                "time": r["time"],
                "probabilities": json.loads(r["probabilities"]),
                "thresholds": json.loads(r["thresholds"]),
                "flag": r["flag"],
                "score": r["score"],
                "threshold": r["threshold"],
                "image": r["image"],
                "patient": r["patient"],
            }
            for r in rows
        ]


def latest_feedback(rows: list[dict]) -> list[dict]:
    """The latest row per (study, reader) of ``FeedbackStore.feedback()`` rows, newest first.

    Unnamed feedback counts as one anonymous reader per study: a later unnamed row replaces an earlier.
    """
    seen, out = set(), []
    for row in sorted(rows, key=lambda r: r["id"], reverse=True):
        key = (row["study"], row["reader"])
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out
