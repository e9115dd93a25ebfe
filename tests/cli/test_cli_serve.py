"""`cxr serve` from the command line: binds to 127.0.0.1, answers /health, asks the key on /v1, serves the
viewer; a missing export or bad limit is a one-line error."""

import subprocess
import sys
import time

import httpx
from live import free_port

from cxrkit.cli import main


def test_cxr_serve_runs_with_an_api_key_file(exported_run, tmp_path):
    key = tmp_path / "key"
    key.write_text("k-123\n")
    port = free_port()
    cmd = [sys.executable, "-m", "cxrkit.cli", "serve", str(exported_run), "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--api-key-file", str(key)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).json()["engine"] == "onnx":  # auto: exported
                    break
            except httpx.HTTPError:
                assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
                time.sleep(0.2)
        assert httpx.get(f"{url}/v1/model").status_code == 401
        assert httpx.get(f"{url}/v1/model", headers={"X-API-Key": "k-123"}).json()["engine"] == "onnx"
        assert "cxrkit viewer" in httpx.get(f"{url}/").text
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert f"at {url} (X-API-Key required on /v1)" in out and f"viewer {url}/" in out


def test_serve_errors_are_one_line(exported_run, phantom_run, tmp_path, capsys):
    assert main(["serve", str(phantom_run), "--engine", "onnx"]) == 2  # never exported
    assert "cxr export" in capsys.readouterr().err
    assert main(["serve", str(exported_run), "--port", "70000"]) == 2
    assert "serve.port 70000" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.write_text("")
    assert main(["serve", str(exported_run), "--api-key-file", str(empty)]) == 2
    assert "API key file is empty" in capsys.readouterr().err
