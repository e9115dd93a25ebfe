"""The DICOM node against a real PACS (Debian's Orthanc on loopback ports): studies sent from the PACS
come back as TID 1500 SRs and Secondary Captures whose numbers equal ``cxr predict`` on the same files;
bad instances are skipped with reasons; nothing is lost when the PACS is down or the node is killed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import phantom_image, shared_path
from pacs import (
    NODE_AET,
    NodeProcess,
    Orthanc,
    free_port,
    need,
    storescu,
    wait_for,
    write_study_image,
)

pytest.importorskip("pynetdicom", reason="the node's extra is not installed: pip install -e '.[node]'")
pytest.importorskip("highdicom", reason="the node's extra is not installed: pip install -e '.[node]'")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
RSNA = ("data", "samples", "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm")


def phantom_dicoms(folder: Path, n: int, start: int = 0, **kw) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [write_study_image(folder / f"p{k}.dcm", phantom_image(k), **kw) for k in range(start, start + n)]


@pytest.fixture(scope="module")
def pacs_and_node(phantom_run, tmp_path_factory):
    """Orthanc and one node (results to Orthanc), both running for the module's tests."""
    need("Orthanc")
    root = tmp_path_factory.mktemp("pacs")
    port = free_port()
    pacs = Orthanc(root / "orthanc", port).start()
    node = NodeProcess(phantom_run, root / "node", port, "--return-to", pacs.peer).start()
    yield pacs, node
    node.stop()
    pacs.stop()


def results_for(pacs: Orthanc, sop_uids: set[str], modality: str) -> dict[str, bytes]:
    """{source SOP UID: result file} for the results of ``modality`` (SR or OT) found in Orthanc."""
    import pydicom

    out = {}
    for iid in pacs.find(Modality=modality):
        raw = pacs.file(iid)
        ds = pydicom.dcmread(__import__("io").BytesIO(raw))
        if modality == "SR":
            from cxrkit.dicom.results import read_sr

            src = read_sr(ds)["source"]
        else:
            src = (
                str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID) if "SourceImageSequence" in ds else ""
            )
        if src in sop_uids:
            out[src] = raw
    return out


