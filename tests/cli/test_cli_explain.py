"""cxr explain on the real sample files (DICOM, PNG, JPEG) and cxr localize on the boxed real NIH images."""

import numpy as np
import pytest
from conftest import REPO, shared_path
from PIL import Image

from cxrkit.cli import main


def test_explain_writes_readable_overlays_for_every_sample(phantom_run, tmp_path, capsys):
    samples = shared_path("data", "samples")
    out = tmp_path / "explain"
    assert main(["explain", str(phantom_run), str(samples), "--top", "2", "--out", str(out)]) == 0
    files = sorted(out.glob("*__*.png"))
    names = {p.name.split("__")[0] for p in files}
    assert len(files) == 10 and any(n.endswith("850819") for n in names) and "16747_3_1" in names
    im = np.asarray(Image.open(files[0]).convert("RGB"), dtype=np.int16)
    assert max(im.shape[:2]) >= 256
    colour = np.abs(im[..., 0] - im[..., 2]) > 60  # the heatmap tints part of the image, not all of it
    assert 0.01 < colour.mean() < 0.9
    assert (out / "grid.png").is_file() and "grid of 10 overlays" in capsys.readouterr().out
    assert main(["explain", str(phantom_run), str(samples), "--label", "Fracture"]) == 2
    assert "not one of the model's labels" in capsys.readouterr().err


@pytest.mark.slow
def test_localize_on_the_boxed_real_nih_images(tmp_path, capsys):
    shared_path("data", "nih14-64px", "images")
    config = REPO / "configs" / "nih-shared64.yaml"
    args = [
        "train",
        "--config",
        str(config),
        "--out",
        str(tmp_path),
        "--name",
        "nih",
        "train.epochs=1",  # localization is scored on every box whatever the AUC: one epoch will do
        "train.channels_last=true",
        "train.progress=false",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["localize", str(tmp_path / "nih"), "--split", "all"]) == 0
    out = capsys.readouterr().out
    assert "on 9 boxes in 9 images" in out and "T(IoBB)=0.5" in out and "T(IoU)=0.7" in out
    boxes = next(line for line in out.splitlines() if line.startswith("boxes")).split()
    assert boxes[-2:] == ["9.000", "9.000"]  # all findings, and the centred-box baseline on the same boxes
