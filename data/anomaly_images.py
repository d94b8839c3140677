"""Anomaly-localization image sets in their standard folder layouts: MVTec AD [1] and UCSD Ped1 [2].

Neither is shipped or downloaded: the loaders read the user's copy (reference-spec-expvae.md P2.6). Layouts::

    MVTec AD:  <root>/<category>/train/good/*.png, test/{good,<defect>}/*.png, ground_truth/<defect>/<name>_mask.png
    UCSD Ped1: <root>/Train/Train###/*.tif, Test/Test###/*.tif, Test/Test###_gt/*.bmp (masks for 10 of 36 clips)

Images are resized to ``S x S`` (bilinear), gray (1 channel) if all are, else RGB, float32 in [0, 1]; masks are resized
nearest-neighbor and binarized; a label is whether the full-resolution mask has an anomalous pixel. Ped1 clips without
masks are skipped unless ``unmasked_as_normal`` (they hold anomalies too). A layout problem or an unpaired mask raises
:class:`LayoutError` naming the files.

References: [1] Bergmann et al. MVTec AD. CVPR 2019. [2] Mahadevan et al. Anomaly Detection in Crowded Scenes. CVPR
2010. [3] Liu et al. Towards Visually Explaining VAEs. CVPR 2020."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from common.errors import UserError

logger = logging.getLogger(__name__)

DATASETS = ("mvtec", "ucsd_ped1")
MVTEC_CATEGORIES = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill",
                    "screw", "tile", "toothbrush", "transistor", "wood", "zipper")
MVTEC_URL = "https://www.mvtec.com/company/research/datasets/mvtec-ad"
PED1_URL = "http://www.svcl.ucsd.edu/projects/anomaly/dataset.htm"
NORMAL = "good"  # MVTec's folder of normal images
MASK_SUFFIX = "_mask"
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
MAX_LISTED = 8  # problems named in one error message

MVTEC_LAYOUT = ("<root>/<category>/train/good/*.png, <root>/<category>/test/{good,<defect>}/*.png and "
                "<root>/<category>/ground_truth/<defect>/<name>_mask.png")
PED1_LAYOUT = ("<root>/Train/Train###/*.tif, <root>/Test/Test###/*.tif and <root>/Test/Test###_gt/*.bmp "
               "(root = the UCSDped1 folder)")


class LayoutError(UserError):
    """The folder is absent or not in the dataset's layout; the message says what was expected."""


@dataclass(frozen=True)
class AnomalyImages:
    """One anomaly-localization image set, resized and scaled.

    Attributes:
      x_train, x_test: float32 ``[N, S, S, C]`` / ``[M, S, S, C]`` in [0, 1] (training images are normal).
      y_test: int8 ``[M]``, 1 = anomalous; masks_test: bool ``[M, S, S]``, True = anomalous pixel.
      test_groups: ``[M]`` defect type (MVTec, ``"good"`` if normal) or clip (Ped1).
      assumed_normal: Ped1 clips counted as all-normal without masks."""

    name: str
    root: str
    x_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    masks_test: np.ndarray
    test_groups: tuple[str, ...]
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    assumed_normal: tuple[str, ...] = ()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(S, S, C)``."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    def summary(self) -> dict[str, float | int | str]:
        """Counts for logs and ``metrics.json``: images per split, anomalous test images and pixels."""
        return {"dataset": self.name, "n_train": len(self.x_train), "n_test": len(self.x_test),
                "n_test_anomalous": int(self.y_test.sum()),
                "anomalous_pixel_fraction": float(self.masks_test.mean()) if self.masks_test.size else 0.0,
                "n_assumed_normal_clips": len(self.assumed_normal)}


# ------------------------------------------------------------------------------------------------ file helpers
def _visible(path: Path) -> bool:
    """Not a hidden or macOS resource-fork file (``.DS_Store``, ``._001.tif``)."""
    return not path.name.startswith(".")


def _files(folder: Path, suffixes: Iterable[str]) -> list[Path]:
    """The visible files of ``folder`` whose suffix (case-insensitive) is one of ``suffixes``, sorted by name."""
    wanted = {s.lower() for s in suffixes}
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and _visible(p) and p.suffix.lower() in wanted)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p)) if folder.is_dir() else []


def _problems(kind: str, items: Sequence[str]) -> LayoutError:
    """One error naming up to :data:`MAX_LISTED` problems and how many more there are."""
    shown = "; ".join(items[:MAX_LISTED])
    more = f"; and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return LayoutError(f"{kind}: {shown}{more}")


