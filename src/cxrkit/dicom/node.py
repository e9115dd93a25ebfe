"""``cxr dicom-node``: receive studies over DICOM, score them with a run, send SR + SC back.

Three threads around one worklist database (``store.Store``): the listener writes each received
instance to ``inbox/`` (fsynced) and records it *before* acknowledging the C-STORE; the processor
scores what is recorded but not finished, in batches, and queues the result objects in ``outbox/``;
the sender delivers them (C-STORE or STOW-RS) with back-off until the destination takes them. A
restart finishes whatever a crash left. Logs name instances by a digest, never by patient.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrkit.dicom.checks import NOT_APPLICABLE, NOT_ASSESSABLE, screen
from cxrkit.dicom.net import Peer, node_ae, send_files
from cxrkit.dicom.results import Algorithm, InstanceResult, build_sc, build_sr
from cxrkit.dicom.store import Store
from cxrkit.evaluate.triage import top_finding
from cxrkit.run.data import Log
from cxrkit.run.inputs import prepare_items
from cxrkit.run.model import RunModel

INBOX, OUTBOX = "inbox", "outbox"
SUCCESS, OUT_OF_RESOURCES = 0x0000, 0xA700


@dataclass(frozen=True)
class NodeConfig:
    """Where the node listens, where results go, and how it batches."""

    ae_title: str = "CXRKIT"
    host: str = "0.0.0.0"  # every interface; 127.0.0.1 for a node only this machine reaches
    port: int = 11112
    state: Path = Path("cxr-node")
    return_to: Peer | None = None
    return_to_dicomweb: str | None = None
    pull: Peer | None = None
    pull_interval_s: float = 30.0
    batch: int = 16
    secondary_capture: bool = True
    keep_received: bool = False  # keep inbox files after their results are queued (else deleted)


def short_id(uid: str) -> str:
    """A digest standing for an instance in logs (UIDs can embed dates and site numbers)."""
    return hashlib.sha256(uid.encode()).hexdigest()[:10]


def _fsync_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (temp file, fsync, rename, fsync folder)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dataset_bytes(ds) -> bytes:
    import io

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


class Node:
    """A running DICOM node for one run (``start``/``stop``, or ``serve_forever``)."""

    def __init__(self, run: RunModel, cfg: NodeConfig, log: Log = print) -> None:
        if cfg.return_to is None and cfg.return_to_dicomweb is None:
            raise ValueError(
                "give a destination for the results: --return-to AET@HOST:PORT or --return-to-dicomweb URL"
            )
        self.run, self.cfg, self.log = run, cfg, log
        self.state = Path(cfg.state)
        self.inbox, self.outbox = self.state / INBOX, self.state / OUTBOX
        for d in (self.inbox, self.outbox):
            d.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.state)
        self.rule, self.thresholds = run.package.display_thresholds()
        from cxrkit import __version__
        from cxrkit.run.monitor_log import monitor_id

        self.algorithm = Algorithm(run.package.model_name, __version__, monitor_id(run.path), run.path.name)
        self.stopping = threading.Event()
        self.work, self.deliver = threading.Event(), threading.Event()
        self.threads: list[threading.Thread] = []
        self.server = None
        self.torch_lock = threading.Lock()
        # a batch's instances decode in parallel (pydicom's decoders and numpy release the GIL)
        self.readers = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="cxr-node-read")

    # -- receiving ---------------------------------------------------------------------------------
    def on_store(self, event) -> int:
        """C-STORE: the instance on disk and in the worklist before the success status goes back."""
        try:
            sop = str(event.request.AffectedSOPInstanceUID or "")
            data = event.encoded_dataset(include_meta=True)
            if not sop:
                sop = "no-uid-" + hashlib.sha256(data).hexdigest()[:32]
            path = self.inbox / f"{hashlib.sha256(sop.encode()).hexdigest()[:40]}.dcm"
            _fsync_write(path, data)
            self.store.add_received(sop, str(path), str(event.assoc.requestor.ae_title).strip())
        except Exception as err:  # the sender keeps the instance and may retry: nothing is lost
            self.log(f"dicom-node: could not store a received instance ({type(err).__name__}: {err})")
            return OUT_OF_RESOURCES
        self.work.set()
        return SUCCESS

    # -- processing --------------------------------------------------------------------------------
    def process_pending(self) -> int:
        """Score every instance received and not yet finished; the number finished."""
        done = 0
        while not self.stopping.is_set():
            rows = self.store.to_process(self.cfg.batch)
            if not rows:
                return done
            self.process(rows)
            done += len(rows)
        return done

    def process(self, rows: list[dict]) -> None:
        """One batch: screen each header, score the frontal radiographs together, queue the results."""
        import pydicom

        candidates = []
        for row in rows:
            try:
                ds = pydicom.dcmread(row["path"], force=True, defer_size="256 KB")
                facts = self._facts(ds)
            except Exception as err:
                self._finish(
                    row, None, {"outcome": NOT_ASSESSABLE, "reason": f"not a readable DICOM file ({err})"}
                )
                continue
            verdict = screen(ds)
            if verdict.score:
                candidates.append((row, ds, facts))
            else:
                self._finish(row, ds, {**facts, "outcome": verdict.status, "reason": verdict.reason})
        if candidates:
            try:
                self._score(candidates)
            except Exception as err:  # a batch the model could not score: each read manually, saying why
                self.log(f"dicom-node: scoring failed ({type(err).__name__}: {err}); marked to read manually")
                for row, ds, facts in candidates:
                    if self.store.is_received(row["sop_uid"]):
                        reason = f"the model failed on this batch ({type(err).__name__})"
                        self._finish(row, ds, {**facts, "outcome": NOT_ASSESSABLE, "reason": reason})

    @staticmethod
    def _facts(ds) -> dict:
        def text(key: str) -> str:
            try:
                return str(ds.get(key, "") or "").strip()
            except Exception:
                return ""

        return {
            "study_uid": text("StudyInstanceUID") or None,
            "patient_id": text("PatientID"),
            "accession": text("AccessionNumber"),
            "modality": text("Modality").upper(),
            "view": text("ViewPosition").upper(),
        }

    def _score(self, candidates: list) -> None:
        items = [(row["sop_uid"], Path(row["path"])) for row, _, _ in candidates]
        prepared = prepare_items(items, self.run.spec, keep_originals=True, pool=self.readers)
        probs, ood = self.run.score_prepared(prepared)
        table = self.run.table(prepared, probs, ood=ood)
        where = {int(k): i for i, k in enumerate(prepared.ok)}
        for k, (row, ds, facts) in enumerate(candidates):
            line = table.iloc[k]
            flag = str(line["triage_flag"])
            if k not in where or flag == "not scored":
                reason = prepared.rows[k]["error"] or "the model gave no finite score"
                self._finish(row, ds, {**facts, "outcome": NOT_ASSESSABLE, "reason": reason})
                continue
            i = where[k]
            p = probs[i]
            inside = bool(ood.in_distribution[i]) if self.run.ood is not None else None
            reasons = [str(ood.reasons[i])] if inside is False and ood.reasons[i] else []
            result = self._result(
                p,
                flag,
                float(line["triage_score"]),
                in_distribution=inside,
                ood_score=float(ood.scores[i]) if self.run.ood is not None else None,
                reasons=reasons,
                top_finding=top_finding(p, self.run.labels),
            )
            sc_image = None
            if self.cfg.secondary_capture:
                sc_image = self._overlay(prepared.originals[i], prepared.images[i], result)
            outcome = {
                **facts,
                "outcome": flag,
                "score": result.score,
                "ood_score": result.ood_score,
                "top_finding": result.top_finding,
                "reason": "; ".join(reasons),
                "probabilities": {lab: float(v) for lab, v in zip(self.run.labels, p, strict=True)},
            }
            self._finish(row, ds, outcome, result, sc_image)

    def _result(self, probs: np.ndarray | None, flag: str, score: float | None, **more) -> InstanceResult:
        """What the SR says of one instance, with the run's thresholds and operating point."""
        point = self.run.package.operating_point
        return InstanceResult(
            labels=list(self.run.labels),
            probs=probs,
            thresholds=self.thresholds,
            threshold_rule=self.rule,
            flag=flag,
            score=score,
            threshold=point.threshold,
            target_sensitivity=point.target_sensitivity,
            **more,
        )

    def _overlay(self, image: np.ndarray, prepared: np.ndarray, result: InstanceResult) -> np.ndarray:
        from cxrkit.workflows.explain import overlay_of

        j = list(self.run.labels).index(result.top_finding)
        head = {
            "abnormal": "FLAGGED",
            "normal": "not flagged",
            "out of distribution": "OUT OF DISTRIBUTION - read manually",
        }[result.flag]
        caption = (
            f"cxrkit {head} | {result.top_finding} {result.probs[j]:.2f} | regions that most influenced "
            "this score, not a segmentation | research use only"
        )
        im = overlay_of(self.run, image, prepared, result.top_finding, caption, self.torch_lock)
        return np.asarray(im.convert("RGB"))

    def _finish(
        self, row: dict, ds, facts: dict, result: InstanceResult | None = None, sc_image=None
    ) -> None:
        """Write the result objects (if any), then record the outcome and queue them in one transaction."""
        objects: list[tuple[str, str, str]] = []
        if ds is not None and facts.get("study_uid") and facts["outcome"] != NOT_APPLICABLE:
            if result is None:  # not assessable: the SR says so, and why (no image to capture)
                result = self._result(None, NOT_ASSESSABLE, None, reasons=[facts.get("reason", "")])
            try:
                built = [("SR", build_sr(ds, result, self.algorithm))]
                if sc_image is not None:
                    built.append(("SC", build_sc(ds, sc_image)))
                for kind, obj in built:
                    path = self.outbox / f"{obj.SOPInstanceUID}.dcm"
                    _fsync_write(path, _dataset_bytes(obj))
                    objects.append((str(obj.SOPInstanceUID), kind, str(path)))
            except Exception as err:  # e.g. a source header highdicom refuses: recorded, nothing sent
                note = f"result objects not built ({type(err).__name__}: {str(err)[:200]})"
                facts = {**facts, "reason": "; ".join(x for x in (facts.get("reason"), note) if x)}
                self.log(f"dicom-node: {short_id(row['sop_uid'])}: {note}")
        self.store.finish(row["sop_uid"], facts, objects)
        if not self.cfg.keep_received:
            Path(row["path"]).unlink(missing_ok=True)
        self.log(
            f"dicom-node: {short_id(row['sop_uid'])}: {facts['outcome']}"
            + (f" (score {facts['score']:.3f})" if facts.get("score") is not None else "")
            + (f" - {facts['reason']}" if facts.get("reason") else "")
        )
        if objects:
            self.deliver.set()

    # -- delivering --------------------------------------------------------------------------------
    def deliver_due(self) -> int:
        """Send every due result; the number delivered (failures wait their back-off)."""
        rows = self.store.due()
        if not rows:
            return 0
        paths = [r["path"] for r in rows]
        if self.cfg.return_to is not None:
            errors = send_files(paths, self.cfg.return_to, self.cfg.ae_title)
        else:
            from cxrkit.dicom.dicomweb import stow

            errors = stow(paths, str(self.cfg.return_to_dicomweb))
        sent = 0
        for row, error in zip(rows, errors, strict=True):
            if error:
                wait = self.store.failed(row["uid"], error)
                self.log(
                    f"dicom-node: result {short_id(row['uid'])} not delivered ({error}); retry in {wait:.0f}s"
                )
            else:
                self.store.delivered(row["uid"])
                Path(row["path"]).unlink(missing_ok=True)
                sent += 1
        return sent

    # -- running -----------------------------------------------------------------------------------
    def recover(self) -> None:
        """After a crash: record inbox files the worklist lacks, drop half-written temp files and
        result files no pending row names, and make every pending delivery due now."""
        for tmp in list(self.inbox.glob(".*.tmp")) + list(self.outbox.glob(".*.tmp")):
            tmp.unlink(missing_ok=True)
        known = self.store.known_paths()
        for f in sorted(self.inbox.glob("*.dcm")):
            if str(f) not in known:  # written, but the node died before recording (not acknowledged):
                # under its own SOP Instance UID, so that the sender's re-send is the same row, not a second
                self.store.add_received(_sop_in(f) or "unrecorded-" + f.stem, str(f), "")
        pending = self.store.pending_paths()
        for f in self.outbox.glob("*.dcm"):
            if str(f) not in pending:  # built before a crash and never queued (the instance is redone),
                f.unlink(missing_ok=True)  # or delivered just before it
        self.store.retry_now()

    def _loop(self, event: threading.Event, step, idle_s: float) -> None:
        while not self.stopping.is_set():
            try:
                step()
            except Exception as err:  # a thread of the node never dies of one bad case
                self.log(f"dicom-node: {step.__name__} failed ({type(err).__name__}: {err})")
            event.wait(idle_s)
            event.clear()

    def start(self) -> None:
        """Recover, listen, and start the processor, the sender and (with ``pull``) the poller."""
        from pynetdicom import evt

        self.recover()
        ae = node_ae(self.cfg.ae_title)
        handlers = [(evt.EVT_C_STORE, self.on_store), (evt.EVT_C_ECHO, lambda _e: SUCCESS)]
        self.server = ae.start_server((self.cfg.host, self.cfg.port), block=False, evt_handlers=handlers)
        loops = [(self.work, self.process_pending, 1.0), (self.deliver, self.deliver_due, 1.0)]
        if self.cfg.pull is not None:
            from cxrkit.dicom.pull import Puller

            puller = Puller(self.cfg.pull, self.cfg.ae_title, self.store, self.log)
            loops.append((threading.Event(), puller.poll, self.cfg.pull_interval_s))
        for event, step, idle in loops:
            t = threading.Thread(
                target=self._loop, args=(event, step, idle), name=f"node-{step.__name__}", daemon=True
            )
            t.start()
            self.threads.append(t)
        self.work.set()
        self.log(
            f"dicom-node: {self.cfg.ae_title} listening on {self.cfg.host}:{self.cfg.port}, results to "
            f"{self.cfg.return_to or self.cfg.return_to_dicomweb}; worklist {self.state / 'worklist.sqlite'}"
        )

    def stop(self) -> None:
        self.stopping.set()
        self.work.set()
        self.deliver.set()
        if self.server is not None:
            self.server.shutdown()
        for t in self.threads:
            t.join(timeout=30)
        self.readers.shutdown(wait=False, cancel_futures=True)
        self.store.close()

    def serve_forever(self) -> None:
        """Run until SIGINT/SIGTERM."""
        import signal

        self.start()
        done = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_a: done.set())
        while not done.wait(0.5):
            pass
        self.log("dicom-node: stopping (finishing the current batch)")
        self.stop()


def _sop_in(path: Path) -> str | None:
    """The SOP Instance UID in a received file's header, or None when it cannot be read."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"], force=True)
        return str(ds.get("SOPInstanceUID", "") or "").strip() or None
    except Exception:  # a half-written or foreign file: recorded under its file name, processed as any
        return None
