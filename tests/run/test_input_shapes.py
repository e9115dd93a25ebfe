"""One row per input, whatever its kind; never "normal" for a study that was not really assessed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import chest_like, png_bytes, write_dicom
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxrkit.data.transforms import InputSpec
from cxrkit.run.inputs import expand_inputs, split_array
from cxrkit.run.model import RunModel, build_network
from cxrkit.run.package import ModelPackage, OperatingPoint

LABELS = ("No Finding", "Pneumonia")


def _everything_normal_run() -> RunModel:
    """A tiny run whose operating point calls every scored study normal (threshold 1 is never reached)."""
    torch.manual_seed(0)
    model = build_network("cnn3_32_64_128", {}, len(LABELS)).eval()
    pkg = ModelPackage(
        "cnn3_32_64_128",
        {},
        LABELS,
        "multilabel",
        InputSpec(32),
        (1.0, 1.0),
        {"0.5": (0.5, 0.5)},
        OperatingPoint("no_finding", 0.95, 1.0, 0.95, 0.5, 10),
    )
    return RunModel(Path("."), model, pkg, torch.device("cpu"))


@pytest.fixture(scope="module")
def run() -> RunModel:
    return _everything_normal_run()


@pytest.mark.parametrize(
    ("shape", "rows"),
    [
        ((64, 80), 1),
        ((64, 80, 1), 1),
        ((64, 80, 3), 1),
        ((64, 80, 4), 1),
        ((64, 80, 2), 1),  # grey + alpha, as np.asarray gives an LA picture
        ((5, 64, 80), 5),
        ((1, 64, 80), 1),
        ((2, 64, 80), 2),
        ((6, 64, 80, 3), 6),
        ((2, 64, 80, 1), 2),
        ((3, 64, 80, 2), 3),
    ],
)
def test_array_shapes_give_one_row_per_image(run, shape, rows):
    arr = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    assert len(split_array(arr)) == rows
    table = run.predict(arr)
    assert len(table) == rows and list(table["source"]) == [f"array[{k}]" for k in range(rows)]


@pytest.mark.parametrize(
    ("arr", "words"),
    [
        (np.zeros((3, 64, 80)), "ambiguous"),
        (np.zeros((4, 64, 80)), "ambiguous"),
        (np.zeros(262_144), "is not an image"),
        (np.array(0.5), "is not an image"),
        (np.zeros((2, 3, 64, 80, 1)), "is not an image"),
        (np.zeros((2, 64, 80, 5)), "is not an image"),
        (np.zeros((64, 64, 5)), "looks like one image with 5 channels"),  # never 64 rows
    ],
)
def test_shapes_that_are_no_image_are_one_clear_error(run, arr, words):
    with pytest.raises(ValueError, match=words) as info:
        run.predict(arr)
    assert str(tuple(arr.shape)) in str(info.value) and "\n" not in str(info.value)


def test_channels_last_colour_is_one_image_with_its_grey(run):
    grey = chest_like(64, 64)
    rgb = np.dstack([grey] * 3)
    table = run.predict([grey, rgb, np.moveaxis(rgb, -1, 0).transpose(1, 2, 0)])
    probs = table[list(LABELS)].to_numpy()
    assert len(table) == 3 and np.allclose(probs, probs[0])


def test_an_array_with_a_nan_is_one_unreadable_row(run):
    img = chest_like(64, 64).astype(np.float32) / 255
    img[3, 4] = np.nan
    table = run.predict([img, chest_like(64, 64)])
    assert len(table) == 2 and table["triage_flag"].tolist() == ["unreadable", "normal"]
    assert "NaN" in table["error"].iloc[0]


def test_constant_files_of_every_kind_are_not_assessable(run, tmp_path):
    """A blank PNG, a 16-bit constant PNG, an all-zero DICOM: flagged, never normal, even by this run."""
    (tmp_path / "black.png").write_bytes(png_bytes(np.zeros((128, 128), np.uint8)))
    (tmp_path / "white.png").write_bytes(png_bytes(np.full((128, 128), 255, np.uint8)))
    (tmp_path / "flat16.png").write_bytes(png_bytes(np.full((128, 128), 3000, np.uint16)))
    write_dicom(tmp_path / "zero.dcm", np.zeros((128, 128), np.uint16))
    (tmp_path / "good.png").write_bytes(png_bytes(chest_like(128, 128)))
    table = run.predict(tmp_path).set_index("image_id")
    assert table.loc["good.png", "triage_flag"] == "normal"  # this run calls every scored study normal
    for name in ("black.png", "white.png", "flat16.png", "zero.dcm"):
        assert table.loc[name, "triage_flag"] == "not assessable", name
        assert "no image content" in table.loc[name, "error"]


KINDS = ("blank", "noise", "chest", "nan", "tiny", "colour", "stack")


def _make(kind: str, value: int, side: int) -> np.ndarray:
    rng = np.random.default_rng(value)
    if kind == "blank":
        return np.full((side, side), value, np.uint8)
    if kind == "noise":
        return rng.integers(0, 256, (side, side)).astype(np.uint8)
    if kind == "chest":
        return chest_like(side, side, seed=value)
    if kind == "nan":
        a = chest_like(side, side).astype(np.float64)
        a[0, 0] = np.nan
        return a
    if kind == "tiny":
        return chest_like(8, 8)
    if kind == "colour":
        return np.dstack([np.full((side, side), value, np.uint8)] * 3)  # constant colour
    return np.stack([np.full((side, side), value, np.uint8), chest_like(side, side)])  # 2 images


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.sampled_from(KINDS), st.integers(0, 255), st.integers(32, 80)), min_size=1, max_size=6
    )
)
def test_rows_equal_inputs_and_no_constant_image_reads_normal(run, specs):
    inputs = [_make(*s) for s in specs]
    expected = sum(2 if kind == "stack" else 1 for kind, _, _ in specs)
    assert len(expand_inputs(inputs)) == expected
    table = run.predict(inputs)
    assert len(table) == expected
    flags = table["triage_flag"].tolist()
    k = 0
    for kind, _, _ in specs:
        constant = kind in ("blank", "colour", "stack")  # a stack's first image is constant
        if constant:
            assert flags[k] == "not assessable", (kind, flags[k])
        if kind in ("nan", "tiny"):
            assert flags[k] != "normal"
        k += 2 if kind == "stack" else 1


def test_channel_layouts_give_the_grey_images_probabilities(run):
    grey = chest_like(64, 64, seed=4)
    alpha = np.full_like(grey, 255)
    layouts = [
        grey,
        grey[..., None],
        np.dstack([grey, alpha]),
        np.dstack([grey] * 3),
        np.dstack([grey] * 3 + [alpha]),
    ]
    stacks = [
        grey[None],
        grey[None, ..., None],
        np.dstack([grey, alpha])[None],
        np.stack([np.dstack([grey] * 3)]),
    ]
    table = run.predict(layouts + stacks)
    probs = table[list(LABELS)].to_numpy()
    assert len(table) == 9 and (table["error"] == "").all()
    np.testing.assert_allclose(probs, np.repeat(probs[:1], 9, axis=0), atol=1e-6)


def test_prepare_items_rows_say_what_each_input_is(run, tmp_path):
    import pydicom

    from cxrkit.run.inputs import prepare_inputs

    (tmp_path / "empty").mkdir()
    dcm = write_dicom(tmp_path / "p.dcm", chest_like(64, 64).astype(np.uint16))
    ds = pydicom.dcmread(dcm)
    ds.PatientID = "PAT-3"
    ds.save_as(dcm)
    nomod = write_dicom(tmp_path / "m.dcm", chest_like(64, 64, seed=2).astype(np.uint16))
    ds = pydicom.dcmread(nomod)
    del ds.Modality
    ds.save_as(nomod)
    prepared = prepare_inputs([tmp_path / "empty", dcm, nomod], run.spec)
    rows = {Path(r["source"]).name: r for r in prepared.rows}
    assert "no PNG/JPEG/DICOM files" in rows["empty"]["error"] and rows["empty"]["status"] == "unreadable"
    assert rows["p.dcm"]["patient_id"] == "PAT-3" and rows["p.dcm"]["status"] == "ok"
    assert rows["m.dcm"]["status"] == "not assessable"  # no Modality: refused unless accepted
    assert prepared.originals is None and prepared.ok.tolist() == [1] and prepared.images.shape == (1, 32, 32)
    kept = prepare_inputs([nomod], run.spec, keep_originals=True, accept_missing_modality=True)
    assert kept.rows[0]["status"] == "ok" and kept.originals[0].shape == (64, 64)
    none = prepare_inputs([tmp_path / "empty"], run.spec)
    assert none.images.shape == (0, 32, 32) and none.ok.dtype == np.int64 and len(none.ok) == 0
    assert none.rows_frame().empty and none.failures == [(str(tmp_path / "empty"), none.rows[0]["error"])]


def test_colour_arrays_keep_their_channels_and_narrow_stacks_are_images():
    rgb = np.zeros((40, 30, 3), np.uint8)
    rgb[..., 0] = 255  # pure red: taking channel 0 as grey would make it white
    (one,) = split_array(rgb)
    assert one.shape == (40, 30, 3)
    assert [a.shape for a in split_array(np.stack([rgb, rgb]))] == [(40, 30, 3)] * 2
    assert [a.shape for a in split_array(np.zeros((2, 40, 30, 2)))] == [(40, 30)] * 2  # grey + alpha
    assert [a.shape for a in split_array(np.zeros((5, 40, 8)))] == [(40, 8)] * 5  # 8 px wide: images
    with pytest.raises(ValueError, match="looks like one image with 7 channels"):
        split_array(np.zeros((5, 40, 7)))


class _Bar:
    """A stand-in for an open tqdm bar: counts updates, must not be closed by the callee."""

    def __init__(self) -> None:
        self.n, self.closed = 0, False

    def update(self, k: int) -> None:
        self.n += k

    def close(self) -> None:
        self.closed = True


def test_prepare_items_defaults_and_a_callers_bar(tmp_path, capsys, monkeypatch):
    import os

    import pydicom

    from cxrkit.run import inputs
    from cxrkit.run.inputs import prepare_items

    (tmp_path / "wide.png").write_bytes(png_bytes(chest_like(30, 50)))
    dcm = write_dicom(tmp_path / "m.dcm", chest_like(64, 64).astype(np.uint16))
    ds = pydicom.dcmread(dcm)
    del ds.Modality
    ds.save_as(dcm)
    items = expand_inputs([tmp_path / "wide.png", dcm])
    spec = InputSpec(16, "pad")
    prepared = prepare_items(items, spec)  # defaults: no originals, no bar, Modality required
    assert prepared.originals is None and "reading" not in capsys.readouterr().err
    assert prepared.rows[0]["src_w"] == 50 and prepared.rows[0]["src_h"] == 30
    assert prepared.rows[1]["status"] == "not assessable" and "Modality" in prepared.rows[1]["error"]
    prepare_items(items, spec, progress=True)
    assert "reading" in capsys.readouterr().err
    bar = _Bar()
    prepare_items(items, spec, progress=bar)
    assert bar.n == len(items) and not bar.closed  # advanced once per item, left open for its owner
    modes = []
    monkeypatch.setattr(inputs.os, "access", lambda path, mode: modes.append(mode) or True)
    (tmp_path / "empty").mkdir()
    prepared = prepare_items(expand_inputs([tmp_path / "empty"]), spec)
    assert "no PNG/JPEG/DICOM" in prepared.rows[0]["error"]
    assert (os.R_OK | os.X_OK) in modes  # a folder counts as "empty" only if it could be listed
