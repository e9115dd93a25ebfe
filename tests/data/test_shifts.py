"""Acquisition shifts: severity 0 is the identity, severity escalates, draws are seeded per image and
independent of the batch, the simple shifts match independent formulas, and bad input is refused by name."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from cxrkit.data import shifts
from cxrkit.data.shifts import (
    PHOTOMETRIC,
    SEVERITIES,
    SHIFTS,
    Shift,
    apply_shift,
    augment_shifts,
    mixed_shift,
)

NAMES = list(SHIFTS)
RANDOM = ["brightness", "gaussian_noise", "poisson_noise", "rotate", "translate", "crop", "text"]
DETERMINISTIC = [n for n in NAMES if n not in RANDOM]


def chest_like(n: int = 6, s: int = 64, seed: int = 0) -> np.ndarray:
    """Chest-like phantoms: a smooth vertical gradient, two dark lung ellipses and a bright heart, each
    image slightly different (placement, faint noise) and with no pixel at 0 or 255."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:s, 0:s] / s
    out = np.empty((n, s, s), np.uint8)
    for i in range(n):
        a, b, c = rng.uniform(-0.05, 0.05, 3)
        img = 70 + 120 * y + 10 * np.sin(8 * x + c)
        for cx in (0.3 + a, 0.7 + b):
            img = np.where(((x - cx) / 0.15) ** 2 + ((y - 0.45 - c) / 0.3) ** 2 < 1, 40 + 30 * y, img)
        img = np.where(((x - 0.55 - a) / 0.12) ** 2 + ((y - 0.65) / 0.12) ** 2 < 1, 210, img)
        out[i] = np.clip(img + rng.normal(0, 2, (s, s)), 5, 250)
    return out


def change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(float) - b).mean())


@pytest.fixture(scope="module")
def imgs() -> np.ndarray:
    x = chest_like()
    x.flags.writeable = False  # any in-place write by a shift would raise
    return x


def test_public_table():
    assert NAMES == [
        "gamma", "contrast", "brightness", "gaussian_noise", "poisson_noise", "blur",
        "downsample", "jpeg", "rotate", "translate", "crop", "text",
    ]  # fmt: skip
    assert PHOTOMETRIC == (
        "gamma", "contrast", "brightness", "gaussian_noise", "poisson_noise", "blur", "downsample", "jpeg",
    )  # fmt: skip
    assert SEVERITIES == (1, 2, 3, 4, 5)
    for name, sh in SHIFTS.items():
        assert isinstance(sh, Shift) and sh.name == name and len(sh.levels) == 5 and sh.simulates
        assert sh.kind in {"photometric", "resolution", "noise", "geometric", "artifact"}
    with pytest.raises(AttributeError):
        SHIFTS["gamma"].levels = (1.0,) * 5  # type: ignore[misc]


@pytest.mark.parametrize("name", NAMES)
def test_severity_zero_is_an_exact_copy_and_input_is_never_modified(imgs, name):
    before = imgs.copy()
    out = apply_shift(imgs, name, 0)
    assert np.array_equal(out, imgs) and out is not imgs and not np.shares_memory(out, imgs)
    for s in SEVERITIES:
        res = apply_shift(imgs, name, s, seed=3)
        assert res.dtype == np.uint8 and res.shape == imgs.shape and not np.shares_memory(res, imgs)
    assert np.array_equal(imgs, before)


@pytest.mark.parametrize("size", [28, 64])
@pytest.mark.parametrize("name", NAMES)
def test_every_image_changes_and_change_grows_strictly_with_severity(name, size):
    imgs = chest_like(6, size)
    outs = [apply_shift(imgs, name, s) for s in SEVERITIES]
    for out in outs:
        assert all(not np.array_equal(o, i) for o, i in zip(out, imgs, strict=True))
    changes = [change(o, imgs) for o in outs]
    assert all(np.diff(changes) > 0), changes


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_bytes(imgs, name):
    assert np.array_equal(apply_shift(imgs, name, 3, seed=7), apply_shift(imgs, name, 3, seed=7))


@pytest.mark.parametrize("name", RANDOM)
def test_random_shifts_follow_the_seed(imgs, name):
    assert not np.array_equal(apply_shift(imgs, name, 3, seed=1), apply_shift(imgs, name, 3, seed=2))


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_shifts_ignore_the_seed(imgs, name):
    assert np.array_equal(apply_shift(imgs, name, 3, seed=1), apply_shift(imgs, name, 3, seed=2))


@pytest.mark.parametrize("name", NAMES)
def test_an_image_gets_the_same_result_alone_in_any_batch_or_order(imgs, name):
    batch = apply_shift(imgs, name, 4, seed=5)
    for i in range(len(imgs)):
        assert np.array_equal(apply_shift(imgs[i : i + 1], name, 4, seed=5)[0], batch[i])
    assert np.array_equal(apply_shift(imgs[:3], name, 4, seed=5), batch[:3])
    assert np.array_equal(apply_shift(imgs[::-1], name, 4, seed=5), batch[::-1])


