"""cxr predict reads ahead of the engine in threads: every chunk exactly once and in order, never more
than two chunks ahead (memory stays flat), and the same table as reading then scoring."""

import threading
import time

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrkit.data import build_dataset
from cxrkit.data.transforms import InputSpec
from cxrkit.workflows import predict as predict_mod
from cxrkit.workflows.predict import predict_files, prepared_chunks


def _arrays(n: int) -> list[tuple[str, np.ndarray]]:
    return [(f"array[{k}]", np.full((40, 40), k, np.uint8)) for k in range(n)]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 8, 16, 17, 40])
@pytest.mark.parametrize("chunk", [1, 2, 3, 16])
@pytest.mark.parametrize("workers", [0, 2])
def test_every_item_once_in_order(n, chunk, workers):
    chunks = list(prepared_chunks(_arrays(n), InputSpec(16), chunk, workers=workers))
    sources = [r["source"] for c in chunks for r in c.rows]
    assert sources == [f"array[{k}]" for k in range(n)]
    assert [len(c.rows) for c in chunks] == [min(chunk, n - s) for s in range(0, n, chunk)]


def test_reading_stays_at_most_two_chunks_ahead(monkeypatch):
    started: list[int] = []
    lock = threading.Lock()
    real = predict_mod.prepare_items

    def counting(items, *args, **kwargs):
        with lock:
            started.append(len(started))
        return real(items, *args, **kwargs)

    monkeypatch.setattr(predict_mod, "prepare_items", counting)
    gen = prepared_chunks(_arrays(40), InputSpec(16), 2, workers=2)
    next(gen)  # the consumer is now "scoring" chunk 0 and takes its time
    time.sleep(0.3)
    assert len(started) == 3  # chunk 0 (taken), 1 (ready) and 2 (being read): no more
    next(gen)
    time.sleep(0.3)
    assert len(started) == 4
    gen.close()  # the consumer stops (an error, Ctrl-C): nothing more is read
    time.sleep(0.2)
    assert len(started) == 4


def test_threaded_reading_gives_the_same_table(phantom_run, tmp_path, monkeypatch):
    threads: set[str] = set()
    real = predict_mod.prepare_items

    def spy(*args, **kwargs):
        threads.add(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(predict_mod, "prepare_items", spy)
    folder = tmp_path / "mixed"
    folder.mkdir()
    ds = build_dataset({"source": "phantom", "n": 19, "size": 256, "seed": 5})
    for k in range(19):
        Image.fromarray(ds.load_image(k)).save(folder / f"img{k}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    common = dict(progress=False, log=lambda m: None)
    serial = predict_files(phantom_run, [folder], chunk=4, workers=0, **common)
    assert threads == {threading.main_thread().name}
    threaded = predict_files(phantom_run, [folder], chunk=3, workers=3, **common)
    assert any(t.startswith("cxr-ahead") for t in threads)  # 20 inputs: read in threads
    pd.testing.assert_frame_equal(serial, threaded)
    assert serial["error"].iloc[0] != "" and (serial["error"].iloc[1:] == "").all()
