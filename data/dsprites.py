"""dSprites (Matthey et al. [1]): the original npz, or a procedural renderer of the same factor grid and order.

Every combination of six factors once, 737,280 binary 64x64 images; factors (classes: values): color (1: 1.0), shape (3:
square, ellipse, heart = 1.0, 2.0, 3.0), scale (6: ``linspace(0.5, 1, 6)``), orientation (40:
``linspace(0, 2 pi, 40)``), posX and posY (32: ``linspace(0, 1, 32)``). Images are in C order over :data:`FACTOR_SIZES`
(posY fastest): ``latents_classes[i] = np.unravel_index(i, FACTOR_SIZES)`` (reference-spec-expvae.md P2.3).

``source="npz"``: the user's ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` (``imgs``, ``latents_values``,
``latents_classes``), found as ``dsprites/<name>`` or ``<name>`` in :func:`data.sources.search_dirs`, kept bit-packed.
``source="render"``: :class:`SpriteRenderer`, same grid, order and factor semantics, **not the original's pixels** (its
renderer was never released).

Renderer geometry (pixel ``(r, c)`` covers ``[c, c+1) x [r, r+1)``): radius ``R = 10 s`` px at scale ``s``, center
``(12 + 40 posX, 12 + 40 posY)`` (column, row; posY downward). A pixel is ink when its center, rotated by
``-orientation`` about the sprite center and divided by ``R``, falls inside the unit shape: square
``max(|u|, |v|) <= 0.8``; ellipse ``u^2 + (v / 0.5)^2 <= 1``; heart ``(x^2 + y^2 - 1)^3 - x^2 y^3 <= 0``,
``(x, y) = (u, v + 0.1) / 0.9``.

References: [1] Matthey et al. dSprites: Disentanglement testing Sprites dataset. 2017,
github.com/deepmind/dsprites-dataset. [2] Kim & Mnih. Disentangling by Factorising. ICML 2018."""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.schema import Dataset
from data.sources import DataFileError, search_dirs

logger = logging.getLogger(__name__)

FACTOR_NAMES = ("color", "shape", "scale", "orientation", "posX", "posY")
FACTOR_SIZES = (1, 3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")
NUM_IMAGES = int(np.prod(FACTOR_SIZES))  # 737,280
IMAGE_SIZE = 64
NPZ_NAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
NPZ_FOLDER = "dsprites"
NPZ_URL = "https://github.com/deepmind/dsprites-dataset/raw/master/" + NPZ_NAME
SOURCES = ("npz", "render")

# Renderer geometry (module docstring), in pixels.
SPRITE_RADIUS = 10.0  # radius of a scale-1 sprite
POSITION_RANGE = (12.0, 52.0)  # sprite center at pos = 0 and pos = 1
SQUARE_HALF_SIDE = 0.8
ELLIPSE_MINOR = 0.5
HEART_SHIFT, HEART_SIZE = 0.1, 0.9


def factor_values() -> tuple[np.ndarray, ...]:
    """The value of every class of every factor, in :data:`FACTOR_NAMES` order (float64 arrays)."""
    return (np.ones(1), np.arange(1.0, 4.0), np.linspace(0.5, 1.0, 6), np.linspace(0.0, 2 * np.pi, 40),
            np.linspace(0.0, 1.0, 32), np.linspace(0.0, 1.0, 32))


def _as_indices(indices) -> np.ndarray:
    """``indices`` as an int64 vector, each in ``[0, NUM_IMAGES)``; raises ``IndexError`` otherwise."""
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= NUM_IMAGES):
        raise IndexError(f"dSprites indices must lie in [0, {NUM_IMAGES}), got [{idx.min()}, {idx.max()}]")
    return idx


def latents_classes(indices=None) -> np.ndarray:
    """Factor classes ``[n, 6]`` int64 of grid indices (all 737,280 when ``indices`` is None), as the original."""
    idx = np.arange(NUM_IMAGES) if indices is None else _as_indices(indices)
    return np.stack(np.unravel_index(idx, FACTOR_SIZES), axis=1).astype(np.int64)


