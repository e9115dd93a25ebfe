"""The HTTP API against a real uvicorn server on 127.0.0.1: answers match the Python API, bad input is a
4xx naming the problem (never a 500, never a crash), bursts get 503, keys are enforced, logs hold no
patient data."""

import base64
import functools
import io
import logging
import re
import socket
import threading
import time

import httpx
import numpy as np
import pydicom
import pytest
from conftest import chest_like, png_bytes, shared_path
from live import live_server
from PIL import Image
from pngs import bomb_header

from cxrkit.config import ServeConfig
from cxrkit.run.model import RunModel
from cxrkit.serve.app import create_app
from cxrkit.serve.batcher import Batcher

DICOM = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".dcm": "application/dicom"}


@pytest.fixture(scope="module")
def run(exported_run):
    return RunModel.load(exported_run, "cpu", engine="onnx")


@pytest.fixture(scope="module")
def server(run):
    """(base URL, app, captured log records) of a server with 1 MB / 5 MP limits."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    app = create_app(run, ServeConfig(max_upload_mb=1.0, max_pixels=5_000_000))
    try:
        with live_server(app) as url:
            yield url, app, records
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


def upload(path):
    return {"file": (path.name, path.read_bytes(), TYPES[path.suffix])}


def test_every_sample_scores_as_the_python_api_does(server, run):
    url, _, _ = server
    samples = sorted(shared_path("data", "samples").iterdir())
    expected = run.predict(samples, engine="torch")
    for path, (_, row) in zip(samples, expected.iterrows(), strict=True):
        r = httpx.post(f"{url}/v1/predict", files=upload(path), timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        probs = np.array([body["probabilities"][lab] for lab in run.labels])
        assert np.abs(probs - row[list(run.labels)].to_numpy(dtype=float)).max() <= 1e-4, path
        assert body["triage"]["score"] == pytest.approx(row["triage_score"], abs=1e-4)
        assert body["triage"]["flag"] == row["triage_flag"]
        decided = "abnormal" if body["triage"]["score"] >= body["triage"]["threshold"] else "normal"
        assert body["triage"]["flag"] == (
            decided if body["ood"]["in_distribution"] else "out of distribution"
        )
        assert body["ood"]["score"] == pytest.approx(row["ood_score"], abs=1e-4)  # the same on every path
        assert "; ".join(body["top_findings"]) == row["top_findings"]
        assert body["positive"] == [
            lab for lab in run.labels if probs[run.labels.index(lab)] >= body["thresholds"][lab]
        ]


def test_heatmap_overlay_and_preview_are_pngs_of_the_image(server):
    url, _, _ = server
    path = shared_path("data", "samples", "16747_3_1.jpg")  # 1036 x 885 RGB
    r = httpx.post(f"{url}/v1/predict?heatmap=Effusion&preview=true", files=upload(path), timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    overlay = Image.open(io.BytesIO(base64.b64decode(body["heatmap"]["png_base64"])))
    preview = Image.open(io.BytesIO(base64.b64decode(body["preview_png_base64"])))
    assert body["heatmap"]["label"] == "Effusion" and overlay.mode == "RGB"
    assert overlay.size == preview.size == (768, round(885 * 768 / 1036))  # the image's aspect kept
    colour = np.asarray(overlay, dtype=np.int16)
    assert np.abs(colour[..., 0] - colour[..., 2]).max() > 50  # the heatmap is drawn, not grey
    other = httpx.post(f"{url}/v1/predict?heatmap=Cardiomegaly", files=upload(path), timeout=30).json()
    assert other["heatmap"]["png_base64"] != body["heatmap"]["png_base64"]
    # heatmap=top: the finding with the highest probability (never "No Finding"), as if named
    top = httpx.post(f"{url}/v1/predict?heatmap=top", files=upload(path), timeout=30).json()
    findings = {k: v for k, v in top["probabilities"].items() if k != "No Finding"}
    assert top["heatmap"]["label"] == max(findings, key=findings.get)
    named = httpx.post(f"{url}/v1/predict?heatmap={top['heatmap']['label']}", files=upload(path), timeout=30)
    assert named.json()["heatmap"]["png_base64"] == top["heatmap"]["png_base64"]


def test_batch_gives_one_result_or_one_error_per_file_in_order(server, run):
    url, _, _ = server
    good = shared_path("data", "samples", "00000001_000.png")
    files = [
        ("files", ("a.png", good.read_bytes(), "image/png")),
        ("files", ("notes.png", b"not an image", "image/png")),
        ("files", ("b.dcm", shared_path("data", "samples", DICOM).read_bytes(), "application/dicom")),
    ]
    r = httpx.post(f"{url}/v1/predict/batch", files=files, timeout=30)
    assert r.status_code == 200, r.text
    a, bad, b = r.json()["results"]
    assert (
        a["filename"] == "a.png" and b["filename"] == "b.dcm" and len(a["probabilities"]) == len(run.labels)
    )
    assert bad["status"] == 422 and bad["error"] == "unreadable_image" and "notes.png" in bad["message"]
    single = httpx.post(f"{url}/v1/predict", files=upload(good), timeout=30).json()
    assert a["probabilities"] == pytest.approx(single["probabilities"], abs=1e-6)  # batching changes nothing


def test_model_card_health_metrics_and_schema(server, run):
    url, _, _ = server
    card = httpx.get(f"{url}/v1/model").json()
    assert card["labels"] == list(run.labels) and card["engine"] == "onnx"
    assert card["operating_point"]["threshold"] == run.package.operating_point.threshold
    assert card["input"] == run.spec.as_dict() and card["validation"] == run.package.validation
    assert list(card["thresholds"].values()) == pytest.approx(list(run.package.thresholds_for("max_f1")))
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    schema = httpx.get(f"{url}/openapi.json").json()
    assert {"/v1/predict", "/v1/predict/batch", "/v1/model", "/health", "/metrics"} <= set(schema["paths"])
    text = httpx.get(f"{url}/metrics").text
    assert 'cxr_requests_total{method="POST",route="/v1/predict",status="200"}' in text
    assert "cxr_request_seconds_bucket" in text and 'cxr_engine_info{engine="onnx"} 1' in text


def _dicom_without(tag: str) -> bytes:
    """The real sample DICOM with one element removed (PixelData, Modality)."""
    ds = pydicom.dcmread(shared_path("data", "samples", DICOM))
    delattr(ds, tag)
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def _tiff() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(chest_like(64, 64)).save(buf, format="TIFF")
    return buf.getvalue()


def _bomb(side: int, height: int | None = None) -> bytes:
    return bomb_header(side, side if height is None else height)


@functools.cache
def _malformed() -> dict:
    png = png_bytes(np.full((64, 64), 90, np.uint8))
    jpg = shared_path("data", "samples", "16747_3_1.jpg").read_bytes()
    return {
        "not an image": ({"file": ("x.png", b"hello, world", "image/png")}, 422, "not a PNG/JPEG/DICOM"),
        "truncated PNG": ({"file": ("t.png", png[: len(png) // 2], "image/png")}, 422, "t.png"),
        "truncated JPEG": ({"file": ("t.jpg", jpg[:2000], "image/jpeg")}, 422, "t.jpg"),
        "empty body": ({"file": ("e.png", b"", "image/png")}, 400, "empty file"),
        "DICOM without pixels": (
            {"file": ("n.dcm", _dicom_without("PixelData"), "application/dicom")},
            422,
            "no pixel data",
        ),
        # over the server's 5 MP limit; a side over 32,768 px; over Pillow's own bomb limit
        "absurd side": ({"file": ("w.png", _bomb(60_000_000, 1), "image/png")}, 413, "a side over the limit"),
        "too many pixels": (
            {"file": ("big.png", _bomb(3000), "image/png")},
            413,
            "over the limit of 5,000,000",
        ),
        "decompression bomb": ({"file": ("bomb.png", _bomb(20_000), "image/png")}, 413, "400,000,000 pixels"),
        "too small to assess": (
            {"file": ("tiny.png", png_bytes(np.zeros((8, 8), np.uint8)), "image/png")},
            422,
            "below the 32 px minimum side",
        ),
        "over the size limit": ({"file": ("big.png", b"\0" * 1_100_000, "image/png")}, 413, "limit"),
        "blank image": (
            {"file": ("blank.png", png_bytes(np.zeros((256, 256), np.uint8)), "image/png")},
            422,
            "no image content",
        ),
        "DICOM without Modality": (
            {"file": ("m.dcm", _dicom_without("Modality"), "application/dicom")},
            422,
            "no Modality tag",
        ),
        "TIFF (not an accepted format)": (
            {"file": ("t.tif", _tiff(), "application/octet-stream")},
            422,
            "not a PNG/JPEG/DICOM image",
        ),
        "wrong part type": ({"file": ("x.txt", png, "text/plain")}, 415, "text/plain"),
    }


@pytest.mark.parametrize("case", list(_malformed()))
def test_malformed_upload_is_a_4xx_naming_the_problem(server, case):
    url, _, _ = server
    files, status, words = _malformed()[case]
    r = httpx.post(f"{url}/v1/predict", files=files, timeout=30)
    assert r.status_code == status, (case, r.status_code, r.text)
    assert r.headers["content-type"] == "application/json" and words in r.json()["message"], r.text
    assert httpx.get(f"{url}/health").status_code == 200


def test_an_upload_part_without_content_type_gets_415(server):
    url, _, _ = server
    png = png_bytes(chest_like(64, 64))
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        + png
        + b"\r\n--XyZ--\r\n"
    )
    r = httpx.post(
        f"{url}/v1/predict", content=body, headers={"content-type": "multipart/form-data; boundary=XyZ"}
    )
    assert r.status_code == 415 and "no Content-Type" in r.json()["message"], r.text
    typed = body.replace(b"\r\n\r\n", b"\r\nContent-Type: image/png\r\n\r\n", 1)
    r = httpx.post(
        f"{url}/v1/predict", content=typed, headers={"content-type": "multipart/form-data; boundary=XyZ"}
    )
    assert r.status_code == 200, r.text


def test_requests_that_are_not_uploads_get_4xx(server):
    url, _, _ = server
    for r, status in (
        (httpx.post(f"{url}/v1/predict", json={"image": "x"}), 415),
        (httpx.post(f"{url}/v1/predict", content=b"\x89PNG", headers={"content-type": "image/png"}), 415),
        (httpx.post(f"{url}/v1/predict", files={"other": ("a.png", b"x", "image/png")}), 422),
        (httpx.post(f"{url}/v1/predict?top=0", files={"file": ("a.png", b"x", "image/png")}), 422),
        (
            httpx.post(
                f"{url}/v1/predict?heatmap=Tumour", files=upload(shared_path("data", "samples", "h0001.png"))
            ),
            400,
        ),
        (httpx.get(f"{url}/static/../../etc/passwd"), 404),
        (httpx.get(f"{url}/v1/nothing"), 404),
    ):
        assert r.status_code == status, (r.request.url, r.status_code, r.text)

    # a body without Content-Length that grows past the limit is cut off with 413
    def chunks():
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="s.png"\r\n\r\n'
        for _ in range(40):
            yield b"\0" * 65536

    r = httpx.post(
        f"{url}/v1/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    assert httpx.get(f"{url}/health").status_code == 200


def test_logs_hold_no_patient_name_or_id(server):
    url, _, records = server
    path = shared_path("data", "samples", DICOM)
    ds = pydicom.dcmread(path)
    name, pid = str(ds.PatientName), str(ds.PatientID)
    assert name and pid
    start = len(records)
    assert httpx.post(f"{url}/v1/predict?heatmap=Effusion", files=upload(path), timeout=30).status_code == 200
    assert (
        httpx.post(
            f"{url}/v1/predict/batch",
            files=[("files", (path.name, path.read_bytes(), "application/dicom"))],
            timeout=30,
        ).status_code
        == 200
    )
    text = "\n".join(r.getMessage() for r in records[start:])
    assert "/v1/predict" in text  # the requests were logged...
    assert name not in text and pid not in text and path.name not in text  # ...without who they were


def test_a_burst_beyond_the_queue_gets_503_with_retry_after(run):
    app = create_app(run, ServeConfig(workers=1, queue=1, max_batch=1))
    service = app.state.service

    def slow(images):
        time.sleep(0.4)
        return service._score(images)

    service.pool = Batcher(slow, workers=1, queue=1, max_batch=1)
    body = png_bytes(chest_like(64, 64))
    results: list[httpx.Response] = []
    with live_server(app) as url:

        def send():
            results.append(
                httpx.post(f"{url}/v1/predict", files={"file": ("a.png", body, "image/png")}, timeout=30)
            )

        threads = [threading.Thread(target=send) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r.status_code for r in results)
        assert 200 in codes and 503 in codes and set(codes) <= {200, 503}, codes
        busy = next(r for r in results if r.status_code == 503)
        assert busy.headers["retry-after"] == "1" and busy.json()["error"] == "overloaded"
        assert httpx.get(f"{url}/health").status_code == 200
        assert (
            httpx.post(f"{url}/v1/predict", files={"file": ("a.png", body, "image/png")}).status_code == 200
        )


def test_api_key_is_required_on_v1_routes_only(run, tmp_path, monkeypatch):
    from cxrkit.serve.app import load_api_key

    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    monkeypatch.setenv("CXR_API_KEY", "from-env")
    assert load_api_key(ServeConfig(api_key_file=str(key_file))) == "s3cret"
    assert load_api_key(ServeConfig()) == "from-env"
    app = create_app(run, ServeConfig(), api_key="s3cret")
    sample = upload(shared_path("data", "samples", "h0001.png"))
    with live_server(app) as url:
        assert httpx.get(f"{url}/v1/model").status_code == 401
        assert httpx.get(f"{url}/v1/model", headers={"X-API-Key": "wrong"}).status_code == 401
        assert httpx.post(f"{url}/v1/predict", files=sample).status_code == 401
        assert (
            httpx.post(f"{url}/v1/predict", files=sample, headers={"X-API-Key": "s3cret"}).status_code == 200
        )
        assert httpx.get(f"{url}/v1/model", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert httpx.get(f"{url}/health").status_code == 200 and httpx.get(f"{url}/").status_code == 200


def test_probe_findings_stay_fixed(server):
    """What a hostile-input probe once got through: each now a JSON 4xx in the one error shape."""
    url, _, _ = server
    png = shared_path("data", "samples", "h0001.png").read_bytes()
    ds = pydicom.dcmread(shared_path("data", "samples", DICOM))
    ds.WindowCenter, ds.WindowWidth = 100, 0
    bad_window = io.BytesIO()
    ds.save_as(bad_window)
    for r, status, code in (
        (httpx.get(f"{url}/static/" + "a" * 300 + ".js"), 404, "not_found"),
        (httpx.get(f"{url}/static/x%22%7D%201.js"), 404, "not_found"),
        (httpx.get(f"{url}/nothing/here"), 404, "not_found"),
        (httpx.delete(f"{url}/v1/predict"), 405, "method_not_allowed"),
        (
            httpx.post(f"{url}/v1/predict", content=b"xx", headers={"content-type": "multipart/form-data"}),
            400,
            "bad_request",
        ),
        (
            httpx.post(
                f"{url}/v1/predict", files={"file": ("d.dcm", bad_window.getvalue(), "application/dicom")}
            ),
            422,
            "unreadable_image",
        ),
    ):
        assert r.status_code == status and r.json()["error"] == code, (r.request.url, r.text)
        assert "\n" not in r.json()["message"] and len(r.json()["message"]) <= 500
    assert "window" in r.json()["message"]
    # a PNG whose name says DICOM is decoded by its content
    assert (
        httpx.post(f"{url}/v1/predict", files={"file": ("x.dcm", png, "application/dicom")}).status_code
        == 200
    )
    assert httpx.request("FOOBAR", f"{url}/health").status_code == 405
    # metrics never carry client text (paths, methods), and stay parseable
    text = httpx.get(f"{url}/metrics").text
    assert "/static/x" not in text and "aaaa" not in text and "FOOBAR" not in text
    for line in text.splitlines():
        assert line.startswith("#") or re.fullmatch(
            r'[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [0-9.e+-]+', line
        ), line


def test_not_assessable_uploads_say_so_and_missing_modality_can_be_accepted(run):
    strict = create_app(run, ServeConfig()).state.service
    with pytest.raises(Exception) as info:
        strict.decode(_dicom_without("Modality"), "m.dcm", "application/dicom")
    assert getattr(info.value, "code", None) == "not_assessable"
    lenient = create_app(run, ServeConfig(accept_missing_modality=True)).state.service
    assert lenient.decode(_dicom_without("Modality"), "m.dcm", "application/dicom").ndim == 2


def test_a_model_that_gives_no_score_answers_422_not_a_json_nan(run):
    service = create_app(run, ServeConfig()).state.service
    probs = np.full(len(run.labels) + 1, np.nan)  # the pool's row: probabilities, then the OOD score
    with pytest.raises(Exception) as info:
        service.result(probs, "x.png", (64, 64), 3)
    assert getattr(info.value, "status", None) == 422 and info.value.code == "not_scored"


def test_an_unexpected_failure_is_a_counted_json_500_and_the_service_lives_on(run, monkeypatch):
    app = create_app(run, ServeConfig())
    service = app.state.service
    monkeypatch.setattr(service, "result", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("bug")))
    sample = upload(shared_path("data", "samples", "h0001.png"))
    with live_server(app) as url:
        r = httpx.post(f"{url}/v1/predict", files=sample, timeout=30)
        assert r.status_code == 500 and r.json() == {
            "error": "internal",
            "message": "internal error (RuntimeError)",
        }
        text = httpx.get(f"{url}/metrics").text
        assert 'cxr_requests_total{method="POST",route="/v1/predict",status="500"} 1' in text
        assert 'cxr_errors_total{route="/v1/predict",code="internal"} 1' in text
        assert httpx.get(f"{url}/health").status_code == 200


def test_a_stalled_body_gets_408(run):
    app = create_app(run, ServeConfig(body_timeout_s=0.5))
    with live_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                b"Content-Length: 100000\r\n\r\n--b\r\n"
            )
            t = time.time()
            answer = ""
            while '"timeout"' not in answer and time.time() - t < 5:  # headers and body may come apart
                chunk = sock.recv(4096).decode()
                if not chunk:
                    break
                answer += chunk
        assert answer.startswith("HTTP/1.1 408") and '"timeout"' in answer and time.time() - t < 5
        assert httpx.get(f"{url}/health").status_code == 200
