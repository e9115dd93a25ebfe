"""CPU inference engines side by side: PyTorch eager and channels-last, ONNX Runtime and OpenVINO fp32/int8.

For DenseNet-121 at 224 px and the small CNN recipe (cnn4_32_64_128_256_bn at 64 px): latency at
batch 1 (p50/p95 over repeated single images) and throughput at batch 32, each engine's ratio
against eager in the same run (the machine is noisy; ratios are what transfer). Weights are random
(speed does not depend on them); int8 ranges are calibrated on phantom images. OpenVINO (the optional
extra .[openvino]) runs with strict float32 for its float layers, as ``cxr`` does. ``--profile`` adds
each runtime's per-operator time split at batch 1 (ONNX Runtime int8 before, OpenVINO int8 after).

    python bench/bench_infer.py                 # both models
    python bench/bench_infer.py --models small --repeats 200
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from cxrkit.data import build_dataset
from cxrkit.data.transforms import InputSpec, prepare_image, to_model_input
from cxrkit.models import create_model
from cxrkit.run.onnx import OnnxEngine, export_onnx, quantize_int8, session_options

MODELS = {"densenet": ("densenet121", 224), "small": ("cnn4_32_64_128_256_bn", 64)}


def flops_per_image(model: torch.nn.Module, size: int) -> float:
    """2 x multiply-accumulates of every convolution and linear layer for one (1, 1, S, S) input."""
    total = 0.0

    def conv(m, _inp, out):
        nonlocal total
        k = m.weight[0].numel()  # in/groups * kh * kw
        total += 2.0 * k * out.numel()

    def linear(m, _inp, out):
        nonlocal total
        total += 2.0 * m.in_features * out.numel()

    hooks = [
        m.register_forward_hook(conv if isinstance(m, torch.nn.Conv2d) else linear)
        for m in model.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
    ]
    with torch.no_grad():
        model(torch.rand(1, 1, size, size))
    for h in hooks:
        h.remove()
    return total


def images(size: int, n: int) -> np.ndarray:
    """``n`` phantom X-rays prepared at ``size`` px (uint8)."""
    ds = build_dataset({"source": "phantom", "n": n, "size": 128, "seed": 3})
    return np.stack([prepare_image(ds.load_image(i), InputSpec(size)) for i in range(n)])


def timed(fn, batch: np.ndarray, repeats: int, warmup: int = 3) -> np.ndarray:
    """Seconds of each of ``repeats`` calls of ``fn(batch)`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn(batch)
    out = np.empty(repeats)
    for k in range(repeats):
        t = time.perf_counter()
        fn(batch)
        out[k] = time.perf_counter() - t
    return out


def torch_engine(model: torch.nn.Module, channels_last: bool):
    net = model.to(memory_format=torch.channels_last) if channels_last else model

    @torch.no_grad()
    def run(batch: np.ndarray) -> np.ndarray:
        x = to_model_input(batch)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return net(x).numpy()

    return run


def profile_ops(path: Path, batch: np.ndarray, repeats: int) -> list[tuple[str, float]]:
    """ONNX Runtime's own profile: share of kernel time by operator type."""
    import onnxruntime as ort

    opts = session_options()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(path.with_suffix(""))
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = batch[:, None].astype(np.float32) / 255.0
    for _ in range(repeats):
        sess.run(None, {sess.get_inputs()[0].name: x})
    trace = json.loads(Path(sess.end_profiling()).read_text())
    by_op: dict[str, float] = defaultdict(float)
    for ev in trace:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            by_op[ev["args"].get("op_name", "?")] += ev["dur"]
    total = sum(by_op.values()) or 1.0
    return sorted(((op, t / total) for op, t in by_op.items()), key=lambda x: -x[1])


def profile_openvino(path: Path, batch: np.ndarray, repeats: int) -> list[tuple[str, float]]:
    """OpenVINO's own per-node counters: share of time by operator type (with the kernel it chose)."""
    import openvino as ov

    from cxrkit.run.engine_io import model_input
    from cxrkit.run.openvino import compile_options

    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(str(path)), "CPU", {**compile_options(), "PERF_COUNT": True}
    )
    request = compiled.create_infer_request()
    by_op: dict[str, float] = defaultdict(float)
    for _ in range(repeats):
        request.infer({0: model_input(batch)})
        for node in request.profiling_info:
            by_op[f"{node.node_type}[{node.exec_type}]"] += node.real_time.total_seconds()
    total = sum(by_op.values()) or 1.0
    return sorted(((op, t / total) for op, t in by_op.items()), key=lambda x: -x[1])


def openvino_engines(fp32: Path, calibration: np.ndarray) -> dict:
    """OpenVINO fp32 and NNCF int8 engines from an ONNX file; empty (with a note) without the extra."""
    from cxrkit.run.openvino import OpenVinoEngine, export_openvino, has_openvino, quantize_openvino

    if not has_openvino():
        print("note: openvino not installed (pip install -e '.[openvino]'): OpenVINO rows skipped")
        return {}
    xml = export_openvino(fp32, fp32.with_suffix(".xml"))
    t0 = time.perf_counter()
    int8 = quantize_openvino(xml, fp32.with_name("m.int8.xml"), calibration)
    print(f"NNCF int8 quantization: {time.perf_counter() - t0:.0f} s on {len(calibration)} images")
    return {"openvino fp32": OpenVinoEngine(xml), "openvino int8": OpenVinoEngine(int8)}


def bench_model(key: str, repeats: int, batch: int, profile: bool) -> None:
    name, size = MODELS[key]
    torch.manual_seed(0)
    model = create_model(name, 15, 1, False).eval()
    gflops = flops_per_image(model, size) / 1e9
    data = images(size, max(batch, 64))
    one, many = data[:1], data[:batch]
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, size, Path(tmp) / "m.onnx")
        int8 = quantize_int8(fp32, Path(tmp) / "m.int8.onnx", data[:64])
        cl_model = create_model(name, 15, 1, False).eval()
        cl_model.load_state_dict(model.state_dict())  # same weights, NHWC memory
        engines = {
            "pytorch eager": torch_engine(model, False),
            "pytorch channels-last": torch_engine(cl_model, True),
            "onnxruntime fp32": OnnxEngine(fp32).logits,
            "onnxruntime int8": OnnxEngine(int8).logits,
        }
        openvino = openvino_engines(fp32, data[:64])
        engines.update({label: engine.logits for label, engine in openvino.items()})
        ref = engines["pytorch eager"](many)
        print(
            f"\n{name} at {size} px: {gflops:.2f} GFLOPs an image; {os.cpu_count()} CPU threads; "
            f"batch 1 x {repeats} repeats, batch {batch} x {max(3, repeats // 10)}"
        )
        print(
            f"{'engine':24s} {'b1 p50 ms':>10s} {'b1 p95 ms':>10s} {'b1 img/s':>9s} {'x eager':>8s} "
            f"{'b32 img/s':>10s} {'x eager':>8s} {'GFLOP/s':>8s} {'max|Δlogit|':>12s}"
        )
        base1 = base32 = None
        for label, fn in engines.items():
            lat = timed(fn, one, repeats)
            thr = timed(fn, many, max(3, repeats // 10))
            ips1, ips32 = 1.0 / np.median(lat), batch / np.median(thr)
            base1, base32 = base1 or ips1, base32 or ips32
            diff = float(np.abs(fn(many) - ref).max())
            print(
                f"{label:24s} {1e3 * np.median(lat):10.2f} {1e3 * np.percentile(lat, 95):10.2f} {ips1:9.1f} "
                f"{ips1 / base1:7.2f}x {ips32:10.1f} {ips32 / base32:7.2f}x {gflops * max(ips1, ips32):8.1f} "
                f"{diff:12.2e}"
            )
        if profile:
            for label, path in (("fp32", fp32), ("int8", int8)):
                ops = profile_ops(path, one, max(10, repeats // 2))
                split = ", ".join(f"{op} {100 * share:.0f}%" for op, share in ops[:6])
                print(f"onnxruntime {label} batch-1 time by operator: {split}")
            if "openvino int8" in openvino:
                ops = profile_openvino(openvino["openvino int8"].path, one, max(10, repeats // 2))
                split = ", ".join(f"{op} {100 * share:.0f}%" for op, share in ops[:6])
                print(f"openvino int8 batch-1 time by operator: {split}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--repeats", type=int, default=50, help="batch-1 calls per engine")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--profile", action="store_true", help="time by operator (ONNX Runtime, OpenVINO)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads")
    for key in args.models:
        bench_model(key, args.repeats, args.batch, args.profile)


if __name__ == "__main__":
    main()
