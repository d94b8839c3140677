"""MVTec AD and UCSD Ped1 loaders on tiny generated copies of their folder layouts (PIL writes PNG, TIF and BMP).

The generators here are also used by ``tests/test_localise.py``: normal images are a smooth ramp plus a little noise,
a defect is a bright square whose mask is that square, so a mask's alignment with its image can be checked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.errors import UserError
from data import anomaly_images as ai

SIDE = 48  # the generated images' side (resized by the loaders)
SQUARE = 16  # the defect's side


def _normal(rng: np.random.RandomState, shape: tuple[int, ...]) -> np.ndarray:
    """A dim horizontal ramp with noise, uint8 of ``shape`` (``(H, W)`` grey or ``(H, W, 3)`` RGB)."""
    ramp = np.linspace(20, 90, shape[1])[None, :]
    ramp = ramp[..., None] if len(shape) == 3 else ramp
    return np.clip(ramp + rng.normal(0, 4, shape), 0, 255).astype(np.uint8)


def _defect(rng: np.random.RandomState, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A normal image with a bright square at a random place, and its 0/255 mask ``(H, W)``."""
    image, mask = _normal(rng, shape), np.zeros(shape[:2], np.uint8)
    top, left = rng.randint(0, shape[0] - SQUARE), rng.randint(0, shape[1] - SQUARE)
    image[top:top + SQUARE, left:left + SQUARE] = 250
    mask[top:top + SQUARE, left:left + SQUARE] = 255
    return image, mask


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_mvtec(root: Path, category: str = "bottle", n_train: int = 8, n_good: int = 2,
               defects: dict[str, int] | None = None, grey: bool = False, seed: int = 0) -> Path:
    """A tiny MVTec AD category: ``train/good``, ``test/{good,<defect>}`` and ``ground_truth/<defect>/*_mask.png``.

    Returns:
      ``root`` (the folder holding ``category``).
    """
    rng = np.random.RandomState(seed)
    shape = (SIDE, SIDE) if grey else (SIDE, SIDE, 3)
    folder = root / category
    for i in range(n_train):
        _save(_normal(rng, shape), folder / "train" / "good" / f"{i:03d}.png")
    for i in range(n_good):
        _save(_normal(rng, shape), folder / "test" / "good" / f"{i:03d}.png")
    for defect, count in (defects or {"broken": 2, "crack": 1}).items():
        for i in range(count):
            image, mask = _defect(rng, shape)
            _save(image, folder / "test" / defect / f"{i:03d}.png")
            _save(mask, folder / "ground_truth" / defect / f"{i:03d}_mask.png")
    return root


def make_ped1(root: Path, n_train_clips: int = 2, frames: int = 4, masked: tuple[int, ...] = (2,),
              unmasked: tuple[int, ...] = (1,), seed: int = 0) -> Path:
    """A tiny ``UCSDped1`` folder: grey 40x60 TIF frames, ``Test###_gt/*.bmp`` masks for the ``masked`` clips (the
    first frame of each normal, the others with a square), none for the ``unmasked`` ones (which hold squares too,
    unlabelled, as in the real data), plus a macOS ``._`` file that must be ignored.

    Returns:
      the ``UCSDped1`` folder.
    """
    rng = np.random.RandomState(seed)
    shape, base = (40, 60), root / "UCSDped1"
    for clip in range(1, n_train_clips + 1):
        for f in range(1, frames + 1):
            _save(_normal(rng, shape), base / "Train" / f"Train{clip:03d}" / f"{f:03d}.tif")
    for clip in sorted(masked + unmasked):
        for f in range(1, frames + 1):
            image, mask = (_normal(rng, shape), np.zeros(shape, np.uint8)) if f == 1 else _defect(rng, shape)
            _save(image, base / "Test" / f"Test{clip:03d}" / f"{f:03d}.tif")
            if clip in masked:
                _save(mask, base / "Test" / f"Test{clip:03d}_gt" / f"{f:03d}.bmp")
    (base / "Train" / "Train001" / "._001.tif").write_bytes(b"\x00\x05\x16\x07")  # a resource fork, not a TIF
    return base


def _inside_outside(x: np.ndarray, masks: np.ndarray) -> tuple[float, float]:
    """Mean intensity of the masked and unmasked pixels of the anomalous images."""
    grey = x.mean(-1)
    return float(grey[masks].mean()), float(grey[~masks].mean())


# ------------------------------------------------------------------------------------------------------ MVTec AD
def test_mvtec_counts_labels_shapes_and_mask_alignment(tmp_path):
    ds = ai.load_mvtec(make_mvtec(tmp_path), "bottle", image_size=64)
    assert ds.name == "mvtec/bottle" and ds.image_shape == (64, 64, 3)
    assert ds.x_train.shape == (8, 64, 64, 3) and ds.x_test.shape == (5, 64, 64, 3)
    for x in (ds.x_train, ds.x_test):
        assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert ds.test_groups == ("broken", "broken", "crack", "good", "good")  # defect folder, then name
    assert ds.y_test.tolist() == [1, 1, 1, 0, 0]
    assert ds.test_files[0] == str(Path("bottle/test/broken/000.png"))
    assert ds.masks_test.dtype == bool and ds.masks_test.shape == (5, 64, 64)
    assert not ds.masks_test[3:].any()  # normal images: all-normal masks
    area = ds.masks_test[:3].sum((1, 2)) / 64 ** 2
    np.testing.assert_allclose(area, (SQUARE / SIDE) ** 2, atol=0.02)  # a 16/48 square stays a third of the side
    inside, outside = _inside_outside(ds.x_test[:3], ds.masks_test[:3])
    assert inside > 0.9 and outside < 0.45  # each mask sits on its image's bright square
    assert ds.summary()["n_test_anomalous"] == 3


