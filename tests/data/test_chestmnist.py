"""ChestMNIST: local .npz, labels aligned by name, download only when asked, MD5-checked, never hangs."""

import hashlib
import http.server
import threading
import time

import numpy as np
import pytest

from cxrkit.data import chestmnist as cm
from cxrkit.data.chestmnist import ChestMNISTDataset, DatasetNotFoundError, download_chestmnist
from cxrkit.labels import LABELS


def test_loads_all_splits_with_canonical_labels(chestmnist_npz):
    ds = ChestMNISTDataset(chestmnist_npz)
    assert len(ds) == 11 and ds.load_image(0).shape == (28, 28)
    assert list(ds.meta["split"].value_counts().sort_index()) == [3, 6, 2]  # test, train, val
    first = ds.meta.iloc[0]
    assert first["Pleural_Thickening"] == 1 and first["Hernia"] == 1 and first["No Finding"] == 0
    assert ds.meta.iloc[1]["No Finding"] == 1  # all 14 negative -> No Finding
    assert ds.meta.iloc[2]["Atelectasis"] == 1


def test_one_split(chestmnist_npz):
    ds = ChestMNISTDataset(chestmnist_npz, split="val")
    assert len(ds) == 2 and set(ds.meta["split"]) == {"val"}
    assert np.array_equal(ds.load_image(1), np.load(chestmnist_npz)["val_images"][1])


def test_missing_file_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r"cxr download chestmnist --size 64.*zenodo.*MD5"):
        ChestMNISTDataset(root=tmp_path, size=64)


def test_offline_download_fails_fast_with_manual_instructions(tmp_path):
    t = time.perf_counter()
    with pytest.raises(DatasetNotFoundError, match=r"cannot download ChestMNIST.*by hand"):
        download_chestmnist(tmp_path, 28, url="http://127.0.0.1:9/chestmnist.npz", timeout=5)
    assert time.perf_counter() - t < 5 and not list(tmp_path.iterdir())  # nothing half-written


@pytest.fixture
def local_server(tmp_path):
    payload = b"not the real file"
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "f.npz").write_bytes(payload)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(tmp_path / "served"), **k)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/f.npz", payload
    srv.shutdown()


def test_download_verifies_md5(tmp_path, local_server, monkeypatch):
    url, payload = local_server
    dest = tmp_path / "data"
    with pytest.raises(DatasetNotFoundError, match="MD5"):
        download_chestmnist(dest, 28, url=url, timeout=5)
    assert not (dest / "chestmnist.npz").exists()
    monkeypatch.setitem(cm.CHESTMNIST_FILES, 28, ("chestmnist.npz", hashlib.md5(payload).hexdigest()))
    assert download_chestmnist(dest, 28, url=url, timeout=5).read_bytes() == payload


def test_not_a_chestmnist_file(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, foo=np.zeros(3))
    with pytest.raises(ValueError, match=r"x\.npz: not a ChestMNIST"):
        ChestMNISTDataset(p)


def test_sizes_are_the_medmnist_ones():
    assert sorted(cm.CHESTMNIST_FILES) == [28, 64, 128, 224]
    with pytest.raises(ValueError, match="56"):
        cm.chestmnist_file(".", 56)
    assert LABELS[-1] == "No Finding"
