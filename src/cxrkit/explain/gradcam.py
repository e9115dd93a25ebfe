"""Grad-CAM, Grad-CAM++ and plain CAM for any registered model, for a label given by name.

Written here rather than taken from pytorch-grad-cam: the maths is a dozen lines on top of the
model's own ``cam_layer`` and head, it needs no extra dependency, and it lets us keep the two
rules that matter for multi-label chest X-rays: the label is always explicit (no argmax default:
"the most likely class" is meaningless when 14 findings can co-occur), and hooks live only inside
a context manager, so they are removed even when the forward pass fails.

Direction: a heatmap is the ReLU of the class-discriminative map, upsampled (bilinear) to the
input resolution and divided by its maximum, so 1 marks the region that most *raises* the label's
logit and 0 marks regions with no positive evidence. An all-zero map (no positive evidence
anywhere) stays all zero rather than being stretched.

- ``gradcam``: weights = spatial mean of d(logit)/d(A) (Selvaraju et al., 2017).
- ``gradcam++``: weights = sum of alpha * ReLU(gradient), alpha from the closed form of Chattopadhay
  et al. (2018) with exponential-score derivatives (powers of the gradient).
- ``cam``: the head's class weights times the feature map (Zhou et al., 2016); only for models whose
  head is one linear layer after global average pooling (``hidden=0``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from cxrkit.labels import try_canonical_label
from cxrkit.models.net import CXRNet

METHODS = ("gradcam", "gradcam++", "cam")


def label_index(labels: Sequence[str], name: str) -> int:
    """Column of label ``name`` (any known spelling); a clear error listing the model's labels."""
    canon = try_canonical_label(name) or name
    if canon not in labels:
        raise ValueError(f"label {name!r} is not one of the model's labels: {', '.join(labels)}")
    return list(labels).index(canon)


@contextmanager
def capture(layer: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Record ``layer``'s output while inside the block; the hook is removed on exit, even on errors."""
    store: dict[str, torch.Tensor] = {}

    def hook(_module, _inputs, output):
        store["activations"] = output

    handle = layer.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def _normalise(cam: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    cam = F.interpolate(cam.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)
    cam = cam.clamp_min(0)
    peak = cam.flatten(1).amax(1)[:, None, None]
    return torch.where(peak > 1e-12, cam / peak.clamp_min(1e-12), torch.zeros_like(cam))


def compute_heatmaps(
    model: CXRNet, images: torch.Tensor, label: int | Sequence[int], method: str = "gradcam"
) -> torch.Tensor:
    """Heatmaps (B, H, W) in [0, 1] for label column(s) ``label`` (one per image or one for all).

    ``images`` are (B, 1, H, W) in [0, 1], as the model takes them.
    """
    if method not in METHODS:
        raise ValueError(f"explanation method {method!r}: expected one of {', '.join(METHODS)}")
    b = images.shape[0]
    cols = torch.as_tensor([label] * b if isinstance(label, int) else list(label), device=images.device)
    if cols.numel() != b:
        raise ValueError(f"{cols.numel()} labels for {b} images")
    was_training = model.training
    model.eval()
    try:
        if method == "cam":
            weights = model.class_weights()
            if weights is None:
                raise ValueError(
                    "plain CAM needs a head that is one linear layer after global pooling (model.hidden=0); "
                    "use gradcam or gradcam++"
                )
            with torch.no_grad():
                feats = model.forward_features(images)
                cam = torch.einsum("bchw,bc->bhw", feats, weights[cols])
            return _normalise(cam, images.shape[-2:])
        with torch.enable_grad(), capture(model.cam_layer) as store:
            x = images.detach().clone().requires_grad_(True)  # a graph even when every layer is frozen
            logits = model(x)
            acts = store["activations"]
            score = logits.gather(1, cols[:, None]).sum()
            grads = torch.autograd.grad(score, acts)[0]
        acts, grads = acts.detach(), grads.detach()
        if method == "gradcam":
            w = grads.mean(dim=(2, 3))
        else:
            g2, g3 = grads.pow(2), grads.pow(3)
            denom = 2 * g2 + (acts * g3).sum(dim=(2, 3), keepdim=True)
            alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
            w = (alpha * F.relu(grads)).sum(dim=(2, 3))
        cam = torch.einsum("bchw,bc->bhw", acts, w)
        return _normalise(cam, images.shape[-2:])
    finally:
        model.train(was_training)