def test_mvtec_grey_category_has_one_channel_and_max_train(tmp_path):
    ds = ai.load_mvtec(make_mvtec(tmp_path, "grid", grey=True), "grid", image_size=32, max_train=3)
    assert ds.image_shape == (32, 32, 1) and len(ds.x_train) == 3


def test_mvtec_missing_root_and_category_are_one_clear_error(tmp_path):
    with pytest.raises(ai.LayoutError, match="does not exist.*train/good/\\*.png.*mvtec.com"):
        ai.load_mvtec(tmp_path / "nowhere", "bottle")
    make_mvtec(tmp_path)
    with pytest.raises(UserError, match="'carpet' not found.*categories under .*: bottle"):
        ai.load_mvtec(tmp_path, "carpet")
    with pytest.raises(UserError, match="pass --root"):
        ai.load("mvtec", None, "bottle")


def test_mvtec_refuses_a_defective_image_without_its_mask(tmp_path):
    make_mvtec(tmp_path)
    mask = tmp_path / "bottle" / "ground_truth" / "broken" / "001_mask.png"
    mask.unlink()
    with pytest.raises(ai.LayoutError) as err:
        ai.load_mvtec(tmp_path, "bottle")
    assert str(tmp_path / "bottle" / "test" / "broken" / "001.png") in str(err.value)
    assert str(mask) in str(err.value)


def test_mvtec_refuses_a_mask_without_its_image(tmp_path):
    make_mvtec(tmp_path)
    stray = tmp_path / "bottle" / "ground_truth" / "crack" / "007_mask.png"
    _save(np.zeros((SIDE, SIDE), np.uint8), stray)
    with pytest.raises(ai.LayoutError) as err:
        ai.load_mvtec(tmp_path, "bottle")
    assert str(stray) in str(err.value)
    assert str(tmp_path / "bottle" / "test" / "crack" / "007.png") in str(err.value)


# ---------------------------------------------------------------------------------------------------- UCSD Ped1
def test_ped1_default_scores_only_clips_with_masks(tmp_path):
    base = make_ped1(tmp_path)
    ds = ai.load_ucsd_ped1(base, image_size=32)
    assert ds.image_shape == (32, 32, 1) and ds.x_train.shape == (8, 32, 32, 1)  # the ._ file is ignored
    assert ds.test_groups == ("Test002",) * 4 and ds.assumed_normal == ()
    assert ds.y_test.tolist() == [0, 1, 1, 1]  # frame 1 has an empty mask
    assert not ds.masks_test[0].any() and ds.masks_test[1:].any((1, 2)).all()
    inside, outside = _inside_outside(ds.x_test[1:], ds.masks_test[1:])
    assert inside > 0.9 and outside < 0.45
    assert ds.test_files[1] == str(Path("Test/Test002/002.tif"))
    assert ai.load_ucsd_ped1(tmp_path, image_size=32).x_test.shape == ds.x_test.shape  # the parent folder works
    assert len(ai.load_ucsd_ped1(base, image_size=32, train_stride=2).x_train) == 4


def test_ped1_counts_unmasked_clips_as_normal_only_when_asked(tmp_path):
    ds = ai.load_ucsd_ped1(make_ped1(tmp_path), image_size=32, unmasked_as_normal=True)
    assert ds.assumed_normal == ("Test001",)
    assert ds.test_groups == ("Test001",) * 4 + ("Test002",) * 4
    assert ds.y_test.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert not ds.masks_test[:4].any()
    assert ds.summary()["n_assumed_normal_clips"] == 1


def test_ped1_without_any_masks_is_refused_by_default(tmp_path):
    base = make_ped1(tmp_path, masked=(), unmasked=(1, 2))
    with pytest.raises(ai.LayoutError, match="no UCSD Ped1 test clip with pixel masks"):
        ai.load_ucsd_ped1(base, image_size=32)
    assert len(ai.load_ucsd_ped1(base, image_size=32, unmasked_as_normal=True).x_test) == 8


def test_ped1_missing_root_and_mismatched_masks(tmp_path):
    with pytest.raises(ai.LayoutError, match="does not exist.*Train/Train###/\\*.tif.*Test###_gt"):
        ai.load_ucsd_ped1(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not in the UCSD Ped1 layout"):
        ai.load("ucsd_ped1", tmp_path / "empty")
    base = make_ped1(tmp_path / "copy")
    mask = base / "Test" / "Test002_gt" / "003.bmp"
    mask.unlink()
    with pytest.raises(ai.LayoutError) as err:
        ai.load_ucsd_ped1(base)
    assert str(base / "Test" / "Test002" / "003.tif") in str(err.value) and str(mask) in str(err.value)
