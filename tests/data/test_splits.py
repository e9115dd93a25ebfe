"""Splits: no patient in two splits, ever; stratified; official; manifests round-trip."""

import numpy as np
import pandas as pd
import pytest
from conftest import nih_meta_frame, shared_path
from hypothesis import given, settings
from hypothesis import strategies as st

from cxrkit.data.nih import NIHDataset
from cxrkit.data.splits import (
    PatientLeakError,
    check_no_patient_leak,
    fold_split,
    kfold_folds,
    load_split_manifest,
    patient_split,
    save_split_manifest,
    split_from_column,
    split_manifest,
    split_summary,
)


@settings(max_examples=60, deadline=None)
@given(
    patients=st.lists(st.integers(0, 30), min_size=1, max_size=120),
    seed=st.integers(0, 1000),
    data=st.data(),
)
def test_no_patient_leaks_and_every_row_is_placed_once(patients, seed, data):
    y = np.array(
        data.draw(
            st.lists(
                st.lists(st.sampled_from([0.0, 1.0, np.nan]), min_size=3, max_size=3),
                min_size=len(patients),
                max_size=len(patients),
            )
        )
    )
    split = patient_split(np.array(patients).astype(str), y, {"train": 0.6, "val": 0.2, "test": 0.2}, seed)
    rows = np.sort(np.concatenate(list(split.values())))
    assert np.array_equal(rows, np.arange(len(patients)))
    sets = [set(np.array(patients)[idx]) for idx in split.values()]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_fractions_and_rare_label_are_respected():
    meta = nih_meta_frame(n_patients=100, per_patient=3)
    split = patient_split(
        meta["patient_id"], meta[["A", "Rare"]].to_numpy(), {"train": 0.6, "val": 0.2, "test": 0.2}
    )
    sizes = {k: len(v) for k, v in split.items()}
    assert abs(sizes["train"] - 180) <= 9 and abs(sizes["val"] - 60) <= 9
    rare = {k: int(meta["Rare"].to_numpy()[v].sum()) for k, v in split.items()}
    assert rare == {"train": 18, "val": 6, "test": 6}  # 10 rare patients x 3 images, in proportion


