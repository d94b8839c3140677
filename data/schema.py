"""The dataset record every loader returns, converting between the flat model-input layout, the compact layout (one
column per variable) and original units."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from common import tabular


@dataclass(frozen=True)
class Variable:
    """One input variable: continuous (``categories is None``) or categorical with labeled classes."""

    name: str
    categories: tuple[str, ...] | None = None

    @property
    def width(self) -> int:
        return 1 if self.categories is None else len(self.categories)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A preprocessed dataset with its train/test split.

    Attributes:
      x_train, x_test: float32 ``[N, D]`` in the model-input space (flat one-hot; images flat in [0, 1]).
      y_train, y_test: float32 ``[N]`` class indices, or ``[N, 1]`` standardized regression targets.
      input_dim_vec: per-variable widths (1 continuous, K for a K-class block), summing to D; ``variables``: the
        variables.
      x_mean, x_std: float64 ``[D]``: ``x_raw = x * x_std + x_mean`` on continuous columns; y_mean, y_std: ``[1]``.
      image_shape: ``(H, W, C)`` for images; pixel_norm: ``(mean, std)`` the BNN applies to pixels."""

    name: str
    task: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    input_dim_vec: tuple[int, ...]
    feature_names: tuple[str, ...]
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: np.ndarray
    y_std: np.ndarray
    image_shape: tuple[int, int, int] | None = None
    pixel_norm: tuple[float, float] | None = None
    variables: tuple[Variable, ...] = ()
    target_name: str = "y"
    class_names: tuple[str, ...] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        d = sum(self.input_dim_vec)
        for split in ("x_train", "x_test"):
            arr = getattr(self, split)
            if arr.ndim != 2 or arr.shape[1] != d or arr.dtype != np.float32:
                raise ValueError(f"{self.name}: {split} must be float32 [N, {d}], got {arr.dtype} {arr.shape}")
        if len(self.feature_names) != d:
            raise ValueError(f"{self.name}: {len(self.feature_names)} feature names for {d} columns")

    @property
    def n_classes(self) -> int | None:
        return None if self.task == "regression" else len(self.class_names or ())

    @property
    def x_dim(self) -> int:
        return int(sum(self.input_dim_vec))

    @property
    def is_image(self) -> bool:
        return self.image_shape is not None

    def to_compact(self, x: np.ndarray) -> np.ndarray:
        """Flat ``[N, D]`` -> compact ``[N, n_variables]`` (category index per categorical variable)."""
        return tabular.flat_to_compact(x, self.input_dim_vec)

    def to_flat(self, x_compact: np.ndarray) -> np.ndarray:
        """Compact ``[N, n_variables]`` -> flat ``[N, D]``."""
        return tabular.compact_to_flat(x_compact, self.input_dim_vec).astype(np.float32)

    def to_original_units(self, x: np.ndarray) -> pd.DataFrame:
        """Flat model-space inputs -> a table of raw values and category labels (blocks read by their argmax)."""
        if self.is_image:
            raise ValueError(f"{self.name} is an image dataset; original units are the pixel values themselves")
        x = np.asarray(x, dtype=np.float64)
        compact = tabular.flat_to_compact(x, self.input_dim_vec)
        columns = {}
        for j, (var, s) in enumerate(zip(self.variables, tabular.block_slices(self.input_dim_vec))):
            if var.categories is None:
                columns[var.name] = compact[:, j] * self.x_std[s.start] + self.x_mean[s.start]
            else:
                columns[var.name] = pd.Categorical.from_codes(compact[:, j].astype(int), categories=var.categories)
        return pd.DataFrame(columns)

    def from_original_units(self, table: pd.DataFrame) -> np.ndarray:
        """Inverse of :meth:`to_original_units`: a table in original units -> flat float32 model inputs."""
        compact = np.empty((len(table), len(self.variables)), dtype=np.float64)
        for j, (var, s) in enumerate(zip(self.variables, tabular.block_slices(self.input_dim_vec))):
            column = table[var.name]
            if var.categories is None:
                compact[:, j] = (np.asarray(column, dtype=np.float64) - self.x_mean[s.start]) / self.x_std[s.start]
            else:
                codes = pd.Categorical(column, categories=var.categories).codes
                if np.any(codes < 0):
                    raise ValueError(f"{var.name}: values outside the categories {var.categories}")
                compact[:, j] = codes
        return tabular.compact_to_flat(compact, self.input_dim_vec).astype(np.float32)

    def y_to_original_units(self, y: np.ndarray) -> np.ndarray:
        """Standardized regression targets (or predictive means) -> original units."""
        return np.asarray(y, dtype=np.float64) * self.y_std + self.y_mean