def test_images_in_a_batch_even_identical_ones_get_their_own_draws():
    x = np.repeat(chest_like(1), 4, axis=0)
    out = apply_shift(x, "gaussian_noise", 2)
    residuals = out.astype(int) - x
    assert all(not np.array_equal(residuals[i], residuals[j]) for i in range(4) for j in range(i))
    assert np.array_equal(out[0], apply_shift(x[:1], "gaussian_noise", 2)[0])  # the first copy = alone


def test_severities_strengthen_the_same_draw():
    x = np.full((4, 48, 48), 128, np.uint8)
    r2 = apply_shift(x, "gaussian_noise", 2).astype(float) - 128
    r4 = apply_shift(x, "gaussian_noise", 4).astype(float) - 128
    for a, b in zip(r2, r4, strict=True):  # the same noise field, scaled
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99


def test_gamma_matches_the_power_law():
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    for s in SEVERITIES:
        g = SHIFTS["gamma"].levels[s - 1]
        expected = np.round(255 * (x / 255.0) ** g)
        assert np.abs(apply_shift(x, "gamma", s).astype(float) - expected).max() <= 1


def test_contrast_matches_the_window_formula(imgs):
    f = imgs.astype(float)
    mean = f.mean(axis=(1, 2), keepdims=True)
    for s in SEVERITIES:
        c = SHIFTS["contrast"].levels[s - 1]
        expected = np.clip(np.round(mean + c * (f - mean)), 0, 255)
        assert np.abs(apply_shift(imgs, "contrast", s).astype(float) - expected).max() <= 1


def test_brightness_is_an_exact_offset_with_clipping_and_a_sign_per_image():
    ramp = np.tile(np.linspace(0, 255, 48).round().astype(np.uint8), (48, 1))
    x = np.stack([np.roll(ramp, k, axis=1) for k in range(16)])  # 16 different images, 0..255 each
    signs = set()
    for s in SEVERITIES:
        level = SHIFTS["brightness"].levels[s - 1]
        out = apply_shift(x, "brightness", s, seed=11).astype(int)
        for o, i in zip(out, x.astype(int), strict=True):
            up, down = np.clip(i + level, 0, 255), np.clip(i - level, 0, 255)
            assert np.array_equal(o, up) or np.array_equal(o, down)
            signs.add(bool(np.array_equal(o, up)))
    assert signs == {True, False}


def test_gaussian_noise_has_the_level_as_std_on_mid_grey():
    x = np.full((4, 64, 64), 128, np.uint8)
    for s in SEVERITIES:
        sigma = SHIFTS["gaussian_noise"].levels[s - 1]
        residual = apply_shift(x, "gaussian_noise", s).astype(float) - 128
        assert abs(residual.std() - sigma) < 0.15 * sigma and abs(residual.mean()) < 0.15 * sigma


@pytest.mark.parametrize("name", ["gaussian_noise", "poisson_noise", "brightness"])
def test_values_saturate_at_black_and_white_instead_of_wrapping(name):
    x = np.stack([np.full((32, 32), v, np.uint8) for v in (3, 128, 252)])
    out = apply_shift(x, name, 5, seed=2).astype(int)
    assert (np.abs(out - x) <= 150).all()  # a wrapped value would jump by about 256


def test_poisson_noise_keeps_the_mean_and_has_the_dose_variance():
    x = np.full((4, 64, 64), 128, np.uint8)
    for s in SEVERITIES:
        lam = SHIFTS["poisson_noise"].levels[s - 1]
        out = apply_shift(x, "poisson_noise", s).astype(float)
        expected_std = 255 * np.sqrt(128 / 255 / lam)  # std of poisson(k)/lam*255 with k ~ 128/255*lam
        assert abs(out.mean() - 128) < 1.5 and abs(out.std() - expected_std) < 0.15 * expected_std
    dark = np.zeros((1, 16, 16), np.uint8)
    assert np.array_equal(apply_shift(dark, "poisson_noise", 5), dark)  # no photons, no noise


def test_blur_matches_a_gaussian_filter():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = chest_like(2, 128)
    for s in (3, 4, 5):
        sigma = SHIFTS["blur"].levels[s - 1]  # 128 px: unscaled
        expected = ndimage.gaussian_filter(x.astype(float), (0, sigma, sigma), mode="nearest")
        diff = np.abs(apply_shift(x, "blur", s).astype(float) - expected)  # discrete vs sampled kernel
        assert diff.max() <= 3 and diff.mean() < 0.5