def sop_of(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_studies_from_the_pacs_come_back_as_sr_and_sc_equal_to_cxr_predict(
    pacs_and_node, phantom_run, tmp_path
):
    import io

    import pydicom

    from cxrkit.cli import main
    from cxrkit.dicom.results import read_sr

    pacs, node = pacs_and_node
    files = phantom_dicoms(tmp_path / "in", 4)
    rsna = tmp_path / "in" / "rsna.dcm"
    shutil.copy(shared_path(*RSNA), rsna)  # JPEG baseline: the node must accept and decode it
    files.append(rsna)
    ids = [pacs.upload(f) for f in files]
    pacs.post("/modalities/cxrkit/store", ids)  # the PACS pushes the studies to the node
    sops = {sop_of(f): f for f in files}
    srs = wait_for(
        lambda: (r := results_for(pacs, set(sops), "SR")) and len(r) == len(sops) and r, 120, "5 SRs"
    )
    scs = wait_for(
        lambda: (r := results_for(pacs, set(sops), "OT")) and len(r) == len(sops) and r, 60, "5 SCs"
    )

    assert main(["predict", str(phantom_run), *map(str, files), "--out", str(tmp_path / "p.csv")]) == 0
    table = pd.read_csv(tmp_path / "p.csv").set_index("image_id")
    for sop, path in sops.items():
        got = read_sr(pydicom.dcmread(io.BytesIO(srs[sop])))
        source = pydicom.dcmread(path, stop_before_pixels=True)
        assert got["study"] == str(source.StudyInstanceUID)
        row = table.loc[path.name]
        for label, p in got["probabilities"].items():
            assert abs(p - row[label]) <= 1e-6, (path.name, label)
        assert got["triage"]["score"] == pytest.approx(row["triage_score"], abs=1e-6)
        flag = {"FLAGGED": "abnormal", "NOTFLAGGED": "normal", "OOD": "out of distribution"}
        assert flag[got["triage"]["result"]] == row["triage_flag"]
        assert got["assessment"]["in_distribution"] == bool(row["in_distribution"])
        assert "research" in got["triage"]["intended_use"].lower()
        assert got["algorithm"]["parameters"][0].startswith("run digest ")
        sc = pydicom.dcmread(io.BytesIO(scs[sop]))
        assert sc.StudyInstanceUID == source.StudyInstanceUID
        assert sc.PatientID == source.PatientID  # the PACS files it with the study
        assert sc.pixel_array.ndim == 3 and sc.pixel_array.shape[2] == 3 and sc.pixel_array.std() > 1
    # the real RSNA film is no phantom: the SR says out of distribution, and why
    rsna_sr = read_sr(pydicom.dcmread(io.BytesIO(srs[sop_of(rsna)])))
    assert rsna_sr["triage"]["result"] == "OOD" and rsna_sr["assessment"]["reasons"]
    if shutil.which("dciodvfy"):  # dicom3tools' validator: no errors in the SR or the SC
        for raw in (srs[sop_of(files[0])], scs[sop_of(files[0])]):
            (tmp_path / "v.dcm").write_bytes(raw)
            out = subprocess.run(["dciodvfy", str(tmp_path / "v.dcm")], capture_output=True, text=True)
            errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
            assert not errors, errors
    # the worklist: every instance done, results delivered, no patient name anywhere
    text = subprocess.run(
        [sys.executable, "-m", "cxrkit.cli", "worklist", str(node.state)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Doe" not in text and "PID-0001" not in text and "19600101" not in text
    assert "Doe" not in node.log.read_text() and "PID-0001" not in node.log.read_text()


def test_bad_instances_are_skipped_with_reasons_and_the_node_still_answers(pacs_and_node, tmp_path):
    from cxrkit.dicom.net import Peer, echo, send_datasets
    from cxrkit.dicom.worklist import worklist_frame

    pacs, node = pacs_and_node
    d = tmp_path / "bad"
    d.mkdir()
    img = phantom_image(7)
    ct = write_study_image(d / "ct.dcm", img, modality="CT")
    nopix = write_study_image(d / "nopix.dcm", img, pixels=False)
    lateral = write_study_image(d / "lat.dcm", img, view="LL")
    tiny = write_study_image(d / "tiny.dcm", img[:12, :12])
    assert storescu(node.port, ct, nopix, lateral, tiny).returncode == 0
    # hostile headers over the network (pynetdicom sends what storescu would refuse to)
    hostile = hostile_datasets(d)
    errors = send_datasets(list(hostile.values()), Peer(NODE_AET, "127.0.0.1", node.port), "FUZZER")
    assert all(e == "" for e in errors), errors  # each accepted: recorded, never refused or crashed
    sops = {sop_of(p): p.name for p in (ct, nopix, lateral, tiny)} | {
        str(ds.SOPInstanceUID): name for name, ds in hostile.items()
    }

    def finished():
        frame = worklist_frame(node.state)
        frame = frame[frame["sop_uid"].isin(sops)]
        return frame if len(frame) == len(sops) and (frame["outcome"] != "received").all() else None

    frame = wait_for(finished, 60, "the bad instances to be recorded").set_index("sop_uid")
    outcome = {sops[s]: (r["outcome"], r["reason"]) for s, r in frame.iterrows()}
    assert outcome["ct.dcm"][0] == "not applicable" and "modality CT" in outcome["ct.dcm"][1]
    assert outcome["lat.dcm"][0] == "not applicable" and "LL" in outcome["lat.dcm"][1]
    assert outcome["nopix.dcm"] == ("not assessable", "no pixel data in the instance")
    assert outcome["tiny.dcm"][0] == "not assessable" and "12" in outcome["tiny.dcm"][1]
    for name in hostile:
        assert outcome[name][0] == "not assessable" and outcome[name][1], (name, outcome[name])
    # a not-assessable frontal film gets an SR saying so (never a silent "normal"); a CT gets nothing
    srs = wait_for(lambda: results_for(pacs, set(sops), "SR"), 60, "the not-assessable SRs")
    assert sop_of(tiny) in srs and sop_of(nopix) in srs and sop_of(ct) not in srs
    assert echo(Peer(NODE_AET, "127.0.0.1", node.port))
    # unassessable studies head the worklist
    order = list(worklist_frame(node.state)["outcome"])
    assert order.index("not assessable") < min(order.index(o) for o in ("normal", "abnormal") if o in order)


def hostile_datasets(folder: Path) -> dict:
    """Frontal DX datasets broken in the ways files arrive broken: a short pixel buffer, a zero-row
    image, an impossible bit depth, a huge declared size, a compressed syntax with garbage bytes."""
    import pydicom

    base = write_study_image(folder / "base.dcm", phantom_image(3))
    out = {}
    for name, change in {
        "short.dcm": lambda ds: setattr(ds, "PixelData", ds.PixelData[:100]),
        "zero-rows.dcm": lambda ds: setattr(ds, "Rows", 0),
        "bits.dcm": lambda ds: (setattr(ds, "BitsAllocated", 3), setattr(ds, "BitsStored", 3)),
        "huge.dcm": lambda ds: (setattr(ds, "Rows", 60000), setattr(ds, "Columns", 60000)),
    }.items():
        ds = pydicom.dcmread(base)
        change(ds)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        out[name] = ds
    return out


def test_results_wait_in_the_outbox_while_the_pacs_is_down(phantom_run, tmp_path):
    need("Orthanc")
    port = free_port()
    pacs = Orthanc(tmp_path / "orthanc", port).start()
    node = NodeProcess(phantom_run, tmp_path / "node", port, "--return-to", pacs.peer).start()
    try:
        pacs.stop()
        files = phantom_dicoms(tmp_path / "in", 3)
        assert storescu(node.port, *files).returncode == 0
        from cxrkit.dicom.worklist import worklist_frame

        def tried():
            f = worklist_frame(node.state)
            return len(f) == 3 and (f["results"] == "0/2 delivered").all()

        wait_for(tried, 60, "the results to be built and held back")
        assert len(list((node.state / "outbox").glob("*.dcm"))) == 6  # 3 SR + 3 SC kept on disk
        time.sleep(3)  # at least one failed try and back-off
        assert "not delivered" in node.log.read_text()
        pacs.start()
        sops = {sop_of(f) for f in files}
        wait_for(lambda: len(results_for(pacs, sops, "SR")) == 3, 90, "the outbox to deliver the SRs")
        wait_for(lambda: len(results_for(pacs, sops, "OT")) == 3, 30, "the outbox to deliver the SCs")
        assert not list((node.state / "outbox").glob("*.dcm"))
    finally:
        node.stop()
        pacs.stop()


def test_a_node_killed_mid_batch_finishes_every_instance_after_restart(phantom_run, tmp_path):
    import sqlite3

    need("Orthanc")
    port = free_port()
    pacs = Orthanc(tmp_path / "orthanc", port).start()
    args = ("--return-to", pacs.peer, "--batch", "2")
    node = NodeProcess(phantom_run, tmp_path / "node", port, *args).start()
    files = phantom_dicoms(tmp_path / "in", 24)
    db = tmp_path / "node" / "worklist.sqlite"
    try:
        sender = subprocess.Popen(
            [
                need("storescu"),
                "-aec",
                NODE_AET,
                "-aet",
                "MODALITY",
                "127.0.0.1",
                str(port),
                *map(str, files),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def some_done():
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
                return con.execute("SELECT COUNT(*) FROM instances WHERE state='done'").fetchone()[0] >= 2

        wait_for(some_done, 60, "the first instances to be processed", step=0.05)
        node.kill9()  # mid-batch: the sender is cut off too, and a real modality would re-send
        sender.wait(60)
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            received = {r[0] for r in con.execute("SELECT sop_uid FROM instances")}
            unfinished = con.execute("SELECT COUNT(*) FROM instances WHERE state='received'").fetchone()[0]
        acknowledged = received.copy()
        assert unfinished or len(received) < len(files)  # the kill really left work behind
        node = NodeProcess(phantom_run, tmp_path / "node", port, *args).start()
        rest = [f for f in files if sop_of(f) not in received]
        if rest:  # what the modality did not get acknowledged, it sends again
            assert storescu(port, *rest).returncode == 0
        sops = {sop_of(f) for f in files}
        srs = wait_for(
            lambda: (r := results_for(pacs, sops, "SR")) and len(r) == len(sops) and r, 120, "24 SRs"
        )
        assert set(srs) == sops and acknowledged <= sops
        assert len(pacs.find(Modality="SR")) == len(sops)  # exactly one SR per instance in the PACS
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            states = dict(con.execute("SELECT state, COUNT(*) FROM instances GROUP BY state").fetchall())
        assert states == {"done": len(files)}
    finally:
        node.stop()
        pacs.stop()


def test_dicomweb_return_and_pull_mode(phantom_run, tmp_path):
    import pydicom

    need("Orthanc")
    from pacs import DICOMWEB_PLUGIN

    if not DICOMWEB_PLUGIN.exists():
        pytest.skip("Debian's orthanc-dicomweb plugin is not installed (.ci/run installs it)")
    port = free_port()
    pacs = Orthanc(tmp_path / "orthanc", port).start()
    # the node pulls new CR/DX studies from the PACS (C-FIND + C-MOVE) and returns results by STOW-RS
    node = NodeProcess(
        phantom_run,
        tmp_path / "node",
        port,
        "--return-to-dicomweb",
        pacs.url + "/dicom-web",
        "--pull",
        pacs.peer,
        "--pull-interval",
        "1",
    ).start()
    try:
        files = phantom_dicoms(tmp_path / "in", 2)
        for f in files:
            pacs.upload(f)  # stored in the PACS only: nobody pushes it to the node
        sops = {sop_of(f) for f in files}
        srs = wait_for(lambda: (r := results_for(pacs, sops, "SR")) and len(r) == 2 and r, 90, "pulled SRs")
        assert {str(pydicom.dcmread(__import__("io").BytesIO(b)).StudyInstanceUID) for b in srs.values()} == {
            str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in files
        }
        time.sleep(3)  # later polls find the same studies (and the node's own results): nothing moved twice
        assert len(results_for(pacs, sops, "SR")) == 2
        assert np.all([len(pacs.find(Modality="SR")) == 2])
    finally:
        node.stop()
        pacs.stop()
