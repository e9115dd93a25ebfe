"""What the reading view gets from the API: the film's full range and its header windows (checked against
an independent conversion), the header panel without names unless asked, the heatmap as a layer with
its threshold, the borderline band, and reader feedback that is kept only when the service is told to."""

import base64
import dataclasses
import hashlib
import io

import numpy as np
import pydicom
import pytest
from conftest import chest_like, make_untrained_run, png_bytes
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cxrkit.config import ServeConfig
from cxrkit.run.model import RunModel
from cxrkit.run.package import read_package, write_package
from cxrkit.serve.app import create_app


def dicom_bytes(
    photometric: str = "MONOCHROME2", name: str = "Doe^Jane", patient: str = "P-77", seed: int = 3, **tags
) -> tuple[bytes, np.ndarray]:
    """A 12-bit DX film (rescale -1024) with two header windows; (file bytes, stored values)."""
    grey = chest_like(96, 80, seed=seed).astype(np.float64)
    stored = np.round(grey / 255 * 4000 + 50).astype(np.uint16)
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.ViewPosition, ds.StudyDate = "DX", "PA", "20240102"
    ds.PatientName, ds.PatientID, ds.PatientSex, ds.PatientAge = name, patient, "F", "061Y"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.WindowCenter, ds.WindowWidth = [1000, 0], [1800, 3000]
    ds.WindowCenterWidthExplanation = ["SOFT", "WIDE"]
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = stored.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue(), stored.astype(np.float64) - 1024


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_untrained_run(tmp_path_factory.mktemp("reading") / "run")


def client(run_dir, **cfg) -> TestClient:
    return TestClient(create_app(RunModel.load(run_dir, "cpu"), ServeConfig(**cfg)))


def post(
    c: TestClient, data: bytes, query: str = "", ctype: str = "application/dicom", name="study.dcm", **kw
):
    return c.post(f"/v1/predict{query}", files={"file": (name, data, ctype)}, **kw)


def decode_png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_display_is_the_full_range_with_the_files_windows_in_display_units(run_dir, photometric):
    data, values = dicom_bytes(photometric)
    out = post(client(run_dir), data, "?display=true").json()
    d = out["display"]
    lo, hi = values.min(), values.max()
    assert (
        d["source"] == "dicom"
        and d["value_range"] == [lo, hi]
        and d["inverted"] == (photometric != "MONOCHROME2")
    )
    unit = (values - lo) * 255 / (hi - lo)
    want = np.clip(np.rint(255 - unit if d["inverted"] else unit), 0, 255)
    assert np.array_equal(decode_png(d["png_base64"]), want.astype(np.uint8))
    (soft, wide) = d["windows"]
    assert soft["name"] == "SOFT" and wide["name"] == "WIDE"
    c = (1000 - lo) * 255 / (hi - lo)
    assert soft["center"] == pytest.approx(255 - c if d["inverted"] else c)
    assert soft["width"] == pytest.approx(1800 * 255 / (hi - lo)) and wide["file_width"] == 3000


def test_header_panel_shows_study_facts_and_names_only_when_asked(run_dir):
    data, _ = dicom_bytes()
    header = post(client(run_dir), data, "?display=true").json()["header"]
    assert header["modality"] == "DX" and header["view"] == "PA" and header["study_date"] == "2024-01-02"
    assert header["sex"] == "F" and "061Y" in header["age"]
    assert "patient_name" not in header and "patient_id" not in header
    shown = post(client(run_dir, show_patient_id=True), data, "?display=true").json()["header"]
    assert shown["patient_name"] == "Doe^Jane" and shown["patient_id"] == "P-77"


def test_png_display_is_the_decoded_image_without_windows(run_dir):
    img = chest_like(80, 72, seed=1)
    out = post(client(run_dir), png_bytes(img), "?display=true", ctype="image/png").json()
    assert out["display"]["windows"] == [] and out["display"]["source"] == "image" and out["header"] == {}
    assert np.array_equal(decode_png(out["display"]["png_base64"]), img)


def test_heatmap_layer_is_transparent_and_says_whether_its_finding_is_suspected(run_dir):
    data, _ = dicom_bytes()
    c = client(run_dir)
    for label in ("Effusion", "Pneumonia"):
        out = post(c, data, f"?heatmap={label}&layer=true").json()
        h = out["heatmap"]
        layer = decode_png(h["png_base64"])
        assert layer.ndim == 3 and layer.shape[2] == 4  # RGBA: the film shows through
        assert layer[..., 3].min() < layer[..., 3].max()  # opacity follows the map
        p, t = out["probabilities"][label], out["thresholds"][label]
        assert h["probability"] == p and h["threshold"] == t and h["above_threshold"] == (p >= t)
        assert "not a segmentation" in h["caption"]


