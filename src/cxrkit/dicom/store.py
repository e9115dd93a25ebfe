"""The node's durable worklist: every received instance, its result or skip reason, and the delivery
state of each result object, in one SQLite file in the node's state folder.

A row is written (and the received file fsynced) before the C-STORE is acknowledged, so a crash never
loses an instance: on restart the node finishes every row still ``received`` and every result still
``pending``. A study's priority is the highest urgency of its instances and is never lowered.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

DB_NAME = "worklist.sqlite"
# urgency of an instance's outcome (the order of ``cxr triage``: what must be read manually first)
URGENCY = {"not assessable": 4, "out of distribution": 3, "abnormal": 2, "normal": 1, "not applicable": 0}
SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY, path TEXT NOT NULL, calling_ae TEXT, received_at REAL NOT NULL,
    state TEXT NOT NULL,                     -- received | done
    study_uid TEXT, patient_id TEXT, accession TEXT, modality TEXT, view TEXT,
    outcome TEXT,                            -- a key of URGENCY
    score REAL, ood_score REAL, top_finding TEXT, reason TEXT, probabilities TEXT, processed_at REAL
);
CREATE TABLE IF NOT EXISTS studies (study_uid TEXT PRIMARY KEY, priority INTEGER NOT NULL, updated_at REAL);
CREATE TABLE IF NOT EXISTS outbox (
    uid TEXT PRIMARY KEY, sop_uid TEXT NOT NULL, kind TEXT NOT NULL, path TEXT NOT NULL,
    state TEXT NOT NULL,                     -- pending | delivered
    attempts INTEGER NOT NULL DEFAULT 0, next_try REAL NOT NULL, last_error TEXT,
    created_at REAL NOT NULL, delivered_at REAL
);
CREATE TABLE IF NOT EXISTS pulled (study_uid TEXT PRIMARY KEY, requested_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS instances_state ON instances(state);
CREATE INDEX IF NOT EXISTS outbox_state ON outbox(state, next_try);
"""
MAX_BACKOFF_S = 300.0


def backoff(attempts: int) -> float:
    """Seconds before the next delivery try after ``attempts`` failures: 2, 4, 8 ... capped at 5 min."""
    return float(min(MAX_BACKOFF_S, 2.0 ** max(1, attempts)))


