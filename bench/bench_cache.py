"""Epoch throughput: cxrkit's cache vs decoding the source PNGs every epoch vs torchxrayvision.

Reads the same images three ways through a torch DataLoader and prints images/second and the
ratios against the cache, measured in one run (the machine is noisy; compare ratios, not rates).

    python bench/bench_cache.py                       # the 1,000 real 64px NIH images in ../shared
    python bench/bench_cache.py --upscale 1024 --size 224
        # the same images written as 1024px PNGs first, like the NIH originals, read at 224px

Environment: CXRKIT_SHARED points at the shared folder when it is not ../shared.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cxrkit.data.cache import CachedDataset, prepare_cache
from cxrkit.data.nih import NIHDataset, shipped_data_file
from cxrkit.data.transforms import resize_square

SHARED = Path(os.environ.get("CXRKIT_SHARED", Path(__file__).resolve().parents[2] / "shared"))


class ToTensor:
    """uint8 (H, W) -> float32 (1, S, S) in [0, 1], resized by pad: the work a training epoch does."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, img: np.ndarray):
        import torch

        if img.shape != (self.size, self.size):
            img, _ = resize_square(img, self.size, "pad")
        return torch.from_numpy(img).unsqueeze(0).float().div_(255.0)


def _xrv_sample(sample: dict) -> dict:
    return {"image": sample["img"], "labels": sample["lab"]}


def epoch_rate(dataset, batch: int, workers: int, epochs: int, collate=None) -> float:
    """Best images/second over ``epochs`` full passes of a shuffled DataLoader."""
    import torch
    from torch.utils.data import DataLoader

    best = 0.0
    for e in range(epochs):
        g = torch.Generator().manual_seed(e)
        loader = DataLoader(
            dataset,
            batch_size=batch,
            shuffle=True,
            num_workers=workers,
            generator=g,
            collate_fn=collate,
            persistent_workers=False,
        )
        t = time.perf_counter()
        n = 0
        for b in loader:
            n += len(b["image"])
        best = max(best, n / (time.perf_counter() - t))
    return best


def batched_cache_rate(cache: CachedDataset, batch: int, epochs: int) -> float:
    """Images/second reading shuffled batches straight from the memory map (no per-item calls)."""
    import torch

    best = 0.0
    n = len(cache)
    for e in range(epochs):
        order = np.random.default_rng(e).permutation(n)
        t = time.perf_counter()
        for s in range(0, n, batch):
            idx = np.sort(order[s : s + batch])
            torch.from_numpy(cache.images[idx]).unsqueeze(1).float().div_(255.0)
        best = max(best, n / (time.perf_counter() - t))
    return best


class XrvAdapter:
    """torchxrayvision's NIH_Dataset as a map-style dataset yielding {'image', 'labels'}."""

    def __init__(self, ds) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict:
        return _xrv_sample(self.ds[i])


def make_xrv(images: Path, ids: list[str], size: int, tmp: Path):
    import torchxrayvision as xrv

    csv = pd.read_csv(shipped_data_file("Data_Entry_2017_v2020.csv.gz"))
    csv[csv["Image Index"].isin(set(ids))].to_csv(tmp / "Data_Entry_subset.csv", index=False)
    from torchvision import transforms

    tf = transforms.Compose([xrv.datasets.XRayCenterCrop(), xrv.datasets.XRayResizer(size, engine="cv2")])
    try:
        import cv2  # noqa: F401
    except ImportError:
        tf = transforms.Compose([xrv.datasets.XRayCenterCrop(), xrv.datasets.XRayResizer(size)])
    return XrvAdapter(
        xrv.datasets.NIH_Dataset(
            imgpath=str(images),
            csvpath=str(tmp / "Data_Entry_subset.csv"),
            views=["PA", "AP"],
            unique_patients=False,
            transform=tf,
        )
    )


def upscale_copies(src: Path, dst: Path, size: int) -> Path:
    """Write each PNG again at ``size`` px (grey, as the NIH originals) to emulate their decode cost."""
    from PIL import Image

    dst.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for p in sorted(src.glob("*.png")):
        img = np.asarray(
            Image.open(p).convert("L").resize((size, size), Image.Resampling.BICUBIC), dtype=np.int16
        )
        img = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(
            np.uint8
        )  # film grain, as real X-rays
        Image.fromarray(img).save(dst / p.name)
    return dst


def main() -> None:
    logging.getLogger("cxrkit").setLevel(logging.ERROR)  # the subset's "images not in folder" note
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, default=SHARED / "data" / "nih14-64px" / "images")
    ap.add_argument("--size", type=int, default=64, help="training image size")
    ap.add_argument("--upscale", type=int, default=0, help="first rewrite the PNGs at this size (e.g. 1024)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2, help="passes per reader; the best is reported")
    ap.add_argument("--no-xrv", action="store_true", help="skip torchxrayvision")
    args = ap.parse_args()
    if not args.images.exists():
        raise SystemExit(f"images not found: {args.images} (set CXRKIT_SHARED or pass --images)")

    tmp = Path(tempfile.mkdtemp(prefix="cxrbench-"))
    try:
        images = args.images
        if args.upscale:
            t = time.perf_counter()
            images = upscale_copies(images, tmp / "png", args.upscale)
            print(f"wrote {args.upscale}px PNG copies in {time.perf_counter() - t:.1f} s")
        src = NIHDataset(images)
        t = time.perf_counter()
        res = prepare_cache(src, tmp / "cache", size=args.size, progress=False)
        build = time.perf_counter() - t
        t = time.perf_counter()
        again = prepare_cache(NIHDataset(images), tmp / "cache", size=args.size, progress=False)
        reuse = time.perf_counter() - t
        assert again.reused
        cache = CachedDataset(tmp / "cache")
        cache.transform = ToTensor(args.size)
        src.transform = ToTensor(args.size)

        print(
            f"{len(src)} images from {images} -> {args.size}px; batch {args.batch}, "
            f"{args.workers} loader workers, best of {args.epochs} epochs; "
            f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
        )
        print(
            f"cache build: {build:.2f} s ({res.n_images / build:,.0f} img/s); "
            f"reuse check incl. metadata load: {reuse:.3f} s"
        )
        rates = {
            "cxrkit cache (memmap, DataLoader)": epoch_rate(cache, args.batch, args.workers, args.epochs),
            "cxrkit cache (batched slicing)": batched_cache_rate(cache, args.batch, args.epochs),
            "decode source PNGs every epoch": epoch_rate(src, args.batch, args.workers, args.epochs),
        }
        if not args.no_xrv:
            xrv_ds = make_xrv(images, list(src.meta["image_id"]), args.size, tmp)
            rates["torchxrayvision NIH_Dataset"] = epoch_rate(xrv_ds, args.batch, args.workers, args.epochs)
        dec = rates["decode source PNGs every epoch"]
        xrv_rate = rates.get("torchxrayvision NIH_Dataset", float("nan"))
        print(f"{'reader':38s} {'img/s':>10s} {'vs decode PNGs':>15s} {'vs torchxrayvision':>19s}")
        for name, r in rates.items():
            print(f"{name:38s} {r:10,.0f} {r / dec:14.1f}x {r / xrv_rate:18.1f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