def _channels(paths: Sequence[Path]) -> int:
    """1 if every image is gray (by its header's mode), else 3."""
    for path in paths:
        with Image.open(path) as image:
            if image.mode not in GREY_MODES:
                return 3
    return 1


def read_image(path: str | os.PathLike, size: int, channels: int) -> np.ndarray:
    """One image as float32 ``[size, size, channels]`` in [0, 1] (bilinear resize; ``channels`` 1 or 3)."""
    with Image.open(path) as image:
        converted = image.convert("L" if channels == 1 else "RGB")
        resized = converted.resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(resized, dtype=np.float32) / 255.0
    return array.reshape(size, size, channels)


def read_mask(path: str | os.PathLike, size: int) -> tuple[np.ndarray, bool]:
    """A binary mask bool ``[size, size]`` (nearest-neighbor; non-zero = anomalous) and whether it has an anomalous
    pixel at full resolution."""
    with Image.open(path) as image:
        grey = image.convert("L")
        full = np.asarray(grey) > 0
        resized = np.asarray(grey.resize((size, size), Image.Resampling.NEAREST)) > 0
    return resized, bool(full.any())


def _read_all(paths: Sequence[Path], size: int, channels: int, progress: bool, desc: str) -> np.ndarray:
    out = np.empty((len(paths), size, size, channels), np.float32)
    for i, path in enumerate(tqdm(paths, desc=desc, disable=not progress, leave=False)):
        out[i] = read_image(path, size, channels)
    return out


def _check_size(image_size: int) -> int:
    if int(image_size) < 8:
        raise UserError(f"image_size must be at least 8 pixels, got {image_size}")
    return int(image_size)


def _relative(paths: Iterable[Path], root: Path) -> tuple[str, ...]:
    return tuple(str(p.relative_to(root)) for p in paths)


# ------------------------------------------------------------------------------------------------------ MVTec AD
def mvtec_categories(root: str | os.PathLike) -> list[str]:
    """The categories present under ``root`` (sub-folders holding ``train/good``)."""
    return [d.name for d in _subdirs(Path(root)) if (d / "train" / NORMAL).is_dir()]


def _mvtec_category_dir(root: Path, category: str) -> Path:
    """``root/category``, checked against the layout (:class:`LayoutError` naming what was expected)."""
    if not root.is_dir():
        raise LayoutError(f"MVTec AD root {root} does not exist (or is not a folder): expected {MVTEC_LAYOUT}. "
                          f"Get MVTec AD from {MVTEC_URL}, unpack it and pass the unpacked folder as the root")
    folder = root / category
    if not (folder / "train" / NORMAL).is_dir():
        found = mvtec_categories(root)
        listed = ", ".join(found) if found else "none"
        hint = "" if found else f" (is {root} the folder that holds {', '.join(MVTEC_CATEGORIES[:3])}, ...?)"
        raise LayoutError(f"MVTec AD category {category!r} not found: expected {folder / 'train' / NORMAL}/*.png "
                          f"(layout {MVTEC_LAYOUT}); categories under {root}: {listed}{hint}")
    if not (folder / "test").is_dir():
        raise LayoutError(f"MVTec AD category {category!r} has no test folder: expected {folder / 'test'}/"
                          f"{{good,<defect>}}/*.png")
    return folder


def _pair_mvtec_masks(folder: Path, defects: Sequence[str]) -> dict[Path, Path]:
    """``test image -> mask`` for every defective test image; :class:`LayoutError` for any unpaired image or mask."""
    pairs, problems = {}, []
    for defect in defects:
        masks_dir = folder / "ground_truth" / defect
        for image in _files(folder / "test" / defect, [".png"]):
            mask = masks_dir / f"{image.stem}{MASK_SUFFIX}.png"
            if mask.is_file():
                pairs[image] = mask
            else:
                problems.append(f"test image {image} has no mask {mask}")
    for masks_dir in _subdirs(folder / "ground_truth"):
        if masks_dir.name == NORMAL:
            logger.warning("ignoring %s: MVTec AD's normal images have no masks", masks_dir)
            continue
        for mask in _files(masks_dir, [".png"]):
            stem = mask.stem[:-len(MASK_SUFFIX)] if mask.stem.endswith(MASK_SUFFIX) else mask.stem
            image = folder / "test" / masks_dir.name / f"{stem}.png"
            if image not in pairs:
                problems.append(f"mask {mask} has no test image {image}")
    if problems:
        raise _problems(f"MVTec AD masks do not pair with the test images of {folder.name} (each defective "
                        f"test/<defect>/<name>.png needs ground_truth/<defect>/<name>{MASK_SUFFIX}.png)", problems)
    return pairs


