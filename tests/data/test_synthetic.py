"""Phantoms: seeded, any size, and every finding is drawn inside its box at a varying place."""

import dataclasses

import numpy as np
import pytest

from cxrkit.data.synthetic import PhantomDataset, render_case, sample_case
from cxrkit.labels import FINDINGS, LABELS

LOCAL = [f for f in FINDINGS if f not in ("Cardiomegaly", "Emphysema", "Edema")]


def test_seeded_and_repeatable():
    a, b, c = PhantomDataset(20, 64, seed=1), PhantomDataset(20, 64, seed=1), PhantomDataset(20, 64, seed=2)
    assert np.array_equal(a.targets(), b.targets()) and a.boxes.equals(b.boxes)
    assert all(np.array_equal(a.load_image(i), b.load_image(i)) for i in range(20))
    assert not np.array_equal(a.load_image(0), c.load_image(0))


def test_labels_match_boxes_and_no_finding():
    ds = PhantomDataset(200, 64, seed=0)
    y = ds.targets()
    per_image = ds.boxes.groupby("image_id")["label"].apply(set)
    for i, image_id in enumerate(ds.meta["image_id"]):
        present = {LABELS[j] for j in np.flatnonzero(y[i, :14])}
        assert present == per_image.get(image_id, set())
        assert y[i, 14] == float(not present)
    assert (y[:, :14].sum(0) > 0).all()  # every finding occurs


def test_same_case_at_any_size_with_boxes_scaled():
    small, big = PhantomDataset(30, 32, seed=3), PhantomDataset(30, 128, seed=3)
    assert small.load_image(0).shape == (32, 32) and big.load_image(0).shape == (128, 128)
    assert np.allclose(
        small.boxes[["x", "y", "w", "h"]].to_numpy() * 4, big.boxes[["x", "y", "w", "h"]].to_numpy()
    )


@pytest.mark.parametrize("finding", LOCAL)
def test_each_finding_is_drawn_inside_its_box(finding):
    """Rendering a case with and without one finding differs only inside that finding's box."""
    size, inside_share, seen = 96, [], 0
    for i in range(400):
        case = sample_case(seed=5, index=i, prevalence=0.08)
        if finding not in case.findings:
            continue
        seen += 1
        without = dataclasses.replace(case, findings={k: v for k, v in case.findings.items() if k != finding})
        diff = np.abs(render_case(case, size).astype(int) - render_case(without, size).astype(int))
        x, y, w, h = (np.array(case.boxes[finding]) * size).round().astype(int)
        mask = np.zeros_like(diff, dtype=bool)
        mask[max(0, y - 1) : y + h + 1, max(0, x - 1) : x + w + 1] = True
        inside_share.append(diff[mask].sum() / max(diff.sum(), 1))
    assert seen >= 10
    assert np.median(inside_share) > 0.95, f"{finding}: drawn outside its box"


@pytest.mark.parametrize("finding", ["Nodule", "Effusion", "Pneumothorax", "Mass", "Pleural_Thickening"])
def test_lateral_findings_occur_on_both_sides(finding):
    ds = PhantomDataset(600, 64, seed=0)
    b = ds.boxes[ds.boxes["label"] == finding]
    centre_x = b["x"] + b["w"] / 2
    assert (centre_x < 32).sum() >= 5 and (centre_x > 32).sum() >= 5


def test_images_per_patient_groups_consecutive_cases():
    ds = PhantomDataset(9, 32, images_per_patient=3)
    assert ds.meta["patient_id"].nunique() == 3


def test_bad_arguments():
    with pytest.raises(ValueError, match="size >= 16"):
        PhantomDataset(5, 8)
