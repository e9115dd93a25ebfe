"""Labelled class folders (NORMAL/PNEUMONIA) and unlabelled files for prediction."""

import numpy as np
import pytest
from conftest import shared_path

from cxrkit.data.folder import ImageFilesDataset, LabelledFolderDataset, patient_from_name


def test_class_folders_become_canonical_binary_labels(labelled_folder):
    ds = LabelledFolderDataset(labelled_folder)
    assert ds.labels == ("No Finding", "Pneumonia") and ds.task == "binary"
    assert ds.targets().sum(1).tolist() == [1.0] * 6
    assert ds.load_image(0).ndim == 2


@pytest.mark.parametrize(
    "name, pid",
    [
        ("person1_bacteria_1.jpeg", "person1"),
        ("person81_virus_152.jpeg", "person81"),
        ("IM-0115-0001.jpeg", "IM-0115"),
        ("NORMAL2-IM-0427-0001.jpeg", "NORMAL2-IM-0427"),
        ("00000013_005.png", "00000013"),
        ("scan.png", "scan"),
    ],
)
def test_patient_ids_from_file_names(name, pid):
    assert patient_from_name(name) == pid


def test_folder_needs_two_classes(tmp_path):
    (tmp_path / "only").mkdir()
    with pytest.raises(ValueError, match="at least two class folders"):
        LabelledFolderDataset(tmp_path)


def test_unlabelled_files_and_folders(labelled_folder, tmp_path):
    ds = ImageFilesDataset(
        [labelled_folder / "NORMAL", labelled_folder / "PNEUMONIA" / "person1_bacteria_2.jpeg"]
    )
    assert len(ds) == 4 and ds.labels == () and ds.task == "unlabelled"
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        ImageFilesDataset(tmp_path / "nothing-here")


def test_real_kermany_folder_groups_images_by_patient():
    ds = LabelledFolderDataset(shared_path("data", "kermany-pneumonia", "train"))
    assert len(ds) == 5216 and ds.labels == ("No Finding", "Pneumonia")
    assert int(ds.targets()[:, 1].sum()) == 3875
    assert ds.meta["patient_id"].nunique() < 0.6 * len(ds)  # many children have several images
    img = ds.load_image(0)
    assert img.dtype == np.uint8 and img.ndim == 2


def test_real_sample_files_for_prediction():
    ds = ImageFilesDataset(shared_path("data", "samples"))
    assert len(ds) == 5
    for i in range(len(ds)):
        assert ds.load_image(i).ndim == 2
