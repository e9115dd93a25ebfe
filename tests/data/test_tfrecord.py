"""Kaggle TFRecord shards, read without TensorFlow."""

import struct

import numpy as np
import pytest

from cxrkit.data.nih import NIHDataset
from cxrkit.data.tfrecord import TFRecordDataset, TFRecordError, encode_example, parse_example, write_tfrecord
from cxrkit.labels import TFRECORD_LABEL_FEATURES


def test_example_round_trip_of_every_feature_kind():
    feats = {
        "image": [b"\x00\xffjpeg"],
        "image_id": [b"00000001_000.png"],
        "Mass": [1],
        "neg": [-5, 2**40],
        "f": [0.5, -1.25],
    }
    out = parse_example(encode_example(feats))
    assert out == {k: list(v) for k, v in feats.items()}


def test_shards_give_images_labels_and_patients(tfrecord_dir):
    ds = TFRecordDataset(tfrecord_dir)
    assert len(ds) == 5 and len(ds.files) == 2
    row = ds.meta.set_index("image_id").loc["00000003_001.png"]
    assert row["Pleural_Thickening"] == 1 and row["Effusion"] == 1 and row["Mass"] == 0
    assert row["patient_id"] == "3"
    img = ds.load_image(4)
    assert img.shape == (60, 60) and img.dtype == np.uint8


def test_metadata_join_adds_age_sex_view(tfrecord_dir):
    ds = TFRecordDataset(tfrecord_dir, metadata=NIHDataset().meta)
    row = ds.meta.set_index("image_id").loc["00000001_000.png"]
    assert row["sex"] == "M" and row["view"] == "PA" and row["age"] == 57


def test_truncated_shard_names_file_and_offset(tmp_path):
    p = tmp_path / "bad.tfrec"
    write_tfrecord(p, [encode_example({"image": [b"x"], **{f: [0] for f in TFRECORD_LABEL_FEATURES}})])
    p.write_bytes(p.read_bytes() + struct.pack("<QI", 1000, 0) + b"short")
    with pytest.raises(TFRecordError, match=r"bad.tfrec: truncated record at byte"):
        TFRecordDataset(p)


def test_missing_label_feature_is_named(tmp_path):
    p = tmp_path / "x.tfrec"
    write_tfrecord(p, [encode_example({"image": [b"x"], "Mass": [0]})])
    with pytest.raises(TFRecordError, match="lacks feature"):
        TFRecordDataset(p)
