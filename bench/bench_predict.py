"""`cxr predict` on folders of 1024 px PNGs, JPEGs and DICOMs against the engine alone on pre-decoded arrays.

First a decoder table: decode + resize to the model's size per image for each installed decoder and
format, as a ratio to the format's first row, with the largest pixel difference from it (what
training saw for PNG/JPEG; pydicom's own choice for DICOM): this is how cxrkit's decoders were
picked. Then three figures per engine and format, in one run: the engine scoring images that are
already decoded and resized (the ceiling), ``predict_files`` reading then scoring (``workers=0``),
and ``predict_files`` with reading in threads overlapped with scoring (the default; for PNG also
with ``CXRKIT_OPENCV=0``), each as a ratio to the engine alone (goal: >= 0.80). The run is
DenseNet-121 at 224 px with random weights (speed does not depend on them); the images are 1024 px
phantoms written as PNG, JPEG, DICOM (16-bit, uncompressed) and DICOM JPEG baseline, or ``--folder``.

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
from cxrkit.data.decode import decode_bytes, opencv, scale_to_uint8
from cxrkit.data.folder import list_images
from cxrkit.data.transforms import InputSpec, prepare_image
from cxrkit.run.inputs import prepare_one
from cxrkit.run.model import RunModel
from cxrkit.run.untrained import make_untrained_run
from cxrkit.workflows.export import export_run
from cxrkit.workflows.predict import predict_files


def write_folders(root: Path, n: int, side: int) -> dict[str, Path]:
    """``n`` phantom X-rays at ``side`` px in four forms, one folder each: PNG (lossless), JPEG
    (quality 95), DICOM DX uncompressed (12 bits in 16, as detectors write) and DICOM JPEG baseline."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    ds = build_dataset({"source": "phantom", "n": n, "size": side, "seed": 11})
    out = {k: root / k for k in ("png", "jpeg", "dicom", "dicom-jpeg")}
    for d in out.values():
        d.mkdir()
    for i in range(n):
        img = ds.load_image(i)
        im = Image.fromarray(img)
        im.save(out["png"] / f"{i:05d}.png")
        im.save(out["jpeg"] / f"{i:05d}.jpg", quality=95)
        dcm = dx_dataset(img.astype(np.uint16) * 16, bits_stored=12)
        dcm.save_as(out["dicom"] / f"{i:05d}.dcm", enforce_file_format=True)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=95)
        dcm = dx_dataset(img, bits_stored=8)
        dcm.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        dcm.PixelData = encapsulate([buf.getvalue()])
        dcm["PixelData"].VR = "OB"
        dcm.save_as(out["dicom-jpeg"] / f"{i:05d}.dcm", enforce_file_format=True)
    return out


def dx_dataset(pixels: np.ndarray, bits_stored: int):
    """A minimal DX DICOM dataset (explicit VR little endian) holding ``pixels``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ViewPosition, ds.PatientID = "DX", "PA", "BENCH"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = pixels.dtype.itemsize * 8, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    return ds


def with_opencv(flag: str, fn):
    """``fn`` run with ``CXRKIT_OPENCV=flag`` (cxrkit's read path with its OpenCV fast path on or off)."""

    def run(*args):
        before = os.environ.get("CXRKIT_OPENCV")
        os.environ["CXRKIT_OPENCV"] = flag
        try:
            return fn(*args)
        finally:
            if before is None:
                del os.environ["CXRKIT_OPENCV"]
            else:
                os.environ["CXRKIT_OPENCV"] = before

    return run


def decoders(size: int) -> dict[str, dict]:
    """Per format, decode + resize functions (bytes -> (S, S) uint8) for every decoder installed here.

    The first of each format is the reference (Pillow for images, pydicom's own choice for DICOM);
    "cxrkit" rows are ``decode_bytes`` itself, what cxr predict, the service and the node call.
    """
    spec = InputSpec(size)

    def pil(b: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(b)) as im:
            return prepare_image(np.asarray(im.convert("L")), spec)

    def draft(b: bytes) -> np.ndarray:  # JPEG DCT scaling to >= 2x the model's size, then the usual resize
        with Image.open(io.BytesIO(b)) as im:
            im.draft("L", (2 * size, 2 * size))
            im.load()
            return prepare_image(np.asarray(im.convert("L")), spec)

    def cxrkit(b: bytes) -> np.ndarray:
        return prepare_image(decode_bytes(b, "x.dcm"), spec)

    images = {"pillow": pil}
    jpeg = {"pillow": pil, "pillow draft": draft}
    try:
        import cv2

        cv2.setNumThreads(1)
        ocv = lambda b: prepare_image(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_GRAYSCALE), spec)  # noqa: E731
        images["opencv"] = jpeg["opencv"] = ocv
    except ImportError:
        print("note: opencv-python-headless (extra `fast`) not installed: its rows are skipped")
    try:
        import simplejpeg

        jpeg["simplejpeg"] = lambda b: prepare_image(
            simplejpeg.decode_jpeg(b, colorspace="GRAY")[..., 0], spec
        )
    except ImportError:
        print("note: simplejpeg not installed: its row is skipped")
    try:
        import pyspng

        images["pyspng"] = lambda b: prepare_image(pyspng.load(b), spec)
    except ImportError:
        print("note: pyspng not installed: its row is skipped")
    images["cxrkit, OpenCV off"] = with_opencv("0", cxrkit)
    images["cxrkit"] = with_opencv("1", cxrkit)
    jpeg["cxrkit"] = cxrkit

    def plugin(name: str, table: bool = True):
        """pydicom's pixels by plugin ``name`` ("": its own choice), then min-max to 0..255 by cxrkit's
        table (``table``) or by the float64 formula over every pixel (what cxrkit did before)."""

        def read(b: bytes) -> np.ndarray:
            import pydicom

            ds = pydicom.dcmread(io.BytesIO(b))
            ds.pixel_array_options(decoding_plugin=name)
            arr = ds.pixel_array
            if table:
                return prepare_image(scale_to_uint8(arr), spec)
            a = arr.astype(np.float64)
            lo, hi = a.min(), a.max()
            return prepare_image(np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8), spec)

        return read

    dicom_jpeg = {"pydicom's choice": plugin("", table=False)}
    for name in ("pylibjpeg", "pillow", "gdcm"):
        dicom_jpeg[f"pydicom {name} plugin"] = plugin(name)
    dicom_jpeg["cxrkit"] = cxrkit
    return {
        "png": images,
        "jpeg": jpeg,
        "dicom": {"pydicom, float64 min-max": plugin("", table=False), "cxrkit": cxrkit},
        "dicom-jpeg": dicom_jpeg,
    }


