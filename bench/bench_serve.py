"""Load test of ``cxr serve`` on loopback: N requests from C concurrent clients, errors and latencies.

Starts ``cxr serve RUN`` on a free port (or uses ``--url``), uploads the ../shared sample X-rays
(PNG, JPEG, DICOM) round-robin from ``--clients`` threads, and prints the error count, p50/p95/max
latency and requests per second, then the server's own /metrics totals.

    python bench/bench_serve.py cxr-out/demo/runs/phantom-cnn --requests 200 --clients 8
    git worktree add /tmp/before <older commit>      # then, both servers in one run:
    python bench/bench_serve.py cxr-out/demo/runs/phantom-cnn --phantoms 50 --baseline-src /tmp/before/src
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
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


def start_server(run: str, engine: str, port: int, src: Path | None = None) -> subprocess.Popen:
    """``cxr serve RUN`` on ``port``; ``src``: the ``src`` folder of another checkout to run instead."""
    cmd = [sys.executable, "-m", "cxrkit.cli", "serve", run, "--port", str(port), "--engine", engine]
    env = dict(os.environ, PYTHONPATH=str(src.resolve())) if src else None
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
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


def phantom_pngs(folder: Path, n: int, side: int) -> list[Path]:
    """``n`` phantom X-rays of ``side`` px written as PNG (the uploads a decoding-bound service sees)."""
    from PIL import Image

    from cxrkit.data import build_dataset

    ds = build_dataset({"source": "phantom", "n": n, "size": side, "seed": 5})
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"phantom-{i:03d}.png" for i in range(n)]
    for i, path in enumerate(paths):
        Image.fromarray(ds.load_image(i)).save(path)
    return paths


def measure(url: str, files: list[Path], args) -> float:
    """Warm up, send the load, print one line and the server's totals; requests/s (exit 1 on errors)."""
    key = os.environ.get("CXR_API_KEY")
    engine = httpx.get(f"{url}/health").json().get("engine")
    load(url, files[:1], 4, 1, key)  # warm-up
    lat, errors, wall = load(url, files, args.requests, args.clients, key)
    ms = 1e3 * np.asarray(lat)
    rate = args.requests / wall
    print(
        f"{args.requests} requests from {args.clients} clients ({len(files)} files round-robin, "
        f"engine {engine}): {len(errors)} errors; latency p50 {np.median(ms):.0f} ms, "
        f"p95 {np.percentile(ms, 95):.0f} ms, max {ms.max():.0f} ms; {rate:.1f} requests/s"
    )
    for why in errors[:5]:
        print("  error:", why)
    health = httpx.get(f"{url}/health").status_code
    totals = [
        line for line in httpx.get(f"{url}/metrics").text.splitlines() if line.startswith("cxr_images_total")
    ]
    print(f"after the load (4 warm-up requests included): /health {health}; " + "; ".join(totals))
    if errors or health != 200:
        raise SystemExit(1)
    return rate


def serve_and_measure(run: str, files: list[Path], args, src: Path | None = None) -> float:
    port = free_port()
    proc = start_server(run, args.engine, port, src)
    try:
        return measure(f"http://127.0.0.1:{port}", files, args)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", help="run folder to serve (omit with --url)")
    parser.add_argument("--url", help="an already running server")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--files", nargs="+", type=Path, help=f"images to send (default: {SAMPLES})")
    parser.add_argument(
        "--phantoms", type=int, default=0, help="send N phantom PNGs of --side px instead (decoding-bound)"
    )
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="another checkout's src/ (e.g. a git worktree of an older commit): serve the run from it "
        "too, in the same run, and print this checkout's requests/s as a ratio to it",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = (
            phantom_pngs(Path(tmp), args.phantoms, args.side)
            if args.phantoms
            else args.files or sorted(SAMPLES.iterdir())
        )
        if args.url:
            measure(args.url.rstrip("/"), files, args)
        elif not args.run:
            parser.error("give a run folder or --url")
        elif args.baseline_src:
            print(f"baseline ({args.baseline_src}):")
            before = serve_and_measure(args.run, files, args, args.baseline_src)
            print("this checkout:")
            after = serve_and_measure(args.run, files, args)
            print(f"requests/s: {after:.1f} vs {before:.1f} = {after / before:.2f}x the baseline")
        else:
            serve_and_measure(args.run, files, args)


if __name__ == "__main__":
    main()
