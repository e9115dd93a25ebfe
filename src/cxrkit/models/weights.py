"""ImageNet weights: from the local torch hub cache, or downloaded with a timeout; never a hang.

Offline without cached weights, ``PretrainedWeightsError`` says where the file must go and how
to fetch it, so a user can copy it over from a machine with internet.
"""

from __future__ import annotations

import hashlib
import re
import urllib.error
import urllib.request
from pathlib import Path

from cxrkit.outputs import write_with

IMAGENET_GREY_MEAN, IMAGENET_GREY_STD = 0.449, 0.226  # means of ImageNet's per-channel values


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights that are not cached and cannot be downloaded."""


def _hub_checkpoints() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def download_weights(url: str, dest: Path, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` atomically, checking torchvision's sha256 prefix in the name."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    prefix = re.search(r"-([0-9a-f]{8,})\.", dest.name)

    def fetch(fh) -> None:  # streams into the temporary file; the checksum is checked before the rename
        h = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            while block := resp.read(1 << 20):
                h.update(block)
                fh.write(block)
        if prefix and not h.hexdigest().startswith(prefix.group(1)):
            raise PretrainedWeightsError(f"{url}: downloaded file fails its checksum ({prefix.group(1)})")

    try:
        write_with(dest, fetch)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise PretrainedWeightsError(
            f"cannot download {url} ({getattr(err, 'reason', err)}). On a machine with internet, "
            f"download it and copy it to {dest}; or train from scratch (pretrained: false)"
        ) from None
    return dest


def load_torchvision_state(name: str, timeout: float = 30.0) -> dict:
    """The ImageNet state dict of torchvision model ``name`` (cached or downloaded)."""
    import torch
    from torchvision.models import get_model_weights

    url = get_model_weights(name).DEFAULT.url
    path = _hub_checkpoints() / url.rsplit("/", 1)[-1]
    if not path.exists():
        download_weights(url, path, timeout)
    return torch.load(path, map_location="cpu", weights_only=True)
