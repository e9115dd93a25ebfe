"""The EDA report is one self-contained HTML page with every section and embedded plots."""

import base64
import io
import json
import re

from PIL import Image

from cxrkit.data.chestmnist import ChestMNISTDataset
from cxrkit.data.folder import LabelledFolderDataset
from cxrkit.data.nih import NIHDataset
from cxrkit.data.synthetic import PhantomDataset
from cxrkit.report.eda import build_eda_report

SECTIONS = [
    "Label counts and shares",
    "Multi-label share",
    "Co-occurrence and correlation",
    "Age, overall and by label",
    "Sex by label",
    "View position by label",
    "Sample images per label",
]


def embedded_pngs(html: str) -> list[Image.Image]:
    return [
        Image.open(io.BytesIO(base64.b64decode(m)))
        for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    ]


def test_phantom_report_has_every_section_and_only_embedded_images(tmp_path):
    path, summary = build_eda_report(PhantomDataset(120, 32), tmp_path / "r.html")
    html = path.read_text()
    for s in SECTIONS:
        assert f"<h2>{s}</h2>" in html
    assert "http://" not in html and "https://" not in html  # self-contained
    imgs = embedded_pngs(html)
    assert len(imgs) >= 8 and all(im.size[0] > 100 for im in imgs)
    assert json.loads(path.with_suffix(".json").read_text())["images"] == 120 == summary["images"]


def test_metadata_only_nih_report_says_there_are_no_images(tmp_path):
    path, s = build_eda_report(NIHDataset(), tmp_path / "nih.html")
    html = path.read_text()
    assert "Metadata only" in html and s["images"] == 112_120 and s["label_counts"]["Hernia"] == 227


def test_sources_without_demographics_say_so(chestmnist_npz, labelled_folder, tmp_path):
    html = build_eda_report(ChestMNISTDataset(chestmnist_npz), tmp_path / "c.html")[0].read_text()
    assert "This source has no age metadata" in html and "Sample images per label" in html
    html = build_eda_report(LabelledFolderDataset(labelled_folder), tmp_path / "f.html")[0].read_text()
    assert "Pneumonia" in html


def test_nih_folder_report_has_image_grid(nih_root, tmp_path):
    html = build_eda_report(NIHDataset(nih_root), tmp_path / "n.html")[0].read_text()
    assert "<h2>Sample images per label</h2>" in html