def latents_values(indices=None) -> np.ndarray:
    """Factor values ``[n, 6]`` float64 of grid indices (the original's ``latents_values`` layout)."""
    classes = latents_classes(indices)
    return np.stack([vals[classes[:, k]] for k, vals in enumerate(factor_values())], axis=1)


def grid_index(classes) -> np.ndarray:
    """Grid indices ``[n]`` of factor classes ``[n, 6]``: ``np.ravel_multi_index`` over :data:`FACTOR_SIZES`."""
    classes = np.asarray(classes, dtype=np.int64).reshape(-1, len(FACTOR_SIZES))
    return np.ravel_multi_index(tuple(classes.T), FACTOR_SIZES).astype(np.int64)


# ---------------------------------------------------------------------------------------------------- renderer


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether sprite coordinates ``(u, v)`` (v upwards, unit = sprite radius) are inside the unit ``shape``."""
    if shape == 0:
        return np.maximum(np.abs(u), np.abs(v)) <= SQUARE_HALF_SIDE
    if shape == 1:
        return u * u + (v / ELLIPSE_MINOR) ** 2 <= 1.0
    x, y = u / HEART_SIZE, (v + HEART_SHIFT) / HEART_SIZE
    return (x * x + y * y - 1.0) ** 3 - x * x * y ** 3 <= 0.0


@dataclass(frozen=True)
class SpriteRenderer:
    """Deterministic procedural dSprites images (module docstring); ``chunk_size`` images per vectorized NumPy pass."""

    image_size: int = IMAGE_SIZE
    chunk_size: int = 1024

    def render(self, indices) -> np.ndarray:
        """Images of grid indices: uint8 ``[n, size, size]`` in {0, 1} (``IndexError`` outside the grid)."""
        idx = _as_indices(indices)
        out = np.empty((len(idx), self.image_size, self.image_size), np.uint8)
        for start in range(0, len(idx), self.chunk_size):
            chunk = idx[start:start + self.chunk_size]
            out[start:start + len(chunk)] = self.render_classes(latents_classes(chunk))
        return out

    def render_classes(self, classes) -> np.ndarray:
        """Images of factor classes ``[n, 6]`` (one chunk, no splitting): uint8 ``[n, size, size]``."""
        classes = np.asarray(classes, dtype=np.int64).reshape(-1, len(FACTOR_SIZES))
        values = factor_values()
        k = self.image_size / IMAGE_SIZE  # geometry is defined at 64 px
        radius = (SPRITE_RADIUS * k * values[2][classes[:, 2]]).astype(np.float32)[:, None, None]
        theta = np.mod(values[3][classes[:, 3]], 2 * np.pi)  # 2 pi -> exactly 0: classes 0 and 39 coincide
        cos, sin = (np.cos(theta).astype(np.float32)[:, None, None], np.sin(theta).astype(np.float32)[:, None, None])
        low, high = POSITION_RANGE[0] * k, POSITION_RANGE[1] * k
        cx = (low + (high - low) * values[4][classes[:, 4]]).astype(np.float32)[:, None, None]
        cy = (low + (high - low) * values[5][classes[:, 5]]).astype(np.float32)[:, None, None]
        centres = np.arange(self.image_size, dtype=np.float32) + 0.5
        dx = centres[None, None, :] - cx  # [n, 1, W] columns
        dy = cy - centres[None, :, None]  # [n, H, 1] rows, upwards positive
        u = (cos * dx + sin * dy) / radius  # rotate by -theta
        v = (cos * dy - sin * dx) / radius
        out = np.zeros((len(classes), self.image_size, self.image_size), np.uint8)
        for shape in range(len(SHAPES)):
            sel = classes[:, 1] == shape
            if sel.any():
                out[sel] = _inside(shape, u[sel], v[sel])
        return out


def render(indices, image_size: int = IMAGE_SIZE, chunk_size: int = 1024) -> np.ndarray:
    """:meth:`SpriteRenderer.render`: uint8 ``[n, image_size, image_size]`` images of grid indices."""
    return SpriteRenderer(image_size, chunk_size).render(indices)


# ------------------------------------------------------------------------------------------------- npz reading


def find_npz(path: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None) -> Path:
    """The original dSprites npz: ``path``, or ``dsprites/<NPZ_NAME>`` / ``<NPZ_NAME>`` in
    :func:`data.sources.search_dirs` (else ``DataFileError``)."""
    if path is not None:
        if Path(path).is_file():
            return Path(path)
        raise DataFileError(f"dSprites npz {path} not found.\n" + _how_to_provide())
    dirs = search_dirs(data_dir)
    for folder in dirs:
        for candidate in (folder / NPZ_FOLDER / NPZ_NAME, folder / NPZ_NAME):
            if candidate.is_file():
                return candidate
    raise DataFileError(f"dSprites file {NPZ_FOLDER}/{NPZ_NAME} not found in {', '.join(map(str, dirs))}.\n"
                        + _how_to_provide())


def _how_to_provide() -> str:
    return (f"  file: {NPZ_FOLDER}/{NPZ_NAME} (keys imgs, latents_values, latents_classes)\n"
            f"  url:  {NPZ_URL}\n"
            f"Provide it in one of two ways:\n"
            f"  1. put it at <DIR>/{NPZ_FOLDER}/{NPZ_NAME} and set CLUE_DATA_DIR=<DIR> (or pass data_dir=<DIR>, or "
            f"the file's path);\n"
            f"  2. or use the procedural renderer instead (same factor grid and order, not the same pixels): "
            f"source='render' (training scripts: --data-source render).")


def _npy_header(stream) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the ``.npy`` stream ``stream``, positioned after its header."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    if fortran:
        raise ValueError("Fortran-ordered arrays are not supported")
    return tuple(shape), np.dtype(dtype)


def _read_member(archive: zipfile.ZipFile, key: str) -> np.ndarray:
    with archive.open(key + ".npy") as stream:
        shape, dtype = _npy_header(stream)
        return np.frombuffer(stream.read(), dtype=dtype).reshape(shape).copy()


def _read_packed_images(archive: zipfile.ZipFile, chunk_rows: int = 16384) -> np.ndarray:
    """``imgs`` ``[N, H, W]`` read chunk by chunk into bit-packed rows ``[N, H, W/8]`` (never all 8-bit at once)."""
    with archive.open("imgs.npy") as stream:
        shape, dtype = _npy_header(stream)
        if len(shape) != 3 or dtype != np.uint8:
            raise ValueError(f"imgs must be uint8 [N, H, W], got {dtype} {shape}")
        n, h, w = shape
        packed = np.empty((n, h, (w + 7) // 8), np.uint8)
        for start in range(0, n, chunk_rows):
            rows = min(chunk_rows, n - start)
            block = np.frombuffer(stream.read(rows * h * w), np.uint8).reshape(rows, h, w)
            if block.max(initial=0) > 1:
                raise ValueError("imgs must hold 0/1 pixels")
            packed[start:start + rows] = np.packbits(block, axis=-1)
    return packed


class DSprites:
    """dSprites images (read lazily) and factors ``latents_classes`` int64 ``[N, 6]``, ``latents_values`` float64
    ``[N, 6]`` from one ``source``; build it with :func:`load`."""

    def __init__(self, source: str, latents_classes: np.ndarray, latents_values: np.ndarray,
                 packed_images: np.ndarray | None = None, renderer: SpriteRenderer | None = None,
                 path: Path | None = None):
        self.source, self.path = source, path
        self.latents_classes, self.latents_values = latents_classes, latents_values
        self._packed, self._renderer = packed_images, renderer
        keys = grid_index(latents_classes)
        self._grid_order = bool(len(keys) == NUM_IMAGES and np.array_equal(keys, np.arange(NUM_IMAGES)))
        self._keys_sorted_order = None if self._grid_order else np.argsort(keys, kind="stable")
        self._keys = keys

    @classmethod
    def procedural(cls, image_size: int = IMAGE_SIZE, chunk_size: int = 1024) -> DSprites:
        """The whole grid drawn by :class:`SpriteRenderer` on demand."""
        return cls("render", latents_classes(), latents_values(), renderer=SpriteRenderer(image_size, chunk_size))

    @classmethod
    def from_npz(cls, path: str | os.PathLike) -> DSprites:
        """The original npz (or a subset in its layout), ``imgs`` read bit-packed in chunks (``DataFileError`` if
        unusable)."""
        path = find_npz(path)
        try:
            with zipfile.ZipFile(path) as archive:
                names = {n.removesuffix(".npy") for n in archive.namelist()}
                missing = {"imgs", "latents_values", "latents_classes"} - names
                if missing:
                    raise ValueError(f"missing keys {sorted(missing)} (has {sorted(names)})")
                classes = _read_member(archive, "latents_classes").astype(np.int64)
                values = _read_member(archive, "latents_values").astype(np.float64)
                packed = _read_packed_images(archive)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            raise DataFileError(f"{path} is not a readable dSprites npz: {err}.\n" + _how_to_provide()) from err
        n = len(packed)
        if classes.shape != (n, 6) or values.shape != (n, 6):
            raise DataFileError(f"{path}: latents_classes {classes.shape} and latents_values {values.shape} must be "
                                f"[{n}, 6] like imgs.\n" + _how_to_provide())
        bad = (classes < 0) | (classes >= np.array(FACTOR_SIZES))
        if bad.any():
            raise DataFileError(f"{path}: latents_classes outside the dSprites grid {FACTOR_SIZES}")
        if n != NUM_IMAGES:
            logger.warning("%s holds %d images, not the full grid of %d", path, n, NUM_IMAGES)
        return cls("npz", classes, values, packed_images=packed, path=path)

    def __len__(self) -> int:
        return len(self.latents_classes)

    @property
    def image_size(self) -> int:
        return self._renderer.image_size if self._renderer is not None else int(self._packed.shape[1])

    def images(self, rows) -> np.ndarray:
        """Images of rows ``rows`` (row ``i`` has factors ``latents_classes[i]``): uint8 ``[n, H, W]`` in {0, 1}."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows must lie in [0, {len(self)}), got [{rows.min()}, {rows.max()}]")
        if self._renderer is not None:
            return self._renderer.render(self._keys[rows])
        size = self.image_size
        return np.unpackbits(self._packed[rows], axis=-1, count=size)

    def rows_of(self, classes) -> np.ndarray:
        """Rows ``[n]`` holding factor classes ``[n, 6]`` (``KeyError`` if absent from a subset npz)."""
        keys = grid_index(classes)
        if self._grid_order:
            return keys
        order = self._keys_sorted_order
        pos = np.searchsorted(self._keys[order], keys).clip(0, len(order) - 1)
        rows = order[pos]
        if not np.array_equal(self._keys[rows], keys):
            raise KeyError("some factor combinations are not in this dSprites file")
        return rows

    def images_of(self, classes) -> np.ndarray:
        """Images of factor classes ``[n, 6]``: uint8 ``[n, H, W]``."""
        return self.images(self.rows_of(classes))

    def batches(self, batch_size: int, seed: int = 0, shuffle: bool = True, drop_last: bool = True,
                num_batches: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Mini-batches ``(images uint8 [b, H, W], classes int64 [b, 6])`` drawn lazily, a fresh seeded permutation per
        epoch (``num_batches=None``: one epoch)."""
        rng = np.random.default_rng(seed)
        done = 0
        while True:
            order = rng.permutation(len(self)) if shuffle else np.arange(len(self))
            stop = len(order) - (len(order) % batch_size if drop_last else 0)
            for start in range(0, stop, batch_size):
                rows = order[start:start + batch_size]
                yield self.images(rows), self.latents_classes[rows]
                done += 1
                if num_batches is not None and done >= num_batches:
                    return
            if num_batches is None:
                return


def load(source: str = "npz", path: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
         image_size: int = IMAGE_SIZE) -> DSprites:
    """dSprites from the original npz (``source="npz"``, :func:`find_npz`) or the renderer (``"render"``)."""
    if source not in SOURCES:
        raise ValueError(f"unknown dSprites source {source!r}; choose one of {', '.join(SOURCES)}")
    if source == "render":
        return DSprites.procedural(image_size)
    return DSprites.from_npz(find_npz(path, data_dir))


def load_dataset(data_dir=None, seed: int = 0, source: str = "npz", n_train: int = 10000,
                 n_test: int = 2000) -> Dataset:
    """A :class:`data.Dataset` of a seeded subset of dSprites: flat ``[N, 4096]`` float32 inputs, the shape class as
    label, grid indices and classes in ``info``."""
    ds = load(source, data_dir=data_dir)
    if n_train + n_test > len(ds):
        raise ValueError(f"n_train + n_test = {n_train + n_test} exceeds the {len(ds)} images")
    rows = np.random.RandomState(seed).choice(len(ds), n_train + n_test, replace=False)
    train, test = rows[:n_train], rows[n_train:]
    d = ds.image_size ** 2
    x = ds.images(rows).reshape(-1, d).astype(np.float32)
    y = ds.latents_classes[rows, 1].astype(np.float32)
    size = ds.image_size
    return Dataset("dsprites", "classification", x[:n_train], y[:n_train], x[n_train:], y[n_train:], (1,) * d,
                   tuple(f"pixel_{r}_{c}" for r in range(size) for c in range(size)), np.zeros(d), np.ones(d),
                   np.zeros(1), np.ones(1), image_shape=(size, size, 1), pixel_norm=(0.0, 1.0), target_name="shape",
                   class_names=SHAPES, info={"source": ds.source, "train_index": grid_index(ds.latents_classes[train]),
                                             "test_index": grid_index(ds.latents_classes[test]),
                                             "train_classes": ds.latents_classes[train],
                                             "test_classes": ds.latents_classes[test]})


# ------------------------------------------------------------------------------------------------------ figure


def sprite_grid(ds: DSprites | None = None, n_orientations: int = 8, n_positions: int = 8) -> np.ndarray:
    """One row per shape (6 scales, ``n_orientations`` orientations, ``n_positions`` posX values) as a uint8 mosaic with
    2-px gutters."""
    ds = ds or DSprites.procedural()
    middle = [0, 0, 5, 0, 16, 16]
    cells = []
    for shape in range(len(SHAPES)):
        row = []
        for factor, count, classes in ((2, 6, range(6)),
                                       (3, n_orientations, np.linspace(0, 39, n_orientations).round().astype(int)),
                                       (4, n_positions, np.linspace(0, 31, n_positions).round().astype(int))):
            for c in list(classes)[:count]:
                latent = list(middle)
                latent[1], latent[factor] = shape, int(c)
                row.append(np.pad(ds.images_of([latent])[0], 1, constant_values=1))
        cells.append(np.concatenate(row, axis=1))
    return np.concatenate(cells, axis=0)


def save_sprite_grid(path: str | os.PathLike, ds: DSprites | None = None) -> Path:
    """Writes :func:`sprite_grid` as a PNG (matplotlib) and returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common.io import atomic_path

    mosaic = sprite_grid(ds)
    fig, ax = plt.subplots(figsize=(mosaic.shape[1] / 40, mosaic.shape[0] / 40 + 0.6), dpi=100)
    ax.imshow(mosaic, cmap="gray_r", interpolation="nearest", vmin=0, vmax=1)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_ylabel("  |  ".join(reversed(SHAPES)), fontsize=7)
    source = (ds or DSprites.procedural()).source
    ax.set_title(f"dSprites ({source}): 6 scales | 8 of 40 orientations | 8 of 32 posX", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def _main(argv: Sequence[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m data.dsprites", description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", default="experiments/figures/dsprites_grid.png", help="where to write the grid")
    parser.add_argument("--source", choices=SOURCES, default="render", help="npz (the original) or render")
    parser.add_argument("--data-dir", default=None, help="folder searched first for the npz")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logger.info("wrote %s", save_sprite_grid(args.grid, load(args.source, data_dir=args.data_dir)))


if __name__ == "__main__":
    _main()
