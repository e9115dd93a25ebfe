"""OpenVINO engine: the run's ONNX export as OpenVINO IR (float32) and an NNCF int8 copy.

``model.xml``/``.bin`` is converted from ``model.onnx`` (same graph: network and input
normalisation; decoding, calibration and thresholds stay outside, shared with every engine).
``model.int8.xml`` is NNCF post-training quantization calibrated on the run's validation images,
as OpenVINO recommends. Both are compiled for the CPU with ``INFERENCE_PRECISION_HINT=f32``:
OpenVINO's CPU default on bf16-capable processors computes float layers in bfloat16 (logits off by
~1e-2 here), which would break the float32 parity promise; the int8 layers stay int8.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from cxrkit.outputs import write_bytes
from cxrkit.run.engine_io import OUTPUTS, model_input

MISSING = "the OpenVINO engine needs openvino: pip install -e '.[openvino]' (or openvino)"
MISSING_NNCF = "OpenVINO int8 needs nncf: pip install -e '.[openvino]' (or nncf)"


def has_openvino() -> bool:
    """Whether the openvino package is installed (the engine is an optional extra)."""
    return importlib.util.find_spec("openvino") is not None


def _ov():
    try:
        import openvino
    except ImportError:
        raise ImportError(MISSING) from None
    return openvino


def bin_file(xml: Path) -> Path:
    """The weights file beside an IR's ``.xml``."""
    return Path(xml).with_suffix(".bin")


def _save(model, out: Path) -> Path:
    """Write IR ``out`` (.xml + .bin) atomically: both land in a private folder first, then move."""
    ov = _ov()
    out = Path(out)
    work = Path(tempfile.mkdtemp(prefix=f".{out.stem}.", dir=out.parent))
    try:
        tmp = work / "m.xml"
        ov.save_model(model, str(tmp), compress_to_fp16=False)  # float32 weights: parity first
        write_bytes(bin_file(out), bin_file(tmp).read_bytes())
        write_bytes(out, tmp.read_bytes())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def export_openvino(onnx_path: Path, out: Path) -> Path:
    """Convert the float32 ONNX export to OpenVINO IR ``out`` (.xml + .bin, float32 weights)."""
    ov = _ov()
    return _save(ov.convert_model(str(onnx_path)), out)


def quantize_openvino(fp32_xml: Path, out: Path, calibration: np.ndarray) -> Path:
    """NNCF int8 post-training quantization of ``fp32_xml``, ranges from uint8 images (N, S, S)."""
    ov = _ov()
    try:
        import nncf
    except ImportError:
        raise ImportError(MISSING_NNCF) from None
    model = ov.Core().read_model(str(fp32_xml))
    dataset = nncf.Dataset([model_input(calibration[i : i + 1]) for i in range(len(calibration))])
    quantized = nncf.quantize(
        model,
        dataset,
        subset_size=len(calibration),
        preset=nncf.QuantizationPreset.PERFORMANCE,  # symmetric activations: ReLU networks, fastest kernels
        # full bias correction: on the phantom CNN the fast one lost 0.0055 test macro ROC-AUC (max
        # |Δprob| 0.85), the full one 0.0005 (0.37); it costs calibration time, never inference time
        fast_bias_correction=False,
    )
    return _save(quantized, out)


def compile_options(threads: int | None = None) -> dict:
    """CPU plugin options: strict float32 for float layers, latency hint, ``threads`` (default: all cores)."""
    return {
        "INFERENCE_PRECISION_HINT": "f32",
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": int(threads or os.cpu_count() or 1),
    }


class OpenVinoEngine:
    """An OpenVINO CPU model over a run's IR; ``outputs`` matches ``OnnxEngine.outputs``."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        ov = _ov()
        self.path = Path(path)
        try:
            core = ov.Core()
            self.compiled = core.compile_model(
                core.read_model(str(self.path)), "CPU", compile_options(threads)
            )
        except Exception as err:  # OpenVINO raises RuntimeError subclasses for a corrupt or foreign file
            raise ValueError(f"{self.path}: not a loadable OpenVINO model ({err})") from None
        self.input = self.compiled.input(0).get_any_name()
        self._outputs = [self.compiled.output(name) for name in OUTPUTS]

    def logits(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Raw outputs (N, L) for uint8 images (N, S, S) prepared by the run's input spec."""
        return self.outputs(images, batch_size)[0]

    def outputs(self, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """(logits (N, L), pooled features (N, C)) for prepared uint8 images (N, S, S).

        One infer request per call: callers on several threads (the service) never share one.
        """
        request = self.compiled.create_infer_request()
        chunks = []
        for s in range(0, len(images), batch_size):
            result = request.infer({0: model_input(images[s : s + batch_size])})
            chunks.append([np.array(result[o], dtype=np.float32) for o in self._outputs])
        if not chunks:
            return np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
        return tuple(np.concatenate([c[k] for c in chunks]) for k in range(2))


def openvino_version() -> str:
    """The installed OpenVINO's version (for export.json)."""
    return str(_ov().__version__)