def test_borderline_band_comes_from_the_stored_threshold_interval(tmp_path):
    run = make_untrained_run(tmp_path / "run")
    data, _ = dicom_bytes()
    assert post(client(run), data).json()["triage"]["band"] is None  # not stored: no band invented
    pkg = read_package(run)
    score = post(client(run), data).json()["triage"]["score"]
    for band, inside in (([score - 0.01, score + 0.01], True), ([score + 0.01, score + 0.2], False)):
        write_package(run, dataclasses.replace(pkg, validation={"operating_point_ci": band}))
        triage = post(client(run), data).json()["triage"]
        assert triage["band"] == band and triage["borderline"] is inside


def test_no_feedback_is_kept_unless_the_service_is_started_with_a_database(run_dir, tmp_path):
    data, _ = dicom_bytes()
    c = client(run_dir)
    study = post(c, data).json()["study"]
    assert study == hashlib.sha256(data).hexdigest()
    r = c.post("/v1/feedback", json={"study": study, "triage": "agree"})
    assert r.status_code == 404 and r.json()["error"] == "feedback_disabled"
    assert c.get("/v1/feedback").status_code == 404
    with pytest.raises(ValueError, match=r"keep_images needs serve\.feedback"):
        ServeConfig(keep_images=str(tmp_path / "kept"))


def test_feedback_is_stored_read_back_and_checked(run_dir, tmp_path):
    data, _ = dicom_bytes(name="Roe^Richard", patient="MRN-Roe-1")
    db, kept = tmp_path / "fb.sqlite", tmp_path / "kept"
    c = client(run_dir, feedback=str(db), keep_images=str(kept), reader="Dr A")
    out = post(c, data, name="Roe_Richard_chest.dcm").json()  # names in the file name and header
    assert out["feedback"] == "recorded"
    study = out["study"]
    assert (kept / f"{study}.dcm").read_bytes() == data  # the film, kept under its hash for labels
    verdict = {"study": study, "triage": "disagree", "findings": {"Effusion": "present"}, "comment": "ok"}
    saved = c.post("/v1/feedback", json=verdict)
    assert saved.status_code == 200, saved.text
    rows = c.get("/v1/feedback").json()["feedback"]
    assert len(rows) == 1 and rows[0]["study"] == study and rows[0]["reader"] == "Dr A"
    assert rows[0]["triage"] == "disagree" and rows[0]["findings"] == {"Effusion": "present"}
    bad = c.post("/v1/feedback", json={**verdict, "findings": {"Efusion": "present"}})
    assert bad.status_code == 400 and "Efusion" in bad.json()["message"]
    assert c.post("/v1/feedback", json={**verdict, "triage": "maybe"}).status_code == 422
    unknown = c.post("/v1/feedback", json={**verdict, "study": "0" * 64})
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_study"
    stored = b"".join(f.read_bytes() for f in tmp_path.glob("fb.sqlite*"))  # the WAL too
    assert b"Roe" not in stored and b"Richard" not in stored and b"MRN" not in stored  # hashes only
    # with no API key anyone can read GET /v1/feedback: the free text stays in the database
    assert rows[0]["comment"] is None


def test_feedback_needs_the_api_key_when_one_is_set(run_dir, tmp_path):
    app = create_app(RunModel.load(run_dir, "cpu"), ServeConfig(feedback=str(tmp_path / "fb")), api_key="k1")
    c = TestClient(app)
    assert c.get("/v1/feedback").status_code == 401
    assert c.get("/v1/feedback", headers={"X-API-Key": "k1"}).status_code == 200


def test_model_card_carries_warnings_and_what_the_run_was_trained_on(run_dir):
    card = client(run_dir).get("/v1/model").json()
    assert any("no reliability data" in w for w in card["warnings"])  # an old-style package says so
    assert card["borderline_band"] is None and card["feedback"] is False and len(card["digest"]) > 8


