"""Mixed tables (spec 1.1), NumPy only: ``input_dim_vec`` is 1 per continuous variable, K per categorical one; the
flat layout has a column or one-hot block of K per variable, the compact one a value or class index per variable."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_input_dim_vec(input_dim_vec: Sequence[int]) -> list[int]:
    """The widths as a list of ints; raises ValueError unless it is a non-empty list of positive ints."""
    vec = [int(k) for k in input_dim_vec]
    if not vec or any(k < 1 for k in vec):
        raise ValueError(f"input_dim_vec must be a non-empty list of positive ints, got {list(input_dim_vec)!r}")
    return vec


def block_slices(input_dim_vec: Sequence[int]) -> list[slice]:
    """The flat column range of each variable, in ``input_dim_vec`` order."""
    offsets = np.concatenate([[0], np.cumsum(check_input_dim_vec(input_dim_vec))])
    return [slice(int(a), int(b)) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def input_dim_vec_to_x_dims(input_dim_vec: Sequence[int]) -> list[int]:
    """Per flat column, the size of the variable it belongs to: ``[1, 1, 8, 2] -> [1, 1, 8 x8, 2 x2]``."""
    return [k for k in check_input_dim_vec(input_dim_vec) for _ in range(k)]


def x_dims_to_input_dim_vec(x_dims: Sequence[int]) -> list[int]:
    """Inverse of :func:`input_dim_vec_to_x_dims`."""
    vec, i = [], 0
    while i < len(x_dims):
        vec.append(int(x_dims[i]))
        i += int(x_dims[i])
    return vec


def flat_to_compact(x: np.ndarray, input_dim_vec: Sequence[int]) -> np.ndarray:
    """Flat ``[..., sum(vec)]`` -> compact ``[..., len(vec)]``; argmax per one-hot block (ties: lowest index)."""
    x = np.asarray(x)
    slices = block_slices(input_dim_vec)
    if x.ndim < 1 or x.shape[-1] != slices[-1].stop:
        raise ValueError(f"flat x has shape {x.shape}, but sum(input_dim_vec) = {slices[-1].stop} columns")
    cols = [x[..., s] if s.stop - s.start == 1 else np.argmax(x[..., s], axis=-1)[..., None].astype(x.dtype)
            for s in slices]
    return np.concatenate(cols, axis=-1)


def compact_to_flat(x: np.ndarray, input_dim_vec: Sequence[int]) -> np.ndarray:
    """Compact ``[..., len(vec)]`` -> flat ``[..., sum(vec)]``, one-hot encoding each categorical column."""
    x = np.asarray(x)
    vec = check_input_dim_vec(input_dim_vec)
    if x.ndim < 1 or x.shape[-1] != len(vec):
        raise ValueError(f"compact x has shape {x.shape}, but input_dim_vec has {len(vec)} variables")
    cols = []
    for j, k in enumerate(vec):
        if k == 1:
            cols.append(x[..., j:j + 1])
            continue
        idx = x[..., j].astype(np.int64)
        if np.any(idx < 0) or np.any(idx >= k) or np.any(idx != x[..., j]):
            raise ValueError(f"variable {j} must hold integer class indices in [0, {k})")
        cols.append(np.eye(k, dtype=x.dtype)[idx])
    return np.concatenate(cols, axis=-1)


def compact_mask_to_flat(mask: np.ndarray, input_dim_vec: Sequence[int]) -> np.ndarray:
    """Per-variable mask ``[..., len(vec)]`` -> per-column mask ``[..., sum(vec)]`` (each bit repeated K times)."""
    return np.repeat(np.asarray(mask), check_input_dim_vec(input_dim_vec), axis=-1)


def standardize_stats(x_train: np.ndarray, input_dim_vec: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Train-split mean and population std (``ddof=0``) per flat column, float64 ``[D]`` each, as the original
    loaders; one-hot columns keep mean 0 and std 1, and a std below 1e-10 becomes 1."""
    x_train = np.asarray(x_train, dtype=np.float64)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    if input_dim_vec is not None:
        onehot = np.asarray(input_dim_vec_to_x_dims(input_dim_vec)) > 1
        mean[onehot], std[onehot] = 0.0, 1.0
    std[std < 1e-10] = 1.0
    return mean, std


def is_valid_one_hot(x: np.ndarray, input_dim_vec: Sequence[int]) -> bool:
    """True when every categorical block of flat ``x`` holds exactly one 1 and zeros elsewhere."""
    x = np.asarray(x)
    for s in block_slices(input_dim_vec):
        if s.stop - s.start > 1:
            block = x[..., s]
            if not (np.all((block == 0) | (block == 1)) and np.all(block.sum(axis=-1) == 1)):
                return False
    return True
