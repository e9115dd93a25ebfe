"""Preprocessing cache: build once, reuse, rebuild on change, skip bad files, never half-written."""

import json
import os

import numpy as np
import pytest
from conftest import chest_like, png_bytes

from cxrkit.data.cache import CachedDataset, CacheError, cache_folder, cache_key, prepare_cache, read_manifest
from cxrkit.data.folder import ImageFilesDataset
from cxrkit.data.nih import NIHDataset
from cxrkit.data.synthetic import PhantomDataset
from cxrkit.data.transforms import resize_square


def test_build_then_reuse_with_same_images_and_labels(nih_root, tmp_path):
    ds = NIHDataset(nih_root)
    first = prepare_cache(ds, tmp_path / "c", size=32, progress=False)
    again = prepare_cache(NIHDataset(nih_root), tmp_path / "c", size=32, progress=False)
    assert not first.reused and again.reused and again.n_images == len(ds)
    c = CachedDataset(tmp_path / "c")
    assert isinstance(c.images, np.memmap) and c.images.shape == (len(ds), 32, 32)
    assert np.array_equal(c.targets(), ds.targets(), equal_nan=True)
    for i in range(len(ds)):
        assert np.array_equal(c.load_image(i), resize_square(ds.load_image(i), 32, "pad")[0])
    assert list(c.meta["src_w"]) == [40] * len(ds)


def test_changed_inputs_or_parameters_rebuild(nih_root, tmp_path):
    ds = NIHDataset(nih_root)
    prepare_cache(ds, tmp_path / "c", size=32, progress=False)
    assert not prepare_cache(ds, tmp_path / "c", size=32, mode="crop", progress=False).reused
    p = nih_root / "images_001" / "images" / "00000002_000.png"
    p.write_bytes(png_bytes(chest_like(40, 40, 99)))
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    res = prepare_cache(NIHDataset(nih_root), tmp_path / "c", size=32, mode="crop", progress=False)
    assert not res.reused


def test_same_size_file_rewritten_with_a_new_mtime_rebuilds(nih_root, tmp_path):
    """A PACS re-export of an uncompressed image keeps the byte count: the modification time must count."""
    prepare_cache(NIHDataset(nih_root), tmp_path / "c", size=32, progress=False)
    p = nih_root / "images_001" / "images" / "00000002_000.png"
    size = p.stat().st_size
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    assert p.stat().st_size == size
    assert not prepare_cache(NIHDataset(nih_root), tmp_path / "c", size=32, progress=False).reused
    assert prepare_cache(NIHDataset(nih_root), tmp_path / "c", size=32, progress=False).reused


def test_corrupt_files_are_listed_with_reason_and_skipped(bad_files, tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(png_bytes(chest_like()))
    ds = ImageFilesDataset([*bad_files.values(), good])
    res = prepare_cache(ds, tmp_path / "c", size=16, progress=False)
    assert res.n_images == 1 and len(res.failures) == 4
    reasons = dict(res.failures)
    assert "no pixel data" in reasons[str(bad_files["nopixels"])]
    assert "empty file" in reasons[str(bad_files["empty"])]
    c = CachedDataset(tmp_path / "c")
    assert len(c) == 1 and c.meta["path"].iat[0] == str(good)
    assert len(read_manifest(tmp_path / "c")["failures"]) == 4


class Exploding(PhantomDataset):
    def load_image(self, i):
        if i == 5:
            raise KeyboardInterrupt  # the user pressing Ctrl-C mid-build
        return super().load_image(i)


def test_interrupted_build_leaves_no_cache_that_loads(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        prepare_cache(Exploding(12, 32), tmp_path / "c", size=32, workers=1, progress=False)
    assert not (tmp_path / "c").exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(CacheError, match=r"no manifest\.json"):
        CachedDataset(tmp_path / "c")


def test_interrupted_rebuild_keeps_the_old_valid_cache(tmp_path):
    prepare_cache(PhantomDataset(12, 32, seed=1), tmp_path / "c", size=32, progress=False)
    with pytest.raises(KeyboardInterrupt):
        prepare_cache(Exploding(12, 32, seed=2), tmp_path / "c", size=32, workers=1, progress=False)
    assert len(CachedDataset(tmp_path / "c")) == 12


def test_tampered_cache_is_rejected(tmp_path):
    prepare_cache(PhantomDataset(8, 32), tmp_path / "c", size=32, progress=False)
    man = json.loads((tmp_path / "c" / "manifest.json").read_text())
    man["n_images"] = 9
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(CacheError, match=r"images\.npy has shape"):
        CachedDataset(tmp_path / "c")


def test_refuses_to_overwrite_a_folder_that_is_not_a_cache(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(CacheError, match="not a cxrkit cache"):
        prepare_cache(PhantomDataset(4, 32), tmp_path / "mine", size=32, progress=False)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_parallel_build_equals_serial(tmp_path):
    ds = PhantomDataset(150, 48, seed=4)
    prepare_cache(ds, tmp_path / "a", size=32, workers=1, progress=False)
    prepare_cache(ds, tmp_path / "b", size=32, workers=2, progress=False)
    assert np.array_equal(CachedDataset(tmp_path / "a").images, CachedDataset(tmp_path / "b").images)


def test_boxes_move_into_cached_pixels(nih_root, tmp_path):
    prepare_cache(NIHDataset(nih_root), tmp_path / "c", size=64, progress=False)
    b = CachedDataset(tmp_path / "c").boxes.set_index("image_id").loc["00000004_000.png"]
    # 1024-frame box (100, 200, 300, 400) on a 40x40 image padded to 64: scale 64/1024
    assert np.allclose([b.x, b.y, b.w, b.h], [6.25, 12.5, 18.75, 25.0]) and b.ref_w == 64


def test_metadata_only_dataset_cannot_be_cached(tmp_path):
    with pytest.raises(CacheError, match="metadata only"):
        prepare_cache(NIHDataset(), tmp_path / "c", progress=False)


def test_same_folder_spelled_differently_reuses(nih_root, tmp_path, monkeypatch):
    prepare_cache(NIHDataset(nih_root), tmp_path / "c", size=32, progress=False)
    monkeypatch.chdir(nih_root.parent)
    assert prepare_cache(NIHDataset("nih"), tmp_path / "c", size=32, progress=False).reused


def test_cache_folder_name_and_key_ignore_the_metadata_index(nih_root, tmp_path):
    assert (
        cache_folder(tmp_path, "nih", 224, "pad", "abcdef0123456789") == tmp_path / "nih-224pad-abcdef012345"
    )
    ds = NIHDataset(nih_root)
    shuffled_index = NIHDataset(nih_root)
    shuffled_index.meta = shuffled_index.meta.set_axis(range(100, 100 + len(ds.meta)))
    assert cache_key(shuffled_index, 32, "pad") == cache_key(ds, 32, "pad")


def test_fingerprint_of_missing_files_changes_when_they_appear(tmp_path):
    a = tmp_path / "a.png"
    a.write_bytes(png_bytes(chest_like()))
    ds = ImageFilesDataset([a])
    present = ds.fingerprint()
    a.unlink()  # listed, then deleted (or an empty path): no stat, no crash, a different key
    gone = ds.fingerprint()
    assert gone != present
    a.write_bytes(png_bytes(chest_like()))
    assert ds.fingerprint() not in (gone,)
    ds.meta.loc[0, "path"] = ""
    assert ds.fingerprint() not in (gone, present)