def test_reader_names_come_only_from_the_deployment(run_dir, tmp_path):
    data, _ = dicom_bytes()
    verdict = {"triage": "agree"}
    plain = client(run_dir, feedback=str(tmp_path / "a.sqlite"))
    verdict["study"] = post(plain, data).json()["study"]
    plain.post("/v1/feedback", json=verdict, headers={"X-Remote-User": "mallory"})
    assert plain.get("/v1/feedback").json()["feedback"][0]["reader"] is None  # a header nobody vouched for
    proxied = client(run_dir, feedback=str(tmp_path / "b.sqlite"), reader_header="X-Remote-User")
    post(proxied, data)
    assert proxied.post("/v1/feedback", json=verdict, headers={"X-Remote-User": "dr.b"}).status_code == 200
    assert proxied.get("/v1/feedback").json()["feedback"][0]["reader"] == "dr.b"
    bad = proxied.post("/v1/feedback", json=verdict, headers={"X-Remote-User": "<script>"})
    assert bad.status_code == 400 and bad.json()["error"] == "bad_reader"


def test_feedback_guards_its_size_and_shows_comments_only_behind_a_key(run_dir, tmp_path):
    data, _ = dicom_bytes()
    app = create_app(RunModel.load(run_dir, "cpu"), ServeConfig(feedback=str(tmp_path / "f")), api_key="k")
    c = TestClient(app, headers={"X-API-Key": "k"})
    study = post(c, data).json()["study"]
    many = {"study": study, "findings": {f"L{k}": "present" for k in range(65)}}
    assert c.post("/v1/feedback", json=many).status_code == 422  # at most 64 findings
    huge = {"study": study, "comment": "x" * 70_000}
    assert c.post("/v1/feedback", json=huge).status_code == 413  # 64 KB body limit, before parsing
    assert c.post("/v1/feedback", json={"study": study, "comment": "see prior"}).status_code == 200
    assert c.get("/v1/feedback").json()["feedback"][0]["comment"] == "see prior"  # behind the key


def test_films_of_one_patient_share_a_key_and_batches_are_recorded(run_dir, tmp_path):
    db = tmp_path / "fb.sqlite"
    c = client(run_dir, feedback=str(db), keep_images=str(tmp_path / "kept"))
    first, _ = dicom_bytes(patient="MRN-1", seed=1)
    second, _ = dicom_bytes(patient="MRN-1", seed=2)
    other, _ = dicom_bytes(patient="MRN-2", seed=4)
    files = [("files", (f"{k}.dcm", d, "application/dicom")) for k, d in enumerate((first, second, other))]
    answers = c.post("/v1/predict/batch", files=files).json()["results"]
    assert [a["feedback"] for a in answers] == ["recorded"] * 3
    from cxrkit.workflows.feedback import FeedbackStore

    keys = {p["study"]: p["patient"] for p in FeedbackStore(db).predictions()}
    a, b, o = (keys[hashlib.sha256(d).hexdigest()] for d in (first, second, other))
    assert a == b != o and a not in (hashlib.sha256(first).hexdigest(), None)


def test_a_storage_failure_loses_the_verdict_not_the_answer(run_dir, tmp_path, monkeypatch):
    import sqlite3

    c = client(run_dir, feedback=str(tmp_path / "fb.sqlite"))
    store = c.app.state.service.feedback

    def locked(*args, **kwargs):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(store, "record_prediction", locked)
    out = post(c, dicom_bytes()[0])
    assert out.status_code == 200 and out.json()["feedback"] == "not recorded" and out.json()["probabilities"]


def test_display_range_leaves_padding_out_and_offers_the_files_lut(run_dir):
    from pydicom.dataset import Dataset

    lut = Dataset()
    lut.LUTDescriptor, lut.LUTExplanation = [1024, 100, 12], "NORMAL"
    lut.LUTData = np.arange(1024, dtype=np.uint16).tobytes()  # OW: the table as 16-bit words
    data, _ = dicom_bytes(PixelPaddingValue=0, VOILUTSequence=[lut])
    ds = pydicom.dcmread(io.BytesIO(data))
    raw = ds.pixel_array.copy()
    raw[:10] = 0  # a padded frame above the film
    ds.PixelData = raw.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf)
    d = post(client(run_dir), buf.getvalue(), "?display=true").json()["display"]
    film = raw[10:].astype(np.float64) - 1024
    assert d["value_range"] == [film.min(), film.max()]  # not -1024, the padding
    window = d["windows"][-1]
    assert window["name"].startswith("NORMAL") and window["file_width"] == 1024
    assert window["file_center"] == pytest.approx(100 + 1023 / 2)
