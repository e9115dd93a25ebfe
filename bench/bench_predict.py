"""`cxr predict` on folders of 1024 px PNGs and JPEGs against the engine alone on pre-decoded arrays.

Three figures per engine and format, in one run: the engine scoring images that are already decoded
and resized (the ceiling), ``predict_files`` reading then scoring (``workers=0``, what cxr predict
did before), and ``predict_files`` with reading in threads overlapped with scoring (the default).
Each is a ratio to the engine alone (goal: >= 0.80). Before that, a decoder table: decode + resize to
the model's size per image for each installed decoder, as a ratio to Pillow, with the largest pixel
difference from Pillow's full decode (what training saw). The run is DenseNet-121 at 224 px with
random weights (speed does not depend on them); the images are 1024 px phantoms, or ``--folder``.

    python bench/bench_predict.py                                   # torch and openvino, 200 images
    python bench/bench_predict.py --engines openvino-int8 --n 400
    python bench/bench_predict.py --folder ../shared/data/kermany-pneumonia/test --engines openvino
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cxrkit.data import build_dataset
from cxrkit.data.decode import decode_image_bytes
from cxrkit.data.folder import list_images
from cxrkit.data.transforms import InputSpec, prepare_image
from cxrkit.run.model import RunModel
from cxrkit.run.untrained import make_untrained_run
from cxrkit.workflows.export import export_run
from cxrkit.workflows.predict import predict_files


def write_folders(root: Path, n: int, side: int) -> dict[str, Path]:
    """``n`` phantom X-rays at ``side`` px as PNG (lossless) and as JPEG (quality 95), one folder each."""
    ds = build_dataset({"source": "phantom", "n": n, "size": side, "seed": 11})
    out = {"png": root / "png", "jpeg": root / "jpeg"}
    for d in out.values():
        d.mkdir()
    for i in range(n):
        im = Image.fromarray(ds.load_image(i))
        im.save(out["png"] / f"{i:05d}.png")
        im.save(out["jpeg"] / f"{i:05d}.jpg", quality=95)
    return out


def decoders(size: int) -> dict:
    """Decode + resize functions (bytes -> (S, S) uint8) for every decoder installed here."""
    spec = InputSpec(size)
    out = {"pillow": lambda b: prepare_image(decode_image_bytes(b), spec)}

    def draft(b: bytes) -> np.ndarray:  # JPEG DCT scaling to >= 2x the model's size, then the usual resize
        with Image.open(io.BytesIO(b)) as im:
            if im.format == "JPEG":
                im.draft("L", (2 * size, 2 * size))
            im.load()
            return prepare_image(np.asarray(im.convert("L")), spec)

    out["pillow draft (JPEG)"] = draft
    try:
        import cv2

        cv2.setNumThreads(1)
        out["opencv"] = lambda b: prepare_image(
            cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_GRAYSCALE), spec
        )
    except ImportError:
        print("note: opencv-python-headless not installed: its row is skipped")
    try:
        import simplejpeg

        def sj(b: bytes) -> np.ndarray:
            if not simplejpeg.is_jpeg(b):
                return out["pillow"](b)
            return prepare_image(simplejpeg.decode_jpeg(b, colorspace="GRAY")[..., 0], spec)

        out["simplejpeg (JPEG)"] = sj
    except ImportError:
        print("note: simplejpeg not installed: its row is skipped")
    return out


def decoder_table(folders: dict[str, Path], size: int, limit: int = 40) -> None:
    """ms per image, ratio to Pillow and max |Δ pixel| against Pillow's full decode, per format."""
    fns = decoders(size)
    print(f"\ndecode + resize to {size} px, one thread ({limit} images a format)")
    print(f"{'format':7s} {'decoder':22s} {'ms/img':>8s} {'x pillow':>9s} {'max|Δpx|':>9s}")
    for fmt, folder in folders.items():
        blobs = [p.read_bytes() for p in list_images(folder)[:limit]]
        ref = [fns["pillow"](b) for b in blobs]
        base = None
        for name, fn in fns.items():
            fn(blobs[0])
            t0 = time.perf_counter()
            got = [fn(b) for b in blobs]
            ms = 1e3 * (time.perf_counter() - t0) / len(blobs)
            base = base or ms
            diff = max(int(np.abs(a.astype(np.int16) - r).max()) for a, r in zip(got, ref, strict=True))
            print(f"{fmt:7s} {name:22s} {ms:8.2f} {base / ms:8.2f}x {diff:9d}")


def timed(fn, repeats: int = 2) -> float:
    """Best wall time of ``repeats`` calls (the first call also warms caches)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_engine(run: RunModel, engine: str, folder: Path, batch: int) -> dict[str, float]:
    """images/s of the engine alone, predict reading then scoring, and predict with reading overlapped."""
    files = list_images(folder)
    prepared = run.prepare(files)  # decoded once, outside the clock: the engine's ceiling
    n = len(files)

    def engine_alone():
        run.probs(prepared.images, batch, engine=engine)

    def predict(workers: int):
        return lambda: predict_files(
            run,
            [folder],
            batch_size=batch,
            engine=engine,
            progress=False,
            workers=workers,
            log=lambda m: None,
        )

    out = {"engine alone": n / timed(engine_alone)}
    out["predict, read then score"] = n / timed(predict(0))
    out["predict, reading overlapped"] = n / timed(predict(os.cpu_count() or 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", nargs="+", default=["torch", "openvino"])
    parser.add_argument("--model", default="densenet121")
    parser.add_argument("--size", type=int, default=224, help="model input size")
    parser.add_argument("--n", type=int, default=200, help="images per format")
    parser.add_argument("--side", type=int, default=1024, help="side of the generated images")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--folder", type=Path, help="a folder of real images instead of phantoms")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folders = {"folder": args.folder} if args.folder else write_folders(root, args.n, args.side)
        decoder_table(folders, args.size)
        run_dir = make_untrained_run(root / "run", model_name=args.model, size=args.size)
        exported = [e for e in args.engines if e != "torch"]
        if exported:
            sample = list_images(next(iter(folders.values())))[:16]
            export_run(
                run_dir,
                images=sample,
                openvino=any(e.startswith("openvino") for e in exported),
                log=lambda m: None,
            )
        print(
            f"\n{args.model} at {args.size} px, batch {args.batch}, {os.cpu_count()} CPU threads; "
            f"images/s (ratio to the engine alone on pre-decoded arrays)"
        )
        for engine in args.engines:
            run = RunModel.load(run_dir, "cpu", engine)
            for fmt, folder in folders.items():
                figures = bench_engine(run, engine, folder, args.batch)
                base = figures["engine alone"]
                cells = "  ".join(f"{k} {v:7.1f} ({v / base:.2f}x)" for k, v in figures.items())
                print(f"{engine:14s} {fmt:6s} {cells}")


if __name__ == "__main__":
    main()
