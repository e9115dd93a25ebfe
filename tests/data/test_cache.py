"""Preprocessing cache: build once, reuse, rebuild on change, skip bad files, never half-written."""

import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import chest_like, png_bytes

from cxrkit.data.cache import (
    CachedDataset,
    CacheError,
    build_folder,
    cache_folder,
    cache_key,
    prepare_cache,
    read_manifest,
    remove_abandoned_builds,
)
from cxrkit.data.folder import ImageFilesDataset
from cxrkit.data.nih import NIHDataset
from cxrkit.data.synthetic import PhantomDataset
from cxrkit.data.transforms import resize_square
from cxrkit.data.workers import machine_id, process_start


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


# --- damaged caches: one line naming the file and the problem; a build rebuilds them ---------------------


def _truncate_images(c):
    p = c / "images.npy"
    os.truncate(p, p.stat().st_size // 2)


def _garbage_manifest(c):
    (c / "manifest.json").write_bytes(b"\x00\xffnot json")


def _truncate_meta(c):
    p = c / "meta.csv"
    os.truncate(p, p.stat().st_size // 3)


def _garbage_header_unrecorded_sizes(c):
    """A cache written before file sizes were recorded, its images.npy header overwritten."""
    man = json.loads((c / "manifest.json").read_text())
    del man["files"]
    (c / "manifest.json").write_text(json.dumps(man))
    with open(c / "images.npy", "r+b") as fh:
        fh.write(b"garbage!" * 8)


def _short_meta_unrecorded_sizes(c):
    man = json.loads((c / "manifest.json").read_text())
    del man["files"]
    (c / "manifest.json").write_text(json.dumps(man))
    lines = (c / "meta.csv").read_text().splitlines(keepends=True)
    (c / "meta.csv").write_text("".join(lines[:4]))


@pytest.mark.parametrize(
    ("damage", "where", "what"),
    [
        (_truncate_images, "images.npy", r"bytes, the manifest says [\d,]+ \(truncated or changed\)"),
        (_garbage_manifest, "manifest.json", "unreadable manifest"),
        (_truncate_meta, "meta.csv", r"truncated or changed"),
        (_garbage_header_unrecorded_sizes, "images.npy", r"damaged \("),
        (_short_meta_unrecorded_sizes, "meta.csv", r"3 rows, the manifest says 12 images"),
    ],
    ids=["truncated-images", "garbage-manifest", "truncated-meta", "garbage-npy-header", "short-meta"],
)
def test_a_damaged_cache_is_one_clear_error_then_rebuilt(tmp_path, caplog, damage, where, what):
    ds = PhantomDataset(12, 32)
    prepare_cache(ds, tmp_path / "c", size=32, progress=False)
    damage(tmp_path / "c")
    with pytest.raises(CacheError) as err:
        CachedDataset(tmp_path / "c")
    msg = str(err.value)
    assert "\n" not in msg and f"{tmp_path / 'c'}" in msg and where in msg
    assert re.search(what, msg) and msg.endswith(
        "rebuild it with `cxr prepare --force` (or delete the folder)"
    )
    # `cxr prepare` and `cxr train` (prepare_cache with the same key) rebuild it, saying why
    if damage is not _short_meta_unrecorded_sizes:  # undetectable without reading meta.csv: refused above
        res = prepare_cache(ds, tmp_path / "c", size=32, progress=False)
        assert not res.reused and len(CachedDataset(tmp_path / "c")) == 12
        assert "rebuilding the cache" in caplog.text


def test_cxr_on_a_damaged_cache_folder_prints_one_line_and_exits_2(tmp_path, capsys):
    from cxrkit.cli import main

    prepare_cache(PhantomDataset(12, 32), tmp_path / "c", size=32, progress=False)
    _truncate_images(tmp_path / "c")
    assert main(["prepare", str(tmp_path / "c"), "--out", str(tmp_path / "again"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"cxr prepare: error: {tmp_path / 'c' / 'images.npy'}: ") and "truncated" in err


# --- build folders: named by their process; the next build removes the abandoned ones --------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _fake_build(folder):
    folder.mkdir()
    (folder / "images.partial.npy").write_bytes(b"\x93NUMPY")
    return folder


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def test_build_folders_of_killed_processes_are_removed_and_live_ones_kept(tmp_path, sleeper):
    out = tmp_path / "c"
    me = process_start(os.getpid())
    dead = _fake_build(build_folder(out, pid=_dead_pid()))
    live = _fake_build(build_folder(out, pid=sleeper.pid))
    mine = _fake_build(build_folder(out))
    reused_pid = _fake_build(tmp_path / f".c.tmp-{machine_id()}-{os.getpid()}-{me + 1}-0badc0de")
    older_cxrkit = _fake_build(tmp_path / f".c.tmp-{_dead_pid()}-0badc0de")
    replaced = _fake_build(tmp_path / ".c.old-0badc0de")
    other_machine = _fake_build(tmp_path / f".c.tmp-00000000-{_dead_pid()}-5-0badc0de")
    abandoned_elsewhere = _fake_build(tmp_path / f".d.tmp-00000000-{_dead_pid()}-5-0badc0de")
    for p in (abandoned_elsewhere, abandoned_elsewhere / "images.partial.npy"):
        os.utime(p, (time.time() - 3 * 86400,) * 2)
    foreign = _fake_build(tmp_path / f".c.tmp-{machine_id()}-{_dead_pid()}-5-0badc0de.keep")
    not_ours = _fake_build(tmp_path / f".e.tmp-{machine_id()}-{_dead_pid()}-5-0badc0de")
    (not_ours / "thesis.tex").write_text("precious")

    res = prepare_cache(PhantomDataset(8, 32), out, size=32, progress=False)
    assert not res.reused and len(CachedDataset(out)) == 8
    gone = {dead, reused_pid, older_cxrkit, replaced, abandoned_elsewhere}
    kept = {live, mine, other_machine, foreign, not_ours}
    assert {p for p in gone | kept if p.exists()} == kept
    assert (not_ours / "thesis.tex").read_text() == "precious"
    sleeper.kill()
    sleeper.wait()
    assert remove_abandoned_builds(tmp_path) == [live]  # once its process is gone


def test_a_build_folder_names_this_machine_process_and_start(tmp_path):
    name = build_folder(tmp_path / "c").name
    assert name.startswith(f".c.tmp-{machine_id()}-{os.getpid()}-{process_start(os.getpid())}-")
    assert build_folder(tmp_path / "c") != build_folder(tmp_path / "c")  # a fresh token each time


def test_a_folder_holding_other_files_is_never_replaced(tmp_path):
    prepare_cache(PhantomDataset(4, 32, seed=1), tmp_path / "c", size=32, progress=False)
    (tmp_path / "c" / "notes.txt").write_text("mine")
    with pytest.raises(CacheError, match=r"not a cxrkit cache \(it holds 'notes.txt'\)"):
        prepare_cache(PhantomDataset(4, 32, seed=2), tmp_path / "c", size=32, progress=False)
    assert (tmp_path / "c" / "notes.txt").read_text() == "mine"


def test_parallel_build_skips_failures_like_serial(bad_files, tmp_path):
    files = [*bad_files.values()]
    for k in range(70):  # enough to use the workers
        files.append(tmp_path / f"g{k:02d}.png")
        files[-1].write_bytes(png_bytes(chest_like(40, 36, k)))
    ds = ImageFilesDataset(files)
    serial = prepare_cache(ds, tmp_path / "a", size=16, workers=1, progress=False)
    parallel = prepare_cache(ds, tmp_path / "b", size=16, workers=2, progress=False)
    assert serial.failures == parallel.failures and len(parallel.failures) == 4
    a, b = CachedDataset(tmp_path / "a"), CachedDataset(tmp_path / "b")
    assert np.array_equal(a.images, b.images) and a.meta.equals(b.meta) and len(b) == 70
    assert sorted(os.listdir(tmp_path / "b")) == sorted(
        ["images.npy", "meta.csv", "boxes.csv", "failures.csv", "manifest.json"]
    )


@pytest.mark.parametrize("source", ["chestmnist", "tfrecord", "nih-csv"])
def test_a_data_file_rewritten_at_the_same_size_with_a_new_mtime_rebuilds(
    source, chestmnist_npz, tfrecord_dir, nih_root, tmp_path
):
    """The .npz, a TFRecord shard and the NIH CSV: same byte count, other content, new mtime -> rebuild."""
    from cxrkit.config import DataConfig
    from cxrkit.data import build_dataset

    path, changed = {
        "chestmnist": (chestmnist_npz, chestmnist_npz),
        "tfrecord": (tfrecord_dir, sorted(tfrecord_dir.glob("*"))[0]),
        "nih-csv": (nih_root, nih_root / "Data_Entry_2017.csv"),
    }[source]
    kind = "nih" if source == "nih-csv" else source
    cfg = DataConfig(source=kind, path=str(path))
    prepare_cache(build_dataset(cfg), tmp_path / "c", size=32, progress=False)
    data = bytearray(changed.read_bytes())
    if source == "nih-csv":  # the pixel spacing changes: same size, other content, the same parsed labels
        data = bytearray(data.decode().replace(",0.14,0.14", ",0.15,0.14", 1), "utf8")
    changed.write_bytes(bytes(data))
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert changed.stat().st_size == st.st_size
    assert not prepare_cache(build_dataset(cfg), tmp_path / "c", size=32, progress=False).reused


def test_a_huge_path_is_shortened_in_the_one_line_error():
    from cxrkit.data.cache import shorten

    long = "/x/" + "a" * 5000 + "/scan.png"
    assert (
        len(shorten(long)) <= 201
        and shorten(long).endswith("/scan.png")
        and shorten("/short.png") == "/short.png"
    )
