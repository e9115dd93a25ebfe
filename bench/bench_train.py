"""Training throughput (forward + backward + Adam step) of registered models at 64, 128 and 224 px.

Random 1-channel batches, so only the model's cost is measured; each model is also shown as a
ratio to resnet18 at the same size, measured in the same run (the machine is noisy).

    python bench/bench_train.py                         # every registered model, 64/128/224 px
    python bench/bench_train.py --models cnn4_32_64_128_256_bn resnet18 --sizes 64 --steps 5
    python bench/bench_train.py --native --batch 4      # transformer and other timm families,
                                                        # xrv and Rad-DINO, each at its native size
    python bench/bench_train.py --device cuda --precision --sizes 224 --batch 64
                                                        # fp32 vs bf16 autocast vs bf16 + channels-last
                                                        # (what train.amp and train.channels_last do)
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from cxrkit.models import create_model, list_models

PEER = "resnet18"
# one small model per family, at the input size its weights were trained at
NATIVE = {
    "timm:vit_tiny_patch16_224": 224,
    "timm:deit_small_patch16_224": 224,
    "timm:eva02_tiny_patch14_224": 224,
    "timm:swin_tiny_patch4_window7_224": 224,
    "timm:convnext_atto": 224,
    "timm:efficientnet_b0": 224,
    "timm:regnetx_002": 224,
    "timm:maxvit_pico_rw_256": 256,
    "timm:legacy_xception": 299,
    "timm:inception_v3": 299,
    "xrv:densenet121-res224-all": 224,
    "xrv:resnet50-res512-all": 512,
    "rad-dino": 518,
}


def images_per_second(
    name: str, size: int, batch: int, steps: int, device: torch.device, amp: bool = False, cl: bool = False
) -> float:
    """Simple rate: ``steps`` timed training steps after one warm-up step (``amp``: bf16 autocast as
    train.amp does; ``cl``: channels-last memory format as train.channels_last does)."""
    torch.manual_seed(0)
    model = create_model(name, 15).to(device).train()
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 1, size, size, device=device)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, 15, device=device) < 0.1).float()
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(x).float(), y)
        loss.backward()
        opt.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--sizes", nargs="*", type=int, default=[64, 128, 224])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--native", action="store_true", help="the NATIVE families at their own input sizes")
    ap.add_argument("--precision", action="store_true", help="each model in fp32, bf16, bf16 + channels-last")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.native:
        native(args.batch, args.steps, device)
        return
    if args.precision:
        precision(args.models or list_models(), args.sizes, args.batch, args.steps, device)
        return
    names = args.models or list_models()
    names = [PEER, *(n for n in names if n != PEER)]  # the peer is measured first
    where = (
        torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"{platform.machine()} CPU, {os.cpu_count()} cores"
    )
    print(
        f"training img/s, batch {args.batch}, {args.steps} steps after 1 warm-up, {where}, "
        f"torch {torch.__version__}"
    )
    print(f"{'model':24s}" + "".join(f"{f'{s}px':>10s}{f'/{PEER}':>11s}" for s in args.sizes))
    rates = {}
    for name in names:
        cells = ""
        for s in args.sizes:
            try:
                r = images_per_second(name, s, args.batch, args.steps, device)
            except RuntimeError as err:  # e.g. a model whose pooling needs a larger input
                r = float("nan")
                print(f"  {name} at {s}px: {str(err).splitlines()[0][:80]}")
            rates[(name, s)] = r
            cells += f"{r:10.1f}{r / rates[(PEER, s)]:10.2f}x"
        print(f"{name:24s}{cells}", flush=True)


def precision(names: list[str], sizes: list[int], batch: int, steps: int, device: torch.device) -> None:
    """Each model's fp32 rate, and bf16 autocast (+ channels-last) as ratios to it, in the same run."""
    print(f"training img/s by precision, batch {batch}, {steps} steps after 1 warm-up, {_where(device)}")
    print(f"{'model':24s}{'size':>6s}{'fp32 img/s':>12s}{'bf16':>8s}{'bf16+CL':>9s}")
    for name in names:
        for s in sizes:
            try:
                base = images_per_second(name, s, batch, steps, device)
                bf = images_per_second(name, s, batch, steps, device, amp=True)
                cl = images_per_second(name, s, batch, steps, device, amp=True, cl=True)
            except RuntimeError as err:
                print(f"  {name} at {s}px: {str(err).splitlines()[0][:80]}")
                continue
            print(f"{name:24s}{s:6d}{base:12.1f}{bf / base:7.2f}x{cl / base:8.2f}x", flush=True)


def _where(device: torch.device) -> str:
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.machine()} CPU"
    return f"{name}, {os.cpu_count()} cores, torch {torch.__version__}"


def native(batch: int, steps: int, device: torch.device) -> None:
    """One model per family at its native size, each against resnet18 at that size in this run."""
    print(f"training img/s at native size, batch {batch}, {steps} steps after 1 warm-up, {device}")
    print(f"{'model':36s}{'size':>6s}{'img/s':>9s}{PEER + ' img/s':>15s}{'ratio':>8s}")
    peer: dict[int, float] = {}
    for name, size in NATIVE.items():
        if size not in peer:
            peer[size] = images_per_second(PEER, size, batch, steps, device)
        try:
            r = images_per_second(name, size, batch, steps, device)
        except Exception as err:  # weights that cannot be fetched offline (xrv, rad-dino): say so, go on
            print(f"{name:36s}{size:6d}  not measured: {str(err).splitlines()[0][:90]}", flush=True)
            continue
        print(f"{name:36s}{size:6d}{r:9.2f}{peer[size]:15.2f}{r / peer[size]:7.2f}x", flush=True)


if __name__ == "__main__":
    main()
