"""A run rebuilds the network it trained, input normalisation included, without any download."""

import pytest

from cxrkit.models import create_model
from cxrkit.models.tv import IMAGENET_GREY_MEAN, IMAGENET_GREY_STD
from cxrkit.run.model import build_network, network_spec


def test_stored_normalisation_is_restored():
    model = create_model("cnn3_32_64_128_bn", 2)
    spec = network_spec({"name": "cnn3_32_64_128_bn"}, model)
    assert spec["input_norm"] == [0.5, 0.25] and "backbone_config" not in spec
    rebuilt = build_network("cnn3_32_64_128_bn", {**spec, "input_norm": [0.3, 0.2]}, 2)
    assert float(rebuilt.mean) == pytest.approx(0.3) and float(rebuilt.std) == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("name", "mean", "std"),
    [("resnet18", IMAGENET_GREY_MEAN, IMAGENET_GREY_STD), ("timm:resnet10t", 0.449, 0.226)],
)
def test_older_pretrained_runs_get_the_normalisation_of_their_weights(name, mean, std):
    """Runs saved before ``input_norm``: a pretrained start normalised like its weights, not 0.5/0.25."""
    pretrained = build_network(name, {"name": name, "pretrained": True}, 2)
    assert float(pretrained.mean) == pytest.approx(mean, abs=1e-3)
    assert float(pretrained.std) == pytest.approx(std, abs=1e-3)
    scratch = build_network(name, {"name": name, "pretrained": False}, 2)
    assert (float(scratch.mean), float(scratch.std)) == (0.5, 0.25)
