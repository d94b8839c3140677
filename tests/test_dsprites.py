"""dSprites: the factor grid and order, the procedural renderer's invariances, and the npz loader."""

from __future__ import annotations

import numpy as np
import pytest

from data import dsprites
from data.sources import DataFileError


def test_grid_shape_values_and_order():
    assert dsprites.NUM_IMAGES == 737280 == 3 * 6 * 40 * 32 * 32
    values = dsprites.factor_values()
    assert [len(v) for v in values] == list(dsprites.FACTOR_SIZES)
    np.testing.assert_array_equal(values[1], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(values[2], np.linspace(0.5, 1, 6))
    assert values[3][0] == 0.0 and values[3][-1] == 2 * np.pi
    classes = dsprites.latents_classes()
    assert classes.shape == (737280, 6) and classes.dtype == np.int64
    # index -> classes is np.unravel_index over the grid shape, posY fastest; and back
    rng = np.random.default_rng(0)
    idx = np.concatenate([[0, 1, 32, 1024, 40960, 245760, 737279], rng.integers(0, 737280, 1000)])
    np.testing.assert_array_equal(classes[idx], np.stack(np.unravel_index(idx, dsprites.FACTOR_SIZES), 1))
    np.testing.assert_array_equal(dsprites.grid_index(classes[idx]), idx)
    shape, scale, orient, x, y = classes[idx, 1:].T
    np.testing.assert_array_equal(idx, ((((shape * 6 + scale) * 40 + orient) * 32 + x) * 32 + y))
    np.testing.assert_array_equal(classes[:3, 5], [0, 1, 2])  # posY varies fastest
    assert np.all(classes[:, 0] == 0)
    lv = dsprites.latents_values(idx)
    np.testing.assert_allclose(lv[:, 0], 1.0)
    np.testing.assert_allclose(lv[:, 4], classes[idx, 4] / 31)
    np.testing.assert_allclose(lv[:, 3], classes[idx, 3] * 2 * np.pi / 39)


def test_render_is_binary_and_deterministic():
    idx = np.random.default_rng(1).integers(0, dsprites.NUM_IMAGES, 300)
    images = dsprites.render(idx, chunk_size=64)
    assert images.shape == (300, 64, 64) and images.dtype == np.uint8
    assert set(np.unique(images)) == {0, 1}
    assert images.reshape(300, -1).sum(1).min() > 20  # every sprite is drawn
    np.testing.assert_array_equal(images, dsprites.render(idx[::-1], chunk_size=1000)[::-1])
    with pytest.raises(IndexError):
        dsprites.render([dsprites.NUM_IMAGES])


def _image(shape=0, scale=5, orient=0, x=16, y=16):
    return dsprites.render(dsprites.grid_index([[0, shape, scale, orient, x, y]]))[0]


@pytest.mark.parametrize("shape", range(3))
def test_ink_area_grows_with_scale(shape):
    for orient in (0, 7):
        areas = [int(_image(shape, scale, orient).sum()) for scale in range(6)]
        assert all(b > a for a, b in zip(areas, areas[1:])), areas
        assert areas[-1] / areas[0] == pytest.approx(4.0, rel=0.25)  # area ~ scale^2, scale 0.5 -> 1


def _centroid(image):
    r, c = np.nonzero(image)
    return c.mean(), r.mean()


def _iou(a, b):
    return np.logical_and(a, b).sum() / np.logical_or(a, b).sum()


@pytest.mark.parametrize("shape,orient", [(0, 0), (1, 5), (2, 13)])
@pytest.mark.parametrize("axis", ["x", "y"])
def test_translation_equivariance_away_from_borders(shape, orient, axis):
    step = (dsprites.POSITION_RANGE[1] - dsprites.POSITION_RANGE[0]) / 31  # px per position class
    base = {"x": 10, "y": 12}
    for k in (1, 3, 7, 12):
        moved = dict(base, **{axis: base[axis] + k})
        a, b = _image(shape, 3, orient, **base), _image(shape, 3, orient, **moved)
        shift = k * step
        da = np.subtract(_centroid(b), _centroid(a))[0 if axis == "x" else 1]
        assert da == pytest.approx(shift, abs=1.0)
        # the moved sprite is the original rolled by the shift rounded to whole pixels, up to sub-pixel edges
        shifts = range(int(np.floor(shift - 1)), int(np.ceil(shift + 1)) + 1)
        assert max(_iou(np.roll(a, s, 1 if axis == "x" else 0), b) for s in shifts) > 0.8
        assert int(a.sum()) == pytest.approx(int(b.sum()), rel=0.15)


@pytest.mark.parametrize("shape", range(3))
def test_orientation_zero_and_two_pi_render_identically(shape):
    np.testing.assert_array_equal(_image(shape, 4, 0, 7, 20), _image(shape, 4, 39, 7, 20))
    assert not np.array_equal(_image(shape, 4, 0), _image(shape, 4, 5))  # other orientations differ


def _write_npz(path, idx, corrupt=False):
    images = dsprites.render(idx)
    if corrupt:
        images[0, 0, 0] = 7
    np.savez_compressed(path, imgs=images, latents_values=dsprites.latents_values(idx),
                        latents_classes=dsprites.latents_classes(idx),
                        metadata=np.array({"description": "synthetic"}, dtype=object))
    return images


def test_npz_loader_on_a_tiny_file_of_the_original_layout(tmp_path):
    idx = np.array([5, 737279, 0, 123456, 40000, 99])
    folder = tmp_path / "data" / dsprites.NPZ_FOLDER
    folder.mkdir(parents=True)
    images = _write_npz(folder / dsprites.NPZ_NAME, idx)
    ds = dsprites.load("npz", data_dir=tmp_path / "data")  # found as dsprites/<name> in data_dir
    assert ds.source == "npz" and len(ds) == 6 and ds.image_size == 64
    np.testing.assert_array_equal(ds.images(np.arange(6)), images)
    np.testing.assert_array_equal(ds.latents_classes, dsprites.latents_classes(idx))
    np.testing.assert_allclose(ds.latents_values, dsprites.latents_values(idx))
    # factor lookup by classes in a subset file, and batches
    np.testing.assert_array_equal(ds.images_of(dsprites.latents_classes([123456, 5])), images[[3, 0]])
    with pytest.raises(KeyError):
        ds.rows_of(dsprites.latents_classes([1]))
    batches = list(ds.batches(4, seed=0))
    assert len(batches) == 1 and batches[0][0].shape == (4, 64, 64)
    assert len(list(ds.batches(4, drop_last=False, shuffle=False))) == 2
    # a direct path works too, and the renderer dataset yields the same grid rows
    assert len(dsprites.load("npz", path=folder / dsprites.NPZ_NAME)) == 6
    procedural = dsprites.load("render")
    np.testing.assert_array_equal(procedural.images(idx), images)


def test_npz_with_non_binary_pixels_is_refused(tmp_path):
    path = tmp_path / "bad.npz"
    _write_npz(path, np.arange(3), corrupt=True)
    with pytest.raises(DataFileError, match="0/1"):
        dsprites.load("npz", path=path)


def test_missing_file_error_names_the_file_and_how_to_provide_it(tmp_path, monkeypatch):
    monkeypatch.setenv("CLUE_DATA_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("CLUE_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataFileError) as err:
        dsprites.load("npz", data_dir=tmp_path)
    message = str(err.value)
    assert f"dsprites/{dsprites.NPZ_NAME}" in message
    assert dsprites.NPZ_URL in message and "CLUE_DATA_DIR" in message and "render" in message
    assert str(tmp_path) in message  # where it looked
    with pytest.raises(DataFileError, match="not found"):
        dsprites.load("npz", path=tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="unknown dSprites source"):
        dsprites.load("pixels")


def test_procedural_dataset_batches_are_lazy_and_seeded():
    ds = dsprites.DSprites.procedural()
    assert len(ds) == dsprites.NUM_IMAGES
    first = list(ds.batches(8, seed=3, num_batches=2))
    again = list(ds.batches(8, seed=3, num_batches=2))
    assert len(first) == 2
    for (xa, ca), (xb, cb) in zip(first, again):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ca, cb)
        np.testing.assert_array_equal(xa, dsprites.render(dsprites.grid_index(ca)))


def test_registry_dataset_subset():
    d = dsprites.load_dataset(source="render", n_train=20, n_test=5, seed=1)
    assert d.x_train.shape == (20, 4096) and d.x_test.shape == (5, 4096) and d.image_shape == (64, 64, 1)
    assert set(np.unique(d.y_train)) <= {0.0, 1.0, 2.0}
    np.testing.assert_array_equal(d.x_train[0].reshape(64, 64), dsprites.render([d.info["train_index"][0]])[0])


def test_sprite_grid_figure(tmp_path):
    mosaic = dsprites.sprite_grid()
    assert mosaic.shape == (3 * 66, (6 + 8 + 8) * 66)
    path = dsprites.save_sprite_grid(tmp_path / "grid.png")
    assert path.stat().st_size > 1000
