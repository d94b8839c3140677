"""Mixed continuous/categorical tables: the "flat" (one-hot) and "compact" (category index) views (spec 1.1).

``input_dim_vec`` has one entry per variable: 1 for a continuous variable, K >= 2 for a categorical one with K
classes. The flat layout puts each variable's columns in that order (one column, or a one-hot block of K);
its width is ``sum(input_dim_vec)``. The compact layout has one column per variable holding the value or the class
index (as a float).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _check_vec(input_dim_vec: Sequence[int]) -> np.ndarray:
    vec = np.asarray(input_dim_vec, dtype=np.int64)
    if vec.ndim != 1 or len(vec) == 0 or np.any(vec < 1):
        raise ValueError(f"input_dim_vec must be a non-empty list of positive ints, got {list(input_dim_vec)}")
    return vec


def block_slices(input_dim_vec: Sequence[int]) -> list[slice]:
    """Flat-column slice of each variable."""
    ends = np.cumsum(_check_vec(input_dim_vec))
    return [slice(int(e - k), int(e)) for e, k in zip(ends, input_dim_vec)]


def input_dim_vec_to_x_dims(input_dim_vec: Sequence[int]) -> np.ndarray:
    """Per flat column, the size of the variable it belongs to: ``[1, 1, 8, 2] -> [1, 1, 8 x8, 2 x2]``."""
    vec = _check_vec(input_dim_vec)
    return np.repeat(vec, vec)


def flat_to_compact(x: np.ndarray, input_dim_vec: Sequence[int]) -> np.ndarray:
    """Flat ``[N, sum(vec)]`` -> compact ``[N, len(vec)]``; argmax per one-hot block (ties go to the lowest index)."""
    x = np.asarray(x)
    slices = block_slices(input_dim_vec)
    if x.ndim != 2 or x.shape[1] != slices[-1].stop:
        raise ValueError(f"expected flat data of shape [N, {slices[-1].stop}], got {x.shape}")
    cols = [x[:, s] if s.stop - s.start == 1 else np.argmax(x[:, s], axis=1)[:, None].astype(x.dtype) for s in slices]
    return np.concatenate(cols, axis=1)


def compact_to_flat(x: np.ndarray, input_dim_vec: Sequence[int]) -> np.ndarray:
    """Compact ``[N, len(vec)]`` -> flat ``[N, sum(vec)]``, one-hot encoding each categorical column."""
    x = np.asarray(x)
    vec = _check_vec(input_dim_vec)
    if x.ndim != 2 or x.shape[1] != len(vec):
        raise ValueError(f"expected compact data of shape [N, {len(vec)}], got {x.shape}")
    cols = []
    for j, k in enumerate(vec):
        if k == 1:
            cols.append(x[:, j:j + 1])
            continue
        codes = x[:, j].astype(np.int64)
        if np.any(codes < 0) or np.any(codes >= k) or np.any(codes != x[:, j]):
            raise ValueError(f"column {j} must hold integer class codes in [0, {k - 1}]")
        cols.append(np.eye(k, dtype=x.dtype)[codes])
    return np.concatenate(cols, axis=1)


def compact_mask_to_flat(mask: np.ndarray, input_dim_vec: Sequence[int]) -> np.ndarray:
    """Per-variable mask ``[N, len(vec)]`` -> flat mask, repeating each variable's bit over its columns."""
    vec = _check_vec(input_dim_vec)
    return np.repeat(np.asarray(mask), vec, axis=1)


def standardize_stats(x_train: np.ndarray, input_dim_vec: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Train-split mean and population std (``ddof=0``) per flat column, as the original loaders compute them.

    One-hot columns keep mean 0 and std 1; a std below 1e-10 becomes 1.

    Returns:
      (mean, std), float64 ``[D]``.
    """
    x_train = np.asarray(x_train, dtype=np.float64)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    if input_dim_vec is not None:
        onehot = input_dim_vec_to_x_dims(input_dim_vec) > 1
        mean[onehot], std[onehot] = 0.0, 1.0
    std[std < 1e-10] = 1.0
    return mean, std


def is_valid_one_hot(x: np.ndarray, input_dim_vec: Sequence[int]) -> bool:
    """True when every categorical block of flat ``x`` holds exactly one 1 and zeros elsewhere."""
    x = np.asarray(x)
    for s in block_slices(input_dim_vec):
        if s.stop - s.start > 1:
            block = x[:, s]
            if not (np.all((block == 0) | (block == 1)) and np.all(block.sum(axis=1) == 1)):
                return False
    return True
