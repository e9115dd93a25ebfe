"""Every registered source returns the same sample/metadata shape; DATA paths are detected."""

import numpy as np
import pytest

from cxrkit.config import SOURCES, DataConfig
from cxrkit.data import build_dataset, detect_source
from cxrkit.data.base import META_COLUMNS
from cxrkit.data.cache import prepare_cache
from cxrkit.data.synthetic import PhantomDataset


@pytest.fixture
def source_paths(nih_root, chestmnist_npz, tfrecord_dir, labelled_folder, tmp_path):
    cache = tmp_path / "cache"
    prepare_cache(PhantomDataset(10, 32), cache, size=32, progress=False)
    table = labelled_folder / "site.csv"
    rows = [
        f"{p.relative_to(labelled_folder)},{int(p.parent.name == 'NORMAL')}"
        for p in sorted(labelled_folder.glob("*/*"))
    ]
    table.write_text("path,No Finding\n" + "\n".join(rows) + "\n")
    return {
        "nih": nih_root,
        "chestmnist": chestmnist_npz,
        "tfrecord": tfrecord_dir,
        "folder": labelled_folder,
        "files": labelled_folder / "NORMAL",
        "phantom": None,
        "cache": cache,
        "table": table,
    }


@pytest.mark.parametrize("source", SOURCES)
def test_every_source_has_the_common_shape(source, source_paths):
    path = source_paths[source]
    ds = build_dataset(DataConfig(source=source, path=str(path) if path else None, n=12, size=32))
    assert len(ds) > 0 and all(c in ds.meta.columns for c in META_COLUMNS)
    y = ds.targets()
    assert y.dtype == np.float32 and y.shape == (len(ds), len(ds.labels))
    sample = ds[0]
    assert set(sample) == {"image", "labels", "image_id", "index"}
    assert sample["image"].dtype == np.uint8 and sample["image"].ndim == 2
    assert sample["image_id"] == ds.meta["image_id"].iat[0]
    sub = ds.subset([0])
    assert len(sub) == 1 and np.array_equal(sub.load_image(0), sample["image"])
    if path is not None:
        assert detect_source(path) == source


def test_unknown_source_is_named():
    with pytest.raises(ValueError, match="'dicomweb'"):
        DataConfig(source="dicomweb")