def load_mvtec(root: str | os.PathLike, category: str, image_size: int = 256, *, max_train: int | None = None,
               progress: bool = False) -> AnomalyImages:
    """One MVTec AD category [1] from ``root`` (module docstring), test images ordered by defect folder, then name.

    ``max_train``: keep the first training images (by name). Raises :class:`LayoutError` (absent root or category,
    unpaired masks)."""
    size, root = _check_size(image_size), Path(root)
    folder = _mvtec_category_dir(root, category)
    train = _files(folder / "train" / NORMAL, [".png"])[:max_train]
    groups = [d.name for d in _subdirs(folder / "test")]
    test = [(g, p) for g in groups for p in _files(folder / "test" / g, [".png"])]
    if not train:
        raise LayoutError(f"no training images: expected {folder / 'train' / NORMAL}/*.png")
    if not test:
        raise LayoutError(f"no test images: expected {folder / 'test'}/{{good,<defect>}}/*.png")
    pairs = _pair_mvtec_masks(folder, [g for g in groups if g != NORMAL])
    channels = _channels(train + [p for _, p in test])
    x_train = _read_all(train, size, channels, progress, f"{category} train")
    x_test = _read_all([p for _, p in test], size, channels, progress, f"{category} test")
    masks = np.zeros((len(test), size, size), bool)
    for i, (_, path) in enumerate(test):
        if path in pairs:
            masks[i], _ = read_mask(pairs[path], size)
    y = np.array([g != NORMAL for g, _ in test], np.int8)
    logger.info("MVTec AD %s: %d train, %d test images (%d defective, %d defect types), %dx%dx%d", category,
                len(train), len(test), int(y.sum()), len(groups) - (NORMAL in groups), size, size, channels)
    return AnomalyImages(f"mvtec/{category}", str(root), x_train, x_test, y, masks, tuple(g for g, _ in test),
                         _relative(train, root), _relative((p for _, p in test), root))


# ---------------------------------------------------------------------------------------------------- UCSD Ped1
_TRAIN_CLIP = re.compile(r"^Train\d+$")
_TEST_CLIP = re.compile(r"^Test\d+$")
_GT_CLIP = re.compile(r"^(Test\d+)_gt$")


def _ped1_dir(root: Path) -> Path:
    """The folder holding ``Train/`` and ``Test/``: ``root`` itself or ``root/UCSDped1``."""
    for candidate in (root, root / "UCSDped1"):
        if (candidate / "Train").is_dir() and (candidate / "Test").is_dir():
            return candidate
    what = "does not exist (or is not a folder)" if not root.is_dir() else "is not in the UCSD Ped1 layout"
    raise LayoutError(f"UCSD Ped1 root {root} {what}: expected {PED1_LAYOUT}. Get UCSD_Anomaly_Dataset.v1p2 from "
                      f"{PED1_URL}, unpack it and pass its UCSDped1 folder as the root")


def _clips(folder: Path, pattern: re.Pattern) -> dict[str, list[Path]]:
    """``clip name -> sorted .tif frames`` of the sub-folders of ``folder`` whose name matches ``pattern``."""
    return {d.name: _files(d, [".tif", ".tiff"]) for d in _subdirs(folder) if pattern.match(d.name)}


def _pair_ped1_masks(test_dir: Path, clips: dict[str, list[Path]]) -> dict[str, list[Path]]:
    """``clip -> masks in frame order`` for clips with a ``<clip>_gt`` folder; :class:`LayoutError` for unpaired frames
    or masks."""
    masked, problems = {}, []
    for gt_dir in _subdirs(test_dir):
        match = _GT_CLIP.match(gt_dir.name)
        if not match:
            continue
        clip = match.group(1)
        masks = {p.stem: p for p in _files(gt_dir, [".bmp", ".png"])}
        frames = {p.stem: p for p in clips.get(clip, [])}
        if clip not in clips:
            problems.append(f"mask folder {gt_dir} has no clip {test_dir / clip}")
            continue
        problems += [f"frame {frames[s]} has no mask {gt_dir / (s + '.bmp')}" for s in sorted(set(frames) - set(masks))]
        problems += [f"mask {masks[s]} has no frame {test_dir / clip / (s + '.tif')}"
                     for s in sorted(set(masks) - set(frames))]
        masked[clip] = [masks[f.stem] for f in clips[clip] if f.stem in masks]  # in frame order
    if problems:
        raise _problems("UCSD Ped1 masks do not pair with the test frames (each Test###_gt/NNN.bmp needs "
                        "Test###/NNN.tif and the reverse)", problems)
    return masked