def test_seeded():
    meta = nih_meta_frame()
    a = patient_split(meta["patient_id"], meta[["A"]].to_numpy(), seed=3)
    b = patient_split(meta["patient_id"], meta[["A"]].to_numpy(), seed=3)
    c = patient_split(meta["patient_id"], meta[["A"]].to_numpy(), seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_leak_check_names_the_patient():
    with pytest.raises(PatientLeakError, match="patient 7 is in both 'train' and 'test'"):
        check_no_patient_leak(np.array(["7", "7", "8"]), {"train": np.array([0]), "test": np.array([1, 2])})


def test_bad_fractions():
    with pytest.raises(ValueError, match="sum to 1"):
        patient_split(["a"], np.zeros((1, 1)), {"train": 0.5, "test": 0.2})


def test_official_split_keeps_test_and_divides_trainval_by_patient(nih_root):
    ds = NIHDataset(nih_root)
    split = split_from_column(ds.meta, targets=ds.targets(), val_fraction=0.3, seed=0)
    test_ids = set(ds.meta["image_id"].iloc[split["test"]])
    assert test_ids == {"00000004_000.png", "00000005_000.png"}
    assert len(split["val"]) > 0 and len(split["train"]) > 0


def test_manifest_round_trip(tmp_path):
    meta = nih_meta_frame()
    split = patient_split(meta["patient_id"], meta[["A"]].to_numpy())
    path = save_split_manifest(tmp_path / "run" / "split.csv", meta, split)
    back = load_split_manifest(path, meta)
    assert all(np.array_equal(back[k], split[k]) for k in split)


def test_real_shared_nih_patient_split_has_zero_patient_overlap():
    ds = NIHDataset(shared_path("data", "nih14-64px", "images"))
    split = patient_split(ds.meta["patient_id"], ds.targets(), seed=0)
    pats = {k: set(ds.meta["patient_id"].iloc[v]) for k, v in split.items()}
    assert (
        not (pats["train"] & pats["val"])
        and not (pats["train"] & pats["test"])
        and not (pats["val"] & pats["test"])
    )
    assert sum(len(v) for v in split.values()) == 1000
    # an image-wise random split of the same data would leak: check the data really needs grouping
    rng = np.random.default_rng(0)
    order = rng.permutation(1000)
    naive = set(ds.meta["patient_id"].iloc[order[:700]]) & set(ds.meta["patient_id"].iloc[order[700:]])
    assert len(naive) > 50


def test_defaults_seed_zero_and_a_tenth_of_trainval_for_validation():
    import pandas as pd

    n = 400
    meta = pd.DataFrame(
        {"patient_id": [f"p{k // 2}" for k in range(n)], "split": ["trainval"] * 300 + ["test"] * 100}
    )
    y = (np.random.default_rng(0).random((n, 2)) < 0.3).astype(float)
    default = split_from_column(meta, targets=y)
    explicit = split_from_column(meta, targets=y, val_fraction=0.1, seed=0)
    assert all(np.array_equal(default[k], explicit[k]) for k in ("train", "val", "test"))
    assert 25 <= len(default["val"]) <= 35 and len(default["test"]) == 100
    a, b = patient_split(meta["patient_id"], y), patient_split(meta["patient_id"], y, seed=0)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_a_split_column_of_only_missing_values_is_no_official_split():
    import pandas as pd

    meta = pd.DataFrame({"patient_id": ["a", "b"], "split": [None, None]})
    with pytest.raises(ValueError, match="no official split"):
        split_from_column(meta)
    with pytest.raises(ValueError, match="no official split"):
        split_from_column(meta.drop(columns="split"))


def test_tiny_data_fills_every_asked_split_and_none_with_a_zero_fraction():
    two = patient_split(["a", "b"], np.zeros((2, 0)), {"train": 0.9, "val": 0.1})
    assert len(two["train"]) == 1 and len(two["val"]) == 1
    one = patient_split(["a", "a"], np.zeros((2, 0)), {"train": 0.9, "val": 0.1})
    assert len(one["train"]) == 2 and len(one["val"]) == 0
    y = (np.random.default_rng(1).random((60, 1)) < 0.2).astype(float)
    none = patient_split([f"p{k}" for k in range(60)], y, {"train": 0.8, "val": 0.2, "test": 0.0})
    assert len(none["test"]) == 0 and len(none["train"]) + len(none["val"]) == 60


@pytest.mark.parametrize("seed", range(4))
def test_a_rare_label_seen_once_per_patient_is_split_in_proportion(seed):
    pids = np.repeat([f"p{k}" for k in range(200)], 2)
    y = np.zeros((400, 2))
    y[::40, 0] = 1  # ten patients with one rare positive image each
    y[1::40, 0] = np.nan  # their other image unknown: never a positive
    y[:, 1] = np.random.default_rng(seed).random(400) < 0.4
    split = patient_split(pids, y, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=seed)
    assert {k: int(np.nansum(y[v, 0])) for k, v in split.items()} == {"train": 6, "val": 2, "test": 2}


def test_manifest_columns_order_and_summary(tmp_path):
    meta = nih_meta_frame(n_patients=20)
    split = patient_split(meta["patient_id"], meta[["A"]].to_numpy(), {"val": 0.2, "test": 0.2, "train": 0.6})
    path = tmp_path / "new" / "deeper" / "split.csv"
    save_split_manifest(path, meta, split)
    save_split_manifest(path, meta, split)  # overwriting a manifest is fine
    assert path.read_text().splitlines()[0] == "image_id,patient_id,split"
    assert list(load_split_manifest(path, meta)) == ["val", "test", "train"]  # the saved order
    man = split_manifest(meta, split)
    assert list(man.index) == list(range(len(meta)))
    meta.loc[0, "A"] = 0.5  # not a positive: only 1 counts
    summary = split_summary(meta, split, ["A"])
    for name, idx in split.items():
        assert summary.loc[name, "images"] == len(idx)
        assert summary.loc[name, "patients"] == meta["patient_id"].iloc[idx].nunique()
        assert summary.loc[name, "A"] == (meta["A"].to_numpy()[idx] == 1).sum()


@pytest.mark.parametrize("seed", range(5))
def test_a_split_with_zero_fraction_stays_empty_when_the_others_overfill(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 6, 61)  # uneven patients: the asked splits end up over their share
    pids = np.repeat([f"p{k}" for k in range(61)], sizes)
    y = (rng.random((len(pids), 2)) < [0.1, 0.3]).astype(float)
    split = patient_split(pids, y, {"train": 0.7, "val": 0.3, "test": 0.0}, seed=seed)
    assert len(split["test"]) == 0 and len(split["train"]) + len(split["val"]) == len(pids)


def test_kfold_with_more_folds_than_patients_says_so():
    ids = ["a", "a", "b", "c", "c"]
    y = np.zeros((5, 1))
    with pytest.raises(ValueError, match=r"kfold: 4 folds need at least 4 patients .* the data has 3"):
        kfold_folds(ids, y, 4)
    with pytest.raises(ValueError, match=r"3 folds and a test share need at least 4 patients"):
        kfold_folds(ids, y, 3, test=0.2)
    folds = kfold_folds(ids, y, 3)
    assert sorted(set(folds)) == [1, 2, 3] and folds[0] == folds[1] and folds[3] == folds[4]


def test_kfold_keeps_patients_whole_and_balances_folds_and_labels():
    rng = np.random.default_rng(0)
    patients = np.repeat([f"p{k}" for k in range(60)], rng.integers(1, 4, 60))
    y = (rng.random((len(patients), 2)) < [0.3, 0.1]).astype(np.float32)
    folds = kfold_folds(patients, y, 4, test=0.2, seed=1)
    for pid in np.unique(patients):  # a patient's images share one fold (or the test share)
        assert len(set(folds[patients == pid])) == 1
    counts = np.bincount(folds, minlength=5)
    assert 0.1 < counts[0] / len(folds) < 0.3  # the test share
    assert counts[1:].min() >= 0.6 * counts[1:].max()  # folds of similar size
    for j in range(2):  # each fold holds a share of each label's positives
        assert all(y[folds == k, j].sum() > 0 for k in range(1, 5))
    assert np.array_equal(folds, kfold_folds(patients, y, 4, test=0.2, seed=1))  # seeded
    assert not np.array_equal(folds, kfold_folds(patients, y, 4, test=0.2, seed=2))


def test_fold_split_trains_on_the_other_folds_and_the_parent_validates_out_of_fold():
    folds = np.array([0, 1, 2, 3, 1, 2, 3, 0])
    s2 = fold_split(folds, 2)
    assert s2["val"].tolist() == [2, 5] and s2["train"].tolist() == [1, 3, 4, 6]
    assert s2["test"].tolist() == [0, 7]
    parent = fold_split(folds, 0)
    assert parent["val"].tolist() == [1, 2, 3, 4, 5, 6] and "train" not in parent
    assert "test" not in fold_split(np.array([1, 2, 1, 2]), 1)


def test_kfold_takes_two_folds_and_seed_zero_by_default():
    ids = [f"p{k}" for k in range(12)]
    y = np.zeros((12, 1))
    assert sorted(set(kfold_folds(ids, y, 2))) == [1, 2]
    with pytest.raises(ValueError, match="at least 2 folds"):
        kfold_folds(ids, y, 1)
    assert np.array_equal(kfold_folds(ids, y, 3), kfold_folds(ids, y, 3, test=0.0, seed=0))
    assert 0 not in kfold_folds(ids, y, 3)  # no test share unless asked


def test_leak_message_names_five_patients_then_counts_the_rest():
    split = {"train": np.arange(7), "val": np.arange(7, 14)}
    ids = np.array([f"p{k}" for k in range(7)] * 2)
    with pytest.raises(PatientLeakError, match=r"^7 patients are in two splits: .* and 2 more$") as seven:
        check_no_patient_leak(ids, split)
    assert str(seven.value).count("patient p") == 5  # five named, the rest counted
    with pytest.raises(PatientLeakError, match=r"^6 patients are in two splits: .* and 1 more$"):
        check_no_patient_leak(
            ids[[0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12]], {"train": np.arange(6), "val": np.arange(6, 12)}
        )
    with pytest.raises(PatientLeakError) as five:
        check_no_patient_leak(
            ids[[0, 1, 2, 3, 4, 7, 8, 9, 10, 11]], {"train": np.arange(5), "val": np.arange(5, 10)}
        )
    assert str(five.value).startswith("5 patients") and "more" not in str(five.value)


def test_split_changes_are_counted_and_said_in_one_line():
    from cxrkit.data.splits import SplitChanges, compare_manifest

    assert not SplitChanges() and SplitChanges().message().endswith(": ")
    meta = pd.DataFrame({"image_id": ["a", "b", "c", "new"], "patient_id": ["p1", "p2", "p9", "p4"]})
    man = pd.DataFrame({"image_id": ["a", "b", "c", "gone"], "patient_id": ["p1", "p2", "p3", "p5"]})
    changes, rows = compare_manifest(man, meta)
    assert (changes.added, changes.removed, changes.altered, changes.rekeyed) == (1, 1, 0, 1)
    assert rows.tolist() == [0, 1, 2, -1]
    assert changes.message() == (
        "data changed since the run was split: 1 image added (in no split), 1 image removed (left out), "
        "1 image with another patient key now"
    )
    two = SplitChanges(added=2, altered=3)
    assert two and two.message().endswith(
        "2 images added (in no split), 3 images altered (kept in its split)"
    )


def test_altered_images_are_found_by_their_pixel_digests():
    from cxrkit.data.splits import DIGEST, compare_manifest, pixel_digests

    images = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
    meta = pd.DataFrame({"image_id": ["a", "b", "c"], "patient_id": ["p1", "p2", "p3"]})
    man = meta.assign(**{DIGEST: list(pixel_digests(images, np.arange(3)))})
    assert not compare_manifest(man, meta, images)[0]
    changed = images.copy()
    changed[1, 0, 0] += 1
    assert compare_manifest(man, meta, changed)[0].altered == 1
    man.loc[1, DIGEST] = ""  # no digest saved for b: not checked
    assert compare_manifest(man, meta, changed)[0].altered == 0
    assert compare_manifest(man.drop(columns=DIGEST), meta, changed)[0].altered == 0
    assert compare_manifest(man, meta)[0].altered == 0  # no images given: not checked


def _manifest(tmp_path, rows: list[tuple[str, str, str]]):
    path = tmp_path / "split.csv"
    pd.DataFrame(rows, columns=["image_id", "patient_id", "split"]).to_csv(path, index=False)
    return path


def test_manifest_ids_that_look_missing_are_read_as_written(tmp_path):
    """Image ids such as "NA", "null" or "nan" are names, not missing values, in a split file."""
    names = ["NA", "null", "nan", "None", "n/a"]
    meta = pd.DataFrame({"image_id": names, "patient_id": ["NaN", "p2", "p3", "p4", "p5"]})
    path = save_split_manifest(tmp_path / "split.csv", meta, {"train": np.arange(3), "val": np.arange(3, 5)})
    back = load_split_manifest(path, meta, report=pytest.fail)  # nothing "changed"
    assert back["train"].tolist() == [0, 1, 2] and back["val"].tolist() == [3, 4]


def test_an_image_listed_twice_is_named_with_its_splits(tmp_path):
    path = _manifest(
        tmp_path,
        [
            ("a", "p1", "train"),
            ("b", "p2", "val"),
            ("b", "p2", "test"),
            ("c", "p3", "val"),
            ("c", "p3", "val"),
        ],
    )
    meta = pd.DataFrame({"image_id": ["a", "b", "c"], "patient_id": ["p1", "p2", "p3"]})
    with pytest.raises(
        ValueError, match=r"2 image\(s\) listed twice, e\.g\. 'b' in \['test', 'val'\]; expected once"
    ):
        load_split_manifest(path, meta)


def test_a_patient_in_two_splits_of_the_file_is_named_in_file_order(tmp_path):
    path = _manifest(tmp_path, [("a", "p1", "val"), ("b", "p2", "val"), ("c", "p1", "train")])
    meta = pd.DataFrame({"image_id": ["a", "b", "c"], "patient_id": ["p1", "p2", "p1"]})
    with pytest.raises(PatientLeakError, match=r"patient p1 is in both 'val' and 'train'"):
        load_split_manifest(path, meta)


def test_a_split_whose_only_known_image_is_the_first_row_is_kept(tmp_path):
    """Row 0 is a real row: a split holding only it (the rest removed) is not "gone"."""
    path = _manifest(tmp_path, [("a", "p1", "test"), ("gone", "p9", "test"), ("b", "p2", "train")])
    meta = pd.DataFrame({"image_id": ["a", "b"], "patient_id": ["p1", "p2"]})
    back = load_split_manifest(path, meta, report=lambda _m: None)
    assert back["test"].tolist() == [0] and back["train"].tolist() == [1]
    path = _manifest(tmp_path, [("gone", "p9", "test"), ("b", "p2", "train")])
    with pytest.raises(ValueError, match=r"none of the 1 images of split 'test' is in the data any more"):
        load_split_manifest(path, meta, report=lambda _m: None)