def decoder_table(folders: dict[str, Path], size: int, limit: int = 40) -> None:
    """ms per image, ratio to the format's first decoder and max |Δ pixel| against it."""
    table = decoders(size)
    print(f"\ndecode + resize to {size} px, one thread ({limit} images a format)")
    print(f"{'format':11s} {'decoder':24s} {'ms/img':>8s} {'x first':>8s} {'max|Δpx|':>9s}")
    for fmt, folder in folders.items():
        blobs = [p.read_bytes() for p in list_images(folder)[:limit]]
        fns = table.get(fmt, table["png"])
        ref, base = None, None
        for name, fn in fns.items():
            try:
                fn(blobs[0])
            except Exception as err:  # a plugin that is not installed, a format a decoder does not read
                print(f"{fmt:11s} {name:24s} skipped: {(str(err).splitlines() or [''])[0][:70]}")
                continue
            t0 = time.perf_counter()
            got = [fn(b) for b in blobs]
            ms = 1e3 * (time.perf_counter() - t0) / len(blobs)
            ref, base = ref or got, base or ms
            diff = max(int(np.abs(a.astype(np.int16) - r).max()) for a, r in zip(got, ref, strict=True))
            print(f"{fmt:11s} {name:24s} {ms:8.2f} {base / ms:7.2f}x {diff:9d}")


def read_ms(folder: Path, spec: InputSpec, limit: int = 40) -> float:
    """ms per image of ``prepare_one`` (what every scoring path runs per file), one thread."""
    files = list_images(folder)[:limit]
    prepare_one(str(files[0]), files[0], spec)
    t0 = time.perf_counter()
    for path in files:
        prepare_one(str(path), path, spec)
    return 1e3 * (time.perf_counter() - t0) / len(files)


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
    out["read then score"] = n / timed(predict(0))
    out["overlapped"] = n / timed(predict(os.cpu_count() or 1))
    if opencv() is not None and folder.name == "png":  # the same with OpenCV's PNG reading off
        out["overlapped, OpenCV off"] = n / timed(with_opencv("0", predict(os.cpu_count() or 1)))
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
        spec = RunModel.load(run_dir, "cpu", "torch").spec
        reading = {fmt: read_ms(folder, spec) for fmt, folder in folders.items()}
        cores = os.cpu_count() or 1
        print(
            "\ncxrkit's whole read path (decode, assessability checks, resize), one thread: "
            + ", ".join(f"{fmt} {ms:.2f} ms/img" for fmt, ms in reading.items())
        )
        print(
            f"\n{args.model} at {args.size} px, batch {args.batch}, {cores} CPU threads; images/s (ratio "
            "to the engine alone on pre-decoded arrays); ceiling: the ratio if reading and inference "
            "shared the cores perfectly, 1 / (1 + read CPU time / engine CPU time)"
        )
        for engine in args.engines:
            run = RunModel.load(run_dir, "cpu", engine)
            for fmt, folder in folders.items():
                figures = bench_engine(run, engine, folder, args.batch)
                base = figures["engine alone"]
                ceiling = 1 / (1 + reading[fmt] * base / (1e3 * cores))
                cells = "  ".join(f"{k} {v:7.1f} ({v / base:.2f}x)" for k, v in figures.items())
                print(f"{engine:14s} {fmt:10s} {cells}  ceiling {ceiling:.2f}x")


if __name__ == "__main__":
    main()