def test_blur_is_the_same_fraction_of_the_image_at_any_size():
    """A blurred step edge: its spread (std of the derivative) / side = level / 128, at 64 and 256 px."""
    for size in (64, 256):
        step = np.zeros((1, size, size), np.uint8)
        step[:, :, size // 2 :] = 255
        for s in (2, 4):
            row = apply_shift(step, "blur", s)[0, size // 2].astype(float)
            d = np.diff(row) / 255
            pos = np.arange(len(d))
            spread = np.sqrt((d * (pos - (d * pos).sum()) ** 2).sum())
            expected = SHIFTS["blur"].levels[s - 1] / 128
            assert abs(spread / size - expected) < 0.1 * expected, (size, s, spread)


def test_constant_images_stay_constant_under_resolution_shifts():
    x = np.full((2, 48, 48), 90, np.uint8)
    for name in ("blur", "downsample", "rotate", "translate"):
        assert np.array_equal(apply_shift(x, name, 5), x), name
    assert np.abs(apply_shift(x, "jpeg", 5).astype(int) - 90).max() <= 4  # coarse DC quantisation only


@pytest.mark.parametrize("name", ["rotate", "translate", "crop"])
def test_geometric_shifts_keep_shape_and_fill_edges_without_zeros(imgs, name):
    out = apply_shift(imgs, name, 5)
    assert out.shape == imgs.shape
    if name != "crop":  # edge fill: no black bands cut into the image
        assert out.min() >= imgs.min()


def dot_image(s: int, dy: int, dx: int) -> np.ndarray:
    x = np.full((1, s, s), 20, np.uint8)
    c = (s - 1) // 2
    x[0, c + dy - 1 : c + dy + 2, c + dx - 1 : c + dx + 2] = 250  # a 3x3 dot
    return x


def centroid(img: np.ndarray) -> np.ndarray:
    w = np.clip(img.astype(float) - 20, 0, None)
    ys, xs = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    return np.array([(w * ys).sum(), (w * xs).sum()]) / w.sum()


def test_rotate_turns_a_dot_about_the_centre_by_the_level_and_keeps_the_centre():
    s, r = 65, 24
    x = dot_image(s, 0, r)
    for sev in SEVERITIES:
        out = apply_shift(x, "rotate", sev)[0]
        dy, dx = centroid(out) - (s - 1) / 2
        assert abs(np.hypot(dy, dx) - r) < 0.5
        assert abs(abs(np.degrees(np.arctan2(dy, dx))) - SHIFTS["rotate"].levels[sev - 1]) < 0.5
    imgs = chest_like(4, s)
    out = apply_shift(imgs, "rotate", 5)
    assert np.abs(out[:, 32, 32].astype(int) - imgs[:, 32, 32]).max() <= 1  # the centre stays put
    yy, xx = np.mgrid[0:s, 0:s] - (s - 1) / 2
    disc = np.where(np.hypot(yy, xx) < 12, 200, 60).astype(np.uint8)[None]  # rotation-invariant
    assert change(apply_shift(disc, "rotate", 5), disc) < 0.25 * change(out, imgs)


def test_translate_moves_a_dot_by_the_level_fraction():
    s = 65
    x = dot_image(s, 0, 0)
    for sev in SEVERITIES:
        moved = centroid(apply_shift(x, "translate", sev)[0]) - centroid(x[0])
        assert abs(np.hypot(*moved) - SHIFTS["translate"].levels[sev - 1] * s) < 0.3


def test_crop_blackens_each_side_by_half_to_all_of_the_level_and_leaves_the_rest(imgs):
    s = imgs.shape[1]
    for sev in SEVERITIES:
        level = SHIFTS["crop"].levels[sev - 1]
        out = apply_shift(imgs, "crop", sev)
        for o, i in zip(out, imgs, strict=True):
            black = o == 0
            rows, cols = np.flatnonzero(~black.all(1)), np.flatnonzero(~black.all(0))
            bands = [rows[0], s - 1 - rows[-1], cols[0], s - 1 - cols[-1]]
            assert all(np.ceil(0.5 * level * s - 1e-9) <= b <= np.ceil(level * s - 1e-9) for b in bands)
            assert np.array_equal(o[~black], i[~black]) and black.sum() == (i != o).sum()


def test_text_stamps_only_white_into_the_corners(imgs):
    s = imgs.shape[1]
    for sev in SEVERITIES:
        out = apply_shift(imgs, "text", sev)
        changed = out != imgs
        assert (out[changed] == 255).all() and changed.any(axis=(1, 2)).all()
        assert not changed[:, s // 4 : 3 * s // 4, :].any()  # the markers sit in top and bottom bands


def test_mixed_shift_draws_from_the_sets_and_is_the_same_family():
    x = chest_like(600, 24, seed=1)
    out, names, sevs = mixed_shift(x, seed=4)
    assert out.shape == x.shape and out.dtype == np.uint8
    assert names.dtype == object and sevs.dtype.kind == "i" and len(names) == len(sevs) == 600
    assert set(names) == set(SHIFTS) and set(sevs.tolist()) == set(SEVERITIES)
    for i in range(0, 600, 7):
        assert np.array_equal(out[i], apply_shift(x[i : i + 1], names[i], int(sevs[i]), seed=4)[0])
    again = mixed_shift(x, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(again, (out, names, sevs), strict=True))
    perm = np.random.default_rng(0).permutation(600)[:50]  # any subset, any order: the same per image
    sub = mixed_shift(x[perm], seed=4)
    assert all(np.array_equal(a, b[perm]) for a, b in zip(sub, (out, names, sevs), strict=True))
    other = mixed_shift(x, seed=5)
    assert not np.array_equal(other[1], names)


def test_mixed_shift_restricted_names_and_severities():
    x = chest_like(40, 32)
    out, names, sevs = mixed_shift(x, names=["gamma", "blur"], severities=[2, 4])
    assert set(names) == {"gamma", "blur"} and set(sevs.tolist()) == {2, 4}
    for i in range(40):
        assert np.array_equal(out[i], apply_shift(x[i : i + 1], names[i], int(sevs[i]))[0])


def test_augment_p0_is_an_equal_copy_and_p1_changes_every_image():
    x = chest_like(24, 48)
    out = augment_shifts(x, np.random.default_rng(0), p=0)
    assert np.array_equal(out, x) and not np.shares_memory(out, x)
    for seed in range(3):
        out = augment_shifts(x, np.random.default_rng(seed), p=1)
        assert all(not np.array_equal(o, i) for o, i in zip(out, x, strict=True))


def test_augment_uses_only_photometric_shifts_by_default_up_to_max_severity(monkeypatch):
    assert inspect.signature(augment_shifts).parameters["names"].default == PHOTOMETRIC
    used = []
    for name, fn in list(shifts._FUNCS.items()):

        def spy(x, severity, gens, _name=name, _fn=fn):
            used.append((_name, severity))
            return _fn(x, severity, gens)

        monkeypatch.setitem(shifts._FUNCS, name, spy)
    augment_shifts(chest_like(200, 24), np.random.default_rng(1), p=1)
    assert {n for n, _ in used} == set(PHOTOMETRIC) and {s for _, s in used} == {1, 2, 3}


def test_augment_draws_only_from_the_given_generator():
    x = chest_like(12, 32)
    np.random.seed(123)
    expected_global = np.random.random()
    np.random.seed(123)
    a = augment_shifts(x, np.random.default_rng(9), p=0.7)
    assert np.random.random() == expected_global  # global numpy state untouched
    assert np.array_equal(a, augment_shifts(x, np.random.default_rng(9), p=0.7))
    rng = np.random.default_rng(9)
    first, second = augment_shifts(x, rng, p=1), augment_shifts(x, rng, p=1)
    assert not np.array_equal(first, second)  # the generator advances


def test_augment_one_gamma_severity_is_that_shift():
    x = chest_like(8, 32)
    out = augment_shifts(x, np.random.default_rng(0), p=1, names=["gamma"], max_severity=1)
    assert np.array_equal(out, apply_shift(x, "gamma", 1))


def test_empty_batches_work():
    x = np.zeros((0, 32, 32), np.uint8)
    for name in NAMES:
        out = apply_shift(x, name, 3)
        assert out.shape == (0, 32, 32) and out.dtype == np.uint8 and out is not x
    out, names, sevs = mixed_shift(x)
    assert out.shape == (0, 32, 32) and len(names) == len(sevs) == 0
    assert augment_shifts(x, np.random.default_rng(0), p=1).shape == (0, 32, 32)


def test_bad_input_is_refused_by_name(imgs):
    with pytest.raises(ValueError, match=r"'sharpen'.*gamma.*text"):
        apply_shift(imgs, "sharpen", 1)
    for sev in (6, -1):
        with pytest.raises(ValueError, match="severity"):
            apply_shift(imgs, "gamma", sev)
    with pytest.raises(ValueError, match="uint8"):
        apply_shift(imgs.astype(np.float32), "gamma", 1)
    with pytest.raises(ValueError, match="3-D"):
        apply_shift(imgs[0], "gamma", 1)
    with pytest.raises(ValueError, match="'sharpen'"):
        mixed_shift(imgs, names=["gamma", "sharpen"])
    with pytest.raises(ValueError, match="severity"):
        mixed_shift(imgs, severities=[1, 7])
    with pytest.raises(ValueError, match="'sharpen'"):
        augment_shifts(imgs, np.random.default_rng(0), names=["sharpen"])
    with pytest.raises(ValueError, match="uint8"):
        augment_shifts(imgs.astype(float), np.random.default_rng(0))
