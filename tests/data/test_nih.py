"""NIH ChestX-ray14: folder layouts, metadata (user's or shipped), official split, boxes, real images."""

import logging

import numpy as np
import pandas as pd
import pytest
from conftest import NIH_ROWS, shared_path

from cxrkit.data.nih import MetadataError, NIHDataset, parse_age, read_nih_csv
from cxrkit.labels import LABELS


def test_folder_with_nested_layout_loads_grey_images_labelled_by_name(nih_root):
    ds = NIHDataset(nih_root)
    assert len(ds) == len(NIH_ROWS) - 1  # one listed image is missing
    for i in range(len(ds)):
        img = ds.load_image(i)
        assert img.ndim == 2 and img.dtype == np.uint8  # RGBA and 16-bit files included
    row = ds.meta.set_index("image_id").loc["00000001_001.png"]
    assert row["Cardiomegaly"] == 1 and row["Emphysema"] == 1 and row["No Finding"] == 0
    assert row["patient_id"] == "1" and row["sex"] == "M" and row["view"] == "PA" and row["age"] == 58


def test_missing_images_are_reported_in_one_line_with_a_count(nih_root, caplog):
    with caplog.at_level(logging.WARNING, logger="cxrkit"):
        ds = NIHDataset(nih_root)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("1 of 8 images") and ds.missing_images == 1


def test_official_split_lists_are_used(nih_root):
    ds = NIHDataset(nih_root)
    split = ds.meta.set_index("image_id")["split"]
    assert split["00000004_000.png"] == "test" and split["00000001_000.png"] == "trainval"


def test_boxes_are_read_with_canonical_labels_in_the_1024_frame(nih_root):
    ds = NIHDataset(nih_root)
    b = ds.boxes.set_index("image_id")
    assert b.loc["00000001_001.png", "label"] == "Infiltration"  # NIH's "Infiltrate"
    assert tuple(b.loc["00000004_000.png", ["x", "y", "w", "h", "ref_w"]]) == (100, 200, 300, 400, 1024)


def test_metadata_only_mode_needs_no_images():
    ds = NIHDataset()
    assert not ds.has_images and len(ds) == 112_120
    with pytest.raises(RuntimeError, match="metadata-only"):
        ds.load_image(0)


def test_shipped_metadata_matches_the_published_counts():
    ds = NIHDataset()
    y = ds.targets()
    assert ds.meta["patient_id"].nunique() == 30_805
    counts = dict(zip(LABELS, (y > 0.5).sum(0), strict=True))
    assert counts["No Finding"] == 60_361 and counts["Infiltration"] == 19_894 and counts["Hernia"] == 227
    assert len(ds.boxes) == 984 and ds.boxes["image_id"].nunique() == 880


def test_missing_column_names_the_file_and_column(tmp_path):
    p = tmp_path / "Data_Entry_2017.csv"
    p.write_text("Image Index,Patient ID\n00000001_000.png,1\n")
    with pytest.raises(MetadataError, match=r"Data_Entry_2017.csv: missing column\(s\) \['Finding Labels'\]"):
        read_nih_csv(p)


def test_unknown_label_in_csv_names_file_and_value(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("Image Index,Finding Labels,Patient ID\n00000001_000.png,Cardiomegally,1\n")
    with pytest.raises(MetadataError, match=r"d.csv: unknown Finding Labels 'Cardiomegally'"):
        read_nih_csv(p)


def test_old_style_ages_are_parsed_and_impossible_ones_dropped():
    ages = parse_age(pd.Series(["058Y", "006M", "030D", "414", "45", None]))
    assert ages[0] == 58 and ages[1] == 0.5 and abs(ages[2] - 30 / 365.25) < 1e-9
    assert np.isnan(ages[3]) and ages[4] == 45 and np.isnan(ages[5])


def test_views_filter(nih_root):
    assert set(NIHDataset(nih_root, views=["AP"]).meta["view"]) == {"AP"}


def test_real_shared_images_load_as_one_grey_channel_labelled_from_metadata():
    root = shared_path("data", "nih14-64px", "images")
    ds = NIHDataset(root)
    assert len(ds) == 1000 and ds.meta["patient_id"].nunique() == 264
    y = ds.targets()
    assert (y[:, LABELS.index("No Finding")] == 1).sum() == 499
    assert (y[:, LABELS.index("Effusion")] == 1).sum() == 170 and (
        y[:, LABELS.index("Hernia")] == 1
    ).sum() == 9
    assert ds.meta["view"].value_counts().to_dict() == {"PA": 637, "AP": 363}
    from PIL import Image

    rgba = [i for i, p in enumerate(ds.meta["path"]) if Image.open(p).mode == "RGBA"]
    assert len(rgba) == 21
    for i in [*rgba, 0, 500, 999]:
        img = ds.load_image(i)
        assert img.shape == (64, 64) and img.dtype == np.uint8
        assert np.array_equal(img, np.asarray(Image.open(ds.meta["path"].iat[i]))[..., 0])
    assert ds.boxes["image_id"].nunique() == 9
