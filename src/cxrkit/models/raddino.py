"""Rad-DINO (Microsoft's DINOv2 ViT-B/14 trained on chest X-rays) as ``rad-dino`` under the common head.

The encoder comes from Hugging Face ``transformers`` (``pip install transformers``), published as
``microsoft/rad-dino``. Its patch tokens are put back on their 14-px grid, so the head pools
them and Grad-CAM explains them like any CNN map (the class token is not used). The published
preprocessing (``preprocessor_config.json``: scale to [0, 1], then ``(x - mean) / std`` on three
identical channels, 518 px) is read from the downloaded files and applied by the model itself.

Weights are looked up, in order, in the folder named by ``CXRKIT_RAD_DINO`` (``config.json``,
``model.safetensors``, ``preprocessor_config.json``), then in the Hugging Face cache
(``HF_HUB_CACHE``, by default ``~/.cache/huggingface/hub``); only then downloaded. Offline, a
connection check fails within seconds and the error says which files to place where.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from cxrkit.models.net import DEFAULT_HEAD, CXRNet, HeadSpec
from cxrkit.models.weights import PretrainedWeightsError
from cxrkit.outputs import read_json

REPO = "microsoft/rad-dino"
PREPROCESSOR = "preprocessor_config.json"
PATCH = 14
NATIVE_SIZE = 518
# ViT-B/14 as published (DINOv2-base layout at 518 px): the architecture of a saved run, no download
ARCH = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "patch_size": PATCH,
    "image_size": NATIVE_SIZE,
}


_ARCH_KEYS = (
    *ARCH,
    "mlp_ratio",
    "hidden_act",
    "layer_norm_eps",
    "qkv_bias",
    "layerscale_value",
    "use_swiglu_ffn",
    "num_channels",
    "num_register_tokens",
    "use_mask_token",
)


class DinoFeatures(nn.Module):
    """A transformers DINOv2 encoder as a (B, C, h, w) map of its last layer's patch tokens."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.m = encoder
        self.prefix = 1 + int(getattr(encoder.config, "num_register_tokens", 0) or 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised -> (B, C, H // 14, W // 14)."""
        tokens = self.m(pixel_values=x).last_hidden_state[:, self.prefix :]
        h, w = x.shape[-2] // PATCH, x.shape[-1] // PATCH
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ValueError("rad-dino needs Hugging Face transformers: pip install transformers") from None
    return transformers


def hf_cache() -> Path:
    """The Hugging Face hub cache folder (``HF_HUB_CACHE`` read now, not at import)."""
    from huggingface_hub import constants

    return Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE).expanduser()


def _online(timeout: float) -> str | None:
    """None when the hub answers a TCP connection within ``timeout``; else the reason."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host = url.hostname or "huggingface.co"
    try:
        socket.create_connection((host, url.port or 443), timeout=timeout).close()
    except OSError as err:
        return f"{host}: {err}"
    return None


def _load_pretrained(timeout: float) -> tuple[nn.Module, dict]:
    """The published encoder and its preprocessing: from CXRKIT_RAD_DINO, the hub cache, or the hub."""
    tf = _transformers()
    from huggingface_hub import hf_hub_download

    local = os.environ.get("CXRKIT_RAD_DINO")
    if local:
        try:
            encoder = tf.Dinov2Model.from_pretrained(local)
            return encoder, read_json(Path(local) / PREPROCESSOR)
        except OSError as err:
            raise PretrainedWeightsError(
                f"CXRKIT_RAD_DINO={local}: {str(err).splitlines()[0]} (the folder needs config.json, "
                f"model.safetensors and {PREPROCESSOR} of {REPO})"
            ) from None
    cache = hf_cache()
    reason = ""
    for local_only in (True, False):
        if not local_only and (reason := _online(timeout) or ""):
            break
        try:
            encoder = tf.Dinov2Model.from_pretrained(REPO, cache_dir=str(cache), local_files_only=local_only)
            pre = hf_hub_download(REPO, PREPROCESSOR, cache_dir=str(cache), local_files_only=local_only)
            return encoder, json.loads(Path(pre).read_text())
        except OSError as err:
            reason = str(err).splitlines()[0]
    where = cache / f"models--{REPO.replace('/', '--')}"
    raise PretrainedWeightsError(
        f"Rad-DINO weights are not in {where} and cannot be downloaded ({reason}). On a machine with "
        f"internet run `huggingface-cli download {REPO}` and copy {where} here, or put config.json, "
        f"model.safetensors and {PREPROCESSOR} in a folder named by CXRKIT_RAD_DINO; or use pretrained: false"
    )


def build_rad_dino(
    num_labels: int,
    in_chans: int = 1,
    pretrained: bool = False,
    head: HeadSpec = DEFAULT_HEAD,
    *,
    backbone_config: dict | None = None,
    timeout: float = 3.0,
) -> CXRNet:
    """Rad-DINO's encoder (published weights when ``pretrained``) under the common head.

    Both grey modes are honoured by one network: the published weights keep their three-channel
    patch embedding and see the grey image repeated, which computes exactly what the folded kernels
    (``grey: fold``) would, so ``fold`` and ``repeat`` give the same outputs and the same saved weights.

    ``backbone_config`` (a saved run's ``Dinov2Config``) rebuilds the layout a run was trained with;
    without it and without weights, the published ViT-B/14 layout.
    """
    tf = _transformers()
    if in_chans != 1:
        raise ValueError(f"rad-dino takes grey (1-channel) images, not {in_chans} channels")
    mean, std = 0.5, 0.25
    if pretrained:
        encoder, processor = _load_pretrained(timeout)
        mean = float(sum(processor.get("image_mean", [0.5])) / len(processor.get("image_mean", [0.5])))
        std = float(sum(processor.get("image_std", [0.5])) / len(processor.get("image_std", [0.5])))
    else:
        encoder = tf.Dinov2Model(tf.Dinov2Config(**(backbone_config or ARCH)))
    layers = list(encoder.encoder.layer)
    model = CXRNet(
        DinoFeatures(encoder),
        encoder.config.hidden_size,
        num_labels,
        blocks=[encoder.embeddings, *layers, encoder.layernorm],
        stem=encoder.embeddings.patch_embeddings.projection,
        **head.net_kwargs(),
        mean=mean,
        std=std,
        repeat_rgb=True,  # the published encoder sees three identical channels
    )
    model.backbone_config = {k: v for k, v in encoder.config.to_dict().items() if k in _ARCH_KEYS}
    return model
