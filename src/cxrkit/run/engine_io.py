"""What every exported engine (ONNX Runtime, OpenVINO) takes and gives: one place, no cycle between them."""

from __future__ import annotations

import numpy as np

OUTPUTS = ("logits", "features")  # export.json lists them: an export without features is stale


def model_input(images: np.ndarray) -> np.ndarray:
    """uint8 (N, S, S) -> float32 (N, 1, S, S) in [0, 1]: ``to_model_input`` without torch."""
    return (np.ascontiguousarray(images)[:, None].astype(np.float32) / np.float32(255.0)).astype(np.float32)