class Store:
    """The worklist database; safe to share between the node's threads (one connection, one lock)."""

    def __init__(self, state_dir: str | Path, readonly: bool = False) -> None:
        self.dir = Path(state_dir)
        path = self.dir / DB_NAME
        if readonly:
            if not path.is_file():
                raise FileNotFoundError(f"{self.dir}: no {DB_NAME} here (is it a node's --state folder?)")
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")  # a committed row survives a power cut
            self.db.executescript(SCHEMA)
        self.db.row_factory = sqlite3.Row
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            self.db.close()

    def _tx(self, statements: list[tuple[str, tuple]]) -> None:
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for sql, args in statements:
                    self.db.execute(sql, args)
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def _rows(self, sql: str, args: tuple = ()) -> list[dict]:
        with self.lock:
            return [dict(r) for r in self.db.execute(sql, args).fetchall()]

    def add_received(self, sop_uid: str, path: str, calling_ae: str) -> None:
        """Record an instance on disk (a re-sent one is processed again; its study keeps its priority)."""
        self._tx(
            [
                (
                    "INSERT INTO instances (sop_uid, path, calling_ae, received_at, state) "
                    "VALUES (?, ?, ?, ?, 'received') ON CONFLICT(sop_uid) DO UPDATE SET path=excluded.path, "
                    "calling_ae=excluded.calling_ae, received_at=excluded.received_at, state='received'",
                    (sop_uid, path, calling_ae, time.time()),
                )
            ]
        )

    def known_paths(self) -> set[str]:
        return {r["path"] for r in self._rows("SELECT path FROM instances")}

    def to_process(self, limit: int) -> list[dict]:
        """Instances received and not yet finished, oldest first."""
        return self._rows(
            "SELECT * FROM instances WHERE state='received' ORDER BY received_at LIMIT ?", (int(limit),)
        )

    def is_received(self, sop_uid: str) -> bool:
        """Still waiting to be finished."""
        return bool(self._rows("SELECT 1 FROM instances WHERE sop_uid=? AND state='received'", (sop_uid,)))

    def finish(self, sop_uid: str, facts: dict, results: list[tuple[str, str, str]]) -> None:
        """Store an instance's outcome and queue its result objects ((uid, kind, path) each), at once."""
        now = time.time()
        probs = facts.get("probabilities")
        statements = [
            (
                "UPDATE instances SET state='done', study_uid=?, patient_id=?, accession=?, modality=?, "
                "view=?, outcome=?, score=?, ood_score=?, top_finding=?, reason=?, probabilities=?, "
                "processed_at=? WHERE sop_uid=?",
                (
                    facts.get("study_uid"),
                    facts.get("patient_id"),
                    facts.get("accession"),
                    facts.get("modality"),
                    facts.get("view"),
                    facts["outcome"],
                    facts.get("score"),
                    facts.get("ood_score"),
                    facts.get("top_finding", ""),
                    facts.get("reason", ""),
                    json.dumps(probs) if probs is not None else None,
                    now,
                    sop_uid,
                ),
            )
        ]
        if facts.get("study_uid"):  # the study's priority: only ever raised
            statements.append(
                (
                    "INSERT INTO studies (study_uid, priority, updated_at) VALUES (?, ?, ?) ON CONFLICT("
                    "study_uid) DO UPDATE SET priority=MAX(priority, excluded.priority), updated_at=?",
                    (facts["study_uid"], URGENCY[facts["outcome"]], now, now),
                )
            )
        statements += [
            (
                "INSERT OR REPLACE INTO outbox (uid, sop_uid, kind, path, state, attempts, next_try, "
                "created_at) VALUES (?, ?, ?, ?, 'pending', 0, 0, ?)",
                (uid, sop_uid, kind, path, now),
            )
            for uid, kind, path in results
        ]
        self._tx(statements)

    def due(self, now: float | None = None, limit: int = 64) -> list[dict]:
        """Pending result objects whose next try is due."""
        return self._rows(
            "SELECT * FROM outbox WHERE state='pending' AND next_try <= ? ORDER BY created_at LIMIT ?",
            (time.time() if now is None else now, int(limit)),
        )

    def pending_paths(self) -> set[str]:
        return {r["path"] for r in self._rows("SELECT path FROM outbox WHERE state='pending'")}

    def delivered(self, uid: str) -> None:
        self._tx([("UPDATE outbox SET state='delivered', delivered_at=? WHERE uid=?", (time.time(), uid))])

    def failed(self, uid: str, error: str) -> float:
        """Record a failed delivery; returns the seconds until the next try."""
        row = self._rows("SELECT attempts FROM outbox WHERE uid=?", (uid,))
        attempts = (row[0]["attempts"] if row else 0) + 1
        wait = backoff(attempts)
        self._tx(
            [
                (
                    "UPDATE outbox SET attempts=?, next_try=?, last_error=? WHERE uid=?",
                    (attempts, time.time() + wait, error[:500], uid),
                )
            ]
        )
        return wait

    def retry_now(self) -> None:
        """Make every pending result due (after a restart: the destination may be back)."""
        self._tx([("UPDATE outbox SET next_try=0 WHERE state='pending'", ())])

    def was_pulled(self, study_uid: str) -> bool:
        return bool(self._rows("SELECT 1 FROM pulled WHERE study_uid=?", (study_uid,)))

    def mark_pulled(self, study_uid: str) -> None:
        self._tx([("INSERT OR IGNORE INTO pulled VALUES (?, ?)", (study_uid, time.time()))])

    def worklist(self) -> list[dict]:
        """Every instance with its study's priority and its results' delivery, most urgent first."""
        return self._rows(
            """
            SELECT i.*, COALESCE(s.priority, -1) AS study_priority,
                   (SELECT COUNT(*) FROM outbox o WHERE o.sop_uid = i.sop_uid) AS results,
                   (SELECT COUNT(*) FROM outbox o WHERE o.sop_uid = i.sop_uid AND o.state = 'delivered')
                       AS delivered
            FROM instances i LEFT JOIN studies s ON s.study_uid = i.study_uid
            ORDER BY i.state = 'done', study_priority DESC, i.study_uid,
                     COALESCE(i.score, -1) DESC, i.received_at
            """
        )

    def counts(self) -> dict:
        """Instances by state and outcome, results by delivery state (for logs and tests)."""
        out: dict = {}
        for r in self._rows("SELECT state, outcome, COUNT(*) AS n FROM instances GROUP BY state, outcome"):
            out[f"{r['state']}:{r['outcome']}" if r["outcome"] else r["state"]] = r["n"]
        for r in self._rows("SELECT state, COUNT(*) AS n FROM outbox GROUP BY state"):
            out[f"results {r['state']}"] = r["n"]
        return out
