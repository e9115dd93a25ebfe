"""ONNX export of a run's network and an ONNX Runtime engine that predicts like the PyTorch one.

The graph holds the network only (its input normalisation included): decoding, resizing and the
uint8 -> [0, 1] step stay in Python (``data.transforms``), shared with every other path, and
calibration/thresholds stay in ``model.json``. So the same prepared images give the same logits,
whichever engine runs them. ``model.onnx`` is float32; ``model.int8.onnx`` is statically quantized
(QDQ, per-channel weights) with ranges calibrated on the run's validation images.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from cxrkit.models.net import CXRNet
from cxrkit.outputs import read_json, write_bytes
from cxrkit.run import files
from cxrkit.run.engine_io import OUTPUTS, model_input

ENGINES = ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8", "auto")
ENGINE_FILES = {  # engine -> the file it reads in the run folder
    "onnx": files.ONNX,
    "onnx-int8": files.ONNX_INT8,
    "openvino": files.OPENVINO,
    "openvino-int8": files.OPENVINO_INT8,
}
EXPORT_FLAGS = {
    "onnx": "",
    "onnx-int8": " --int8",
    "openvino": " --openvino",
    "openvino-int8": " --openvino --int8",
}
EXPORT_KEYS = {
    "onnx-int8": "int8",
    "openvino": "openvino",
    "openvino-int8": "openvino_int8",
}  # in export.json
QUANTIZED_OPS = [
    "Conv",
    "Gemm",
    "MatMul",
    "Concat",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Relu",
    "Add",
    "Mul",
]
OPSET = 17


def engine_file(run_dir: Path, engine: str) -> Path:
    """The file an engine reads in the run folder (``ENGINE_FILES``)."""
    return Path(run_dir) / ENGINE_FILES[engine]


def weights_digest(run_dir: Path) -> str:
    """sha256 of the run's best.pt: export.json records it, so an export older than the weights is refused.

    A K-fold ensemble (no best.pt of its own): the digest of its members' names and digests, so
    retraining any fold changes it.
    """
    import hashlib

    run_dir = Path(run_dir)
    h = hashlib.sha256()
    if not (run_dir / files.BEST).is_file() and (run_dir / files.PACKAGE).is_file():
        members = read_json(run_dir / files.PACKAGE)["model"]["config"].get("ensemble")
        if members:
            for name in members:
                h.update(f"{name}:{weights_digest(run_dir / name)};".encode())
            return h.hexdigest()
    with open(run_dir / files.BEST, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_problem(run_dir: Path, engine: str) -> str | None:
    """Why ``engine`` cannot be used here (missing file or library, stale or foreign export), or None."""

    run_dir = Path(run_dir)
    path, flag = engine_file(run_dir, engine), EXPORT_FLAGS[engine]
    if not path.is_file():
        return f"{run_dir}: no {path.name}; create it with `cxr export {run_dir}{flag}`"
    try:
        report = read_json(run_dir / files.EXPORT)
        stamp, outputs = report.get("weights_sha256"), report.get("outputs")
        recorded = EXPORT_KEYS.get(engine) is None or EXPORT_KEYS[engine] in report
    except (OSError, ValueError, AttributeError):
        stamp, outputs, recorded = None, None, False
    if stamp == weights_digest(run_dir) and outputs != list(OUTPUTS):
        return (
            f"{run_dir}: {path.name} was exported without the features output "
            f"the OOD score needs (an older cxrkit); re-run `cxr export {run_dir}{flag}`"
        )
    if stamp != weights_digest(run_dir) or not recorded:
        return (
            f"{run_dir}: {path.name} was not exported from the current best.pt "
            f"(export.json missing, older than the weights or without its check); "
            f"re-run `cxr export {run_dir}{flag}`"
        )
    if engine.startswith("openvino"):
        from cxrkit.run.openvino import MISSING, has_openvino

        return None if has_openvino() else MISSING
    if not _has_ort():
        return "the ONNX engine needs onnxruntime: pip install 'cxrkit[serve]' (or onnxruntime)"
    return None


def open_engine(run_dir: Path, engine: str, threads: int | None = None):
    """The engine object (``OnnxEngine`` or ``OpenVinoEngine``) for a checked, current export."""
    path = engine_file(run_dir, resolve_engine(run_dir, engine))
    if engine.startswith("openvino"):
        from cxrkit.run.openvino import OpenVinoEngine

        return OpenVinoEngine(path, threads)
    return OnnxEngine(path, threads)


def resolve_engine(run_dir: Path, engine: str) -> str:
    """``auto`` -> ``onnx`` when the run holds a current model.onnx, else ``torch``; others are checked."""
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: expected one of {', '.join(ENGINES)}")
    if engine == "auto":
        return "onnx" if export_problem(run_dir, "onnx") is None else "torch"
    if engine != "torch":
        problem = export_problem(run_dir, engine)
        if problem:
            raise FileNotFoundError(problem)
    return engine


def _has_ort() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


class WithFeatures(torch.nn.Module):
    """The network with its pooled penultimate features as a second output (what OOD scores read)."""

    def __init__(self, net: CXRNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.net.pool(self.net.forward_features(x))
        return self.net.forward_head(f), f


def export_onnx(model: CXRNet, size: int, path: Path) -> Path:
    """Write ``model`` (eval mode, CPU copy) as ONNX with a dynamic batch axis: (N, 1, S, S) ->
    logits (N, L) and pooled features (N, C)."""
    import copy

    net = WithFeatures(copy.deepcopy(model).cpu().float().eval())
    net.to(memory_format=torch.contiguous_format)
    x = torch.rand(2, 1, size, size)
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter: deprecated since torch 2.9 but exact, and ~14x faster than the
        # torch.export-based one on DenseNet-121 here (1 s against 14 s); torch 2.14 (pinned) has it
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            net,
            (x,),
            buf,
            input_names=["image"],
            output_names=list(OUTPUTS),
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}, "features": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return write_bytes(path, buf.getvalue())


def session_options(threads: int | None = None):
    """ONNX Runtime options: every graph optimisation, ``threads`` intra-op threads (default: all cores)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = int(threads or os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return opts


class OnnxEngine:
    """An ONNX Runtime session over a run's exported network; ``logits`` matches ``RunModel.logits``."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ImportError(
                "the ONNX engine needs onnxruntime: pip install 'cxrkit[serve]' (or onnxruntime)"
            ) from None
        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(
                str(self.path), session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own types for a corrupt or foreign file
            raise ValueError(f"{self.path}: not a loadable ONNX model ({err})") from None
        self.input = self.session.get_inputs()[0].name

    def logits(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Raw outputs (N, L) for uint8 images (N, S, S) prepared by the run's input spec."""
        return self.outputs(images, batch_size)[0]

    def outputs(self, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """(logits (N, L), pooled features (N, C)) for prepared uint8 images (N, S, S)."""
        chunks = [
            self.session.run(list(OUTPUTS), {self.input: model_input(images[s : s + batch_size])})
            for s in range(0, len(images), batch_size)
        ]
        if not chunks:
            return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
        return tuple(np.concatenate([c[k] for c in chunks]).astype(np.float32) for k in range(2))


def quantize_int8(fp32: Path, out: Path, calibration: np.ndarray, batch_size: int = 16) -> Path:
    """Static int8 quantization (QDQ, per-channel weights, MinMax ranges) calibrated on uint8 images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[dict] = (
                {"image": model_input(calibration[s : s + batch_size])}
                for s in range(0, len(calibration), batch_size)
            )

        def get_next(self):
            return next(self.batches, None)

    out = Path(out)
    work = Path(tempfile.mkdtemp(prefix=f".{out.stem}.", dir=out.parent))  # private (0700), unique
    pre, tmp = work / "pre.onnx", work / "int8.onnx"
    try:
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(tmp),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # BatchNormalization that cannot be folded (DenseNet's norm -> relu -> conv) stays float:
            # quantizing it gains nothing here and ONNX Runtime warns for every such layer
            op_types_to_quantize=QUANTIZED_OPS,
        )
        write_bytes(out, tmp.read_bytes())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out
