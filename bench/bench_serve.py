"""Load test of ``cxr serve`` on loopback: N requests from C concurrent clients, errors and latencies.

Starts ``cxr serve RUN`` on a free port (or uses ``--url``), uploads the ../shared sample X-rays
(PNG, JPEG, DICOM) round-robin from ``--clients`` threads, and prints the error count, p50/p95/max
latency and requests per second, then the server's own /metrics totals.

    python bench/bench_serve.py cxr-out/demo/runs/phantom-cnn --requests 200 --clients 8
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

SAMPLES = (
    Path(os.environ.get("CXR_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data" / "samples"
)
TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".dcm": "application/dicom"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: str, engine: str, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cxrkit.cli", "serve", run, "--port", str(port), "--engine", engine]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"cxr serve exited with {proc.returncode}: {' '.join(cmd)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("cxr serve did not answer /health within 120 s")


def load(url: str, files: list[Path], n: int, clients: int, key: str | None) -> tuple[list, list, float]:
    """Send ``n`` uploads from ``clients`` threads; (latencies, errors, wall seconds)."""
    bodies = [(f.name, f.read_bytes(), TYPES.get(f.suffix, "application/octet-stream")) for f in files]
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(n))
    headers = {"X-API-Key": key} if key else {}

    def client() -> None:
        with httpx.Client(timeout=60, headers=headers) as http:
            while True:
                with lock:
                    k = next(counter, None)
                if k is None:
                    return
                t = time.perf_counter()
                try:
                    r = http.post(f"{url}/v1/predict", files={"file": bodies[k % len(bodies)]})
                    ok, why = r.status_code == 200, f"HTTP {r.status_code}: {r.text[:120]}"
                except httpx.HTTPError as err:
                    ok, why = False, repr(err)
                with lock:
                    latencies.append(time.perf_counter() - t)
                    if not ok:
                        errors.append(why)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", help="run folder to serve (omit with --url)")
    parser.add_argument("--url", help="an already running server")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--files", nargs="+", type=Path, help=f"images to send (default: {SAMPLES})")
    args = parser.parse_args()
    files = args.files or sorted(SAMPLES.iterdir())
    proc = None
    if args.url:
        url = args.url.rstrip("/")
    elif args.run:
        port = free_port()
        proc = start_server(args.run, args.engine, port)
        url = f"http://127.0.0.1:{port}"
    else:
        parser.error("give a run folder or --url")
    try:
        engine = httpx.get(f"{url}/health").json().get("engine")
        load(url, files[:1], 4, 1, os.environ.get("CXR_API_KEY"))  # warm-up
        lat, errors, wall = load(url, files, args.requests, args.clients, os.environ.get("CXR_API_KEY"))
        ms = 1e3 * np.asarray(lat)
        print(
            f"{args.requests} requests from {args.clients} clients ({len(files)} files round-robin, "
            f"engine {engine}): {len(errors)} errors; latency p50 {np.median(ms):.0f} ms, "
            f"p95 {np.percentile(ms, 95):.0f} ms, max {ms.max():.0f} ms; "
            f"{args.requests / wall:.1f} requests/s"
        )
        for why in errors[:5]:
            print("  error:", why)
        health = httpx.get(f"{url}/health").status_code
        totals = [
            line
            for line in httpx.get(f"{url}/metrics").text.splitlines()
            if line.startswith("cxr_images_total")
        ]
        print(f"after the load (4 warm-up requests included): /health {health}; " + "; ".join(totals))
        if errors or health != 200:
            raise SystemExit(1)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
