"""The DICOM node's parts without a network: screening, the SR/SC objects, the worklist database's
rules (priority never lowered, back-off, recovery) and the worklist command's privacy."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from conftest import phantom_image
from pacs import write_study_image

pytest.importorskip("highdicom", reason="the node's extra is not installed: pip install -e '.[node]'")


def test_screen_sorts_what_the_node_scores_from_what_it_skips(tmp_path):
    from cxrkit.dicom.checks import NOT_APPLICABLE, NOT_ASSESSABLE, screen

    img = phantom_image(0)

    def verdict(**kw):
        return screen(pydicom.dcmread(write_study_image(tmp_path / "x.dcm", img, **kw)))

    assert verdict().score and verdict(modality="CR", view="AP").score and verdict(view=None).score
    assert verdict(modality="CT").status == NOT_APPLICABLE
    assert verdict(view="LATERAL").status == NOT_APPLICABLE
    assert (verdict(pixels=False).status, verdict(pixels=False).reason) == (
        NOT_ASSESSABLE,
        "no pixel data in the instance",
    )
    ds = pydicom.dcmread(tmp_path / "x.dcm")
    ds.Manufacturer = "cxrkit"  # the node's own result routed back to it: never scored again
    assert screen(ds).status == NOT_APPLICABLE and "own output" in screen(ds).reason


def _result(**kw):
    from cxrkit.dicom.results import InstanceResult

    base = dict(
        labels=["Cardiomegaly", "Pleural_Thickening", "No Finding"],
        probs=np.array([0.8123456789, 0.05, 0.1]),
        thresholds=np.array([0.5, 0.3, 0.5]),
        threshold_rule="max_f1",
        flag="abnormal",
        score=0.8123456789,
        threshold=0.42,
        target_sensitivity=0.95,
        in_distribution=True,
        ood_score=0.37,
    )
    return InstanceResult(**{**base, **kw})


def test_sr_round_trips_every_number_and_stays_in_the_study(tmp_path):
    from cxrkit.dicom.results import Algorithm, build_sc, build_sr, read_sr

    src = pydicom.dcmread(write_study_image(tmp_path / "s.dcm", phantom_image(1)))
    sr = build_sr(src, _result(), Algorithm("small_cnn", "0.2.0", "0123456789abcdef"))
    buf = io.BytesIO()
    sr.save_as(buf)
    back = read_sr(pydicom.dcmread(io.BytesIO(buf.getvalue())))
    assert back["probabilities"] == pytest.approx(
        {"Cardiomegaly": 0.8123456789, "Pleural_Thickening": 0.05, "No Finding": 0.1}, abs=1e-9
    )
    assert back["thresholds"]["Pleural_Thickening"] == pytest.approx(0.3)
    assert back["triage"] | {"intended_use": ""} == {
        "score": pytest.approx(0.8123456789),
        "threshold": pytest.approx(0.42),
        "target_sensitivity": pytest.approx(0.95),
        "result": "FLAGGED",
        "intended_use": "",
    }
    assert back["assessment"] == {
        "assessable": True,
        "in_distribution": True,
        "ood_score": pytest.approx(0.37),
        "reasons": [],
    }
    assert back["source"] == src.SOPInstanceUID and back["study"] == src.StudyInstanceUID
    assert sr.SeriesInstanceUID != src.SeriesInstanceUID and sr.PatientID == src.PatientID
    assert (
        back["algorithm"]["name"] == "cxrkit small_cnn"
        and "0123456789abcdef" in back["algorithm"]["parameters"][0]
    )
    # out of distribution: the result and its reason travel
    ood = read_sr(
        build_sr(
            src,
            _result(flag="out of distribution", in_distribution=False, reasons=["view LL"]),
            Algorithm("m", "1", "d"),
        )
    )
    assert (ood["triage"]["result"], ood["assessment"]["in_distribution"], ood["assessment"]["reasons"]) == (
        "OOD",
        False,
        ["view LL"],
    )
    # not assessable: no probabilities, no score, the reason
    na = read_sr(
        build_sr(
            src,
            _result(
                probs=None,
                score=None,
                flag="not assessable",
                in_distribution=None,
                ood_score=None,
                reasons=["too small"],
            ),
            Algorithm("m", "1", "d"),
        )
    )
    assert (
        na["probabilities"] == {}
        and na["triage"]["score"] is None
        and na["triage"]["result"] == "NOTASSESSED"
    )
    assert na["assessment"]["assessable"] is False and na["assessment"]["reasons"] == ["too small"]
    sc = build_sc(src, np.full((40, 50, 3), 200, np.uint8))
    buf = io.BytesIO()
    sc.save_as(buf)
    sc = pydicom.dcmread(io.BytesIO(buf.getvalue()))
    assert sc.pixel_array.shape == (40, 50, 3) and sc.StudyInstanceUID == src.StudyInstanceUID
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID


def test_building_results_never_logs_the_patients_name(tmp_path, recwarn):
    from cxrkit.dicom.results import Algorithm, build_sc, build_sr

    src = pydicom.dcmread(write_study_image(tmp_path / "s.dcm", phantom_image(1), patient="SINGLEWORDNAME"))
    build_sr(src, _result(), Algorithm("m", "1", "d"))
    build_sc(src, np.zeros((8, 8, 3), np.uint8))
    assert not [w for w in recwarn if "SINGLEWORDNAME" in str(w.message)]


def test_study_priority_is_only_ever_raised_and_delivery_backs_off(tmp_path):
    from cxrkit.dicom.store import Store, backoff

    store = Store(tmp_path)
    for sop in ("a", "b", "c"):
        store.add_received(sop, f"/x/{sop}", "MOD")
    store.finish("a", {"study_uid": "S", "outcome": "abnormal", "score": 0.9}, [("r1", "SR", "/o/r1")])
    store.finish("b", {"study_uid": "S", "outcome": "normal", "score": 0.1}, [])
    store.finish("c", {"study_uid": "T", "outcome": "not assessable", "reason": "blank"}, [])
    rows = store.worklist()
    assert [r["sop_uid"] for r in rows] == ["c", "a", "b"]  # unassessed first, then S (abnormal) by score
    assert {r["study_uid"]: r["study_priority"] for r in rows} == {
        "T": 4,
        "S": 2,
    }  # b's "normal" did not lower S
    assert [backoff(k) for k in (1, 2, 3, 20)] == [2.0, 4.0, 8.0, 300.0]
    wait = store.failed("r1", "down")
    assert wait == 2.0 and store.due() == []  # not due until its back-off passes
    store.retry_now()
    assert [r["uid"] for r in store.due()] == ["r1"]
    store.delivered("r1")
    assert store.due() == [] and store.counts()["results delivered"] == 1
    store.add_received("a", "/x/a2", "MOD")  # re-sent: processed again
    assert [r["sop_uid"] for r in store.to_process(10)] == ["a"]


def test_worklist_command_prints_no_names_and_filters(tmp_path, capsys):
    from cxrkit.cli import main
    from cxrkit.dicom.store import Store

    store = Store(tmp_path / "state")
    store.add_received("a", "/x/a", "MOD")
    store.add_received("b", "/x/b", "MOD")
    store.finish(
        "a",
        {"study_uid": "S", "patient_id": "PID-77", "accession": "ACC1", "outcome": "normal", "score": 0.1},
        [],
    )
    store.finish(
        "b",
        {
            "study_uid": "T",
            "patient_id": "PID-88",
            "accession": "ACC2",
            "outcome": "abnormal",
            "score": 0.7,
            "top_finding": "Effusion",
        },
        [],
    )
    store.close()
    assert main(["worklist", str(tmp_path / "state")]) == 0
    out = capsys.readouterr().out
    assert "PID-77" not in out and out.index("ACC2") < out.index("ACC1") and "Effusion" in out
    assert main(["worklist", str(tmp_path / "state"), "--flagged", "--show-patient-id"]) == 0
    out = capsys.readouterr().out
    assert "PID-88" in out and "ACC1" not in out
    assert main(["worklist", str(tmp_path / "state"), "--csv", str(tmp_path / "w.csv")]) == 0
    import pandas as pd

    assert list(pd.read_csv(tmp_path / "w.csv")["accession"]) == ["ACC2", "ACC1"]
    assert main(["worklist", str(tmp_path / "nothing")]) == 2
    assert "no worklist.sqlite" in capsys.readouterr().err


def test_node_command_errors_are_one_line(tmp_path, capsys):
    from cxrkit.cli import main
    from cxrkit.dicom.net import parse_peer

    assert parse_peer("ORTHANC@127.0.0.1:4242").port == 4242
    for bad in ("ORTHANC@host", "A@h:99999", "@h:1", "WAYTOOLONGAETITLE17@h:1"):
        with pytest.raises(ValueError, match="AET@HOST:PORT"):
            parse_peer(bad)
    assert main(["dicom-node", str(tmp_path)]) == 2
    assert "--return-to" in capsys.readouterr().err
    assert main(["dicom-node", str(tmp_path), "--return-to", "X@h"]) == 2
    assert "AET@HOST:PORT" in capsys.readouterr().err


def test_an_instance_written_but_not_recorded_is_one_row_when_the_sender_sends_it_again(tmp_path):
    """kill -9 between the inbox write and the database: recovery records the file under its own SOP
    Instance UID, so the modality's re-send (it had no acknowledgement) updates that row, not a second."""
    import hashlib

    from conftest import make_untrained_run

    from cxrkit.dicom.net import parse_peer
    from cxrkit.dicom.node import Node, NodeConfig
    from cxrkit.run.model import RunModel

    run = RunModel.load(make_untrained_run(tmp_path / "run"), "cpu")
    node = Node(run, NodeConfig(state=tmp_path / "state", return_to=parse_peer("PACS@127.0.0.1:4242")))
    f = write_study_image(tmp_path / "a.dcm", phantom_image(1))
    sop = str(pydicom.dcmread(f).SOPInstanceUID)
    inbox_file = node.inbox / f"{hashlib.sha256(sop.encode()).hexdigest()[:40]}.dcm"  # as on_store names it
    inbox_file.write_bytes(f.read_bytes())
    node.recover()
    node.store.add_received(sop, str(inbox_file), "MODALITY")  # the re-send
    rows = node.store.to_process(10)
    assert [r["sop_uid"] for r in rows] == [sop]
