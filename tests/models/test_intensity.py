"""Per-image intensity standardization at the network's input (prepare.intensity), stored with the run."""

import numpy as np
import pytest
import torch

from cxrkit.data.transforms import InputSpec
from cxrkit.models.net import intensity_op


def chest(seed: int = 0, n: int = 3, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    base = 60 + 120 * np.exp(-((xx - 0.5) ** 2 + (yy - 0.45) ** 2) * 6)
    return np.clip(base[None] + rng.normal(0, 20, (n, size, size)), 0, 255).astype(np.uint8)


def tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).float().div(255).unsqueeze(1)


def numpy_equalize(img: np.ndarray) -> np.ndarray:
    """Independent histogram equalization: each pixel -> share of the image at or below its level."""
    flat = np.sort(img.ravel())
    return np.searchsorted(flat, img, side="right") / img.size


def test_equalize_matches_an_independent_computation():
    imgs = chest()
    out = intensity_op(tensor(imgs), "equalize")[:, 0].numpy()
    for i in range(len(imgs)):
        np.testing.assert_allclose(out[i], numpy_equalize(imgs[i]), atol=1e-6)


def test_equalize_undoes_a_monotone_grey_level_change():
    imgs = chest() // 2  # levels 0..127: the gamma LUT below never merges two of them
    lut = np.round(255 * (np.minimum(np.arange(256), 127) / 127) ** 0.8).astype(np.uint8)
    used = np.unique(imgs)
    assert len(np.unique(lut[used])) == len(used)  # no two used levels merge
    a = intensity_op(tensor(imgs), "equalize")
    b = intensity_op(tensor(lut[imgs]), "equalize")
    torch.testing.assert_close(a, b)
    assert not torch.allclose(intensity_op(tensor(imgs), "none"), intensity_op(tensor(lut[imgs]), "none"))


def test_standardize_gives_each_image_the_same_mean_and_spread():
    imgs = chest(n=4)
    imgs[1] = (imgs[1] * 0.5 + 40).astype(np.uint8)  # another window/level
    out = intensity_op(tensor(imgs), "standardize")
    z = (out - 0.5) / 0.25
    torch.testing.assert_close(z.mean(dim=(1, 2, 3)), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(dim=(1, 2, 3)), torch.ones(4), atol=0.02, rtol=0)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="expected one of"):
        intensity_op(torch.zeros(1, 1, 8, 8), "clahe")
    from cxrkit.config import build_run_config

    with pytest.raises(ValueError, match=r"prepare\.intensity"):
        build_run_config({"data": {"source": "phantom"}, "prepare": {"intensity": "clahe"}})


def test_the_modes_known_to_the_config_are_the_networks():
    from cxrkit.config import INTENSITY
    from cxrkit.models.net import INTENSITY_MODES

    assert INTENSITY == INTENSITY_MODES


def test_input_spec_round_trips_the_mode():
    spec = InputSpec(64, "pad", intensity="equalize")
    assert InputSpec.from_dict(spec.as_dict()) == spec
    assert InputSpec.from_dict({"size": 64}).intensity == "none"  # runs saved before the option


def test_equalize_exports_to_onnx_and_agrees(tmp_path):
    pytest.importorskip("onnxruntime")
    from cxrkit.run.model import build_network
    from cxrkit.run.onnx import OnnxEngine, export_onnx

    net = build_network("cnn2_64_128_bn", {"intensity": "equalize"}, 2).eval()
    path = export_onnx(net, 32, tmp_path / "m.onnx")
    imgs = chest(n=4)
    with torch.no_grad():
        ref = net(tensor(imgs)).numpy()
    np.testing.assert_allclose(OnnxEngine(path).logits(imgs, 4), ref, rtol=1e-4, atol=1e-4)