def load_ucsd_ped1(root: str | os.PathLike, image_size: int = 256, *, unmasked_as_normal: bool = False,
                   train_stride: int = 1, max_train: int | None = None, progress: bool = False) -> AnomalyImages:
    """UCSD Ped1 [2] (module docstring): frames of the training clips and the test frames with masks.

    ``unmasked_as_normal``: also load the unmasked test clips as all-normal (not recommended: they hold anomalies);
    ``train_stride``: keep every k-th training frame; ``max_train``: the first training frames. Raises
    :class:`LayoutError`."""
    size, root = _check_size(image_size), Path(root)
    if train_stride < 1:
        raise UserError(f"train_stride must be >= 1, got {train_stride}")
    base = _ped1_dir(root)
    train_clips = _clips(base / "Train", _TRAIN_CLIP)
    train = [f for frames in train_clips.values() for f in frames[::train_stride]][:max_train]
    if not train:
        raise LayoutError(f"no UCSD Ped1 training frames: expected {base / 'Train'}/Train###/*.tif")
    test_clips = _clips(base / "Test", _TEST_CLIP)
    masked = _pair_ped1_masks(base / "Test", test_clips)
    unmasked = sorted(set(test_clips) - set(masked))
    if not masked and not unmasked_as_normal:
        raise LayoutError(f"no UCSD Ped1 test clip with pixel masks: expected {base / 'Test'}/Test###_gt/*.bmp "
                          "beside Test###/*.tif (the official release has them for 10 of the 36 test clips)")
    if unmasked and not unmasked_as_normal:
        logger.info("UCSD Ped1: skipping %d test clips without masks (%s...); they are not all-normal",
                    len(unmasked), ", ".join(unmasked[:3]))
    assumed = tuple(unmasked) if unmasked_as_normal else ()
    if assumed:
        logger.warning("UCSD Ped1: counting %d clips without masks as all-normal (unmasked_as_normal): their "
                       "anomalous frames become negatives", len(assumed))
    clips = sorted(set(masked) | set(assumed))
    test = [(c, f) for c in clips for f in test_clips[c]]
    x_train = _read_all(train, size, 1, progress, "Ped1 train")
    x_test = _read_all([f for _, f in test], size, 1, progress, "Ped1 test")
    masks, y = np.zeros((len(test), size, size), bool), np.zeros(len(test), np.int8)
    mask_files = [m for c in clips for m in masked.get(c, [None] * len(test_clips[c]))]
    for i, mask in enumerate(mask_files):
        if mask is not None:
            masks[i], y[i] = read_mask(mask, size)
    logger.info("UCSD Ped1: %d train frames (%d clips, stride %d), %d test frames of %d clips (%d anomalous)",
                len(train), len(train_clips), train_stride, len(test), len(clips), int(y.sum()))
    return AnomalyImages("ucsd_ped1", str(root), x_train, x_test, y, masks, tuple(c for c, _ in test),
                         _relative(train, root), _relative((f for _, f in test), root), assumed)


def load(dataset: str, root: str | os.PathLike | None, category: str | None = None, image_size: int = 256,
         **options) -> AnomalyImages:
    """:func:`load_mvtec` (``dataset="mvtec"``, needs ``category``) or :func:`load_ucsd_ped1` (``"ucsd_ped1"``);
    ``UserError`` otherwise."""
    if dataset not in DATASETS:
        raise UserError(f"unknown anomaly dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if root is None:
        url = MVTEC_URL if dataset == "mvtec" else PED1_URL
        raise UserError(f"{dataset} is not shipped with this project: pass --root, the folder of your copy "
                        f"({MVTEC_LAYOUT if dataset == 'mvtec' else PED1_LAYOUT}; from {url})")
    if dataset == "mvtec":
        if not category:
            raise UserError(f"MVTec AD needs a category, one of {', '.join(MVTEC_CATEGORIES)}")
        return load_mvtec(root, category, image_size, **options)
    return load_ucsd_ped1(root, image_size, **options)
