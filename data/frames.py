"""A researcher's own table as a :class:`data.Dataset`, with the paper's datasets' preprocessing contract.

``data.from_frame(df, target="default", categorical=["education"], name="my_credit")``: continuous columns standardized
with the training split's mean and population std, categorical columns one-hot (sorted categories, as
``OneHotEncoder``), regression targets standardized, class labels as sorted indices; a seeded split of share
``test_fraction`` (or the caller's ``test`` rows)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from common.errors import UserError
from data.datasets import _tabular
from data.schema import Dataset, Variable


def from_frame(df: pd.DataFrame, target: str, categorical: Sequence[str] = (), task: str | None = None,
               name: str = "custom", test_fraction: float = 0.1, seed: int = 0,
               test: np.ndarray | Sequence[bool] | None = None, features: Sequence[str] | None = None) -> Dataset:
    """Builds a :class:`Dataset` from a data frame (module docstring).

    Args:
      features: the input columns (default: all but ``target``); ``categorical``: those to one-hot encode.
      task: ``"classification"`` or ``"regression"``; None: regression for a float target with more than 10 values.
      test: optional boolean mask ``[len(df)]`` of the test rows (overrides ``test_fraction``).

    Raises:
      UserError: a missing column, a non-numeric continuous input, a missing value or an empty split."""
    features = [c for c in df.columns if c != target] if features is None else list(features)
    missing = [c for c in [target, *features, *categorical] if c not in df.columns]
    if missing:
        raise UserError(f"columns {missing} are not in the frame; it has {list(df.columns)}")
    if stray := [c for c in categorical if c not in features]:
        raise UserError(f"categorical columns {stray} are not among the features {features}")
    if df[[target, *features]].isna().any().any():
        bad = df[[target, *features]].columns[df[[target, *features]].isna().any()].tolist()
        raise UserError(f"columns {bad} hold missing values: drop or impute them before data.from_frame")
    numeric = [c for c in features if c not in categorical]
    if text := [c for c in numeric if not pd.api.types.is_numeric_dtype(df[c])]:
        raise UserError(f"columns {text} are not numeric: list them in categorical=[...]")
    task = task or _guess_task(df[target])
    if task not in ("classification", "regression"):
        raise UserError(f"task must be 'classification' or 'regression', got {task!r}")
    is_test = _split(len(df), test_fraction, seed, test)
    variables, blocks = [], []
    for col in features:  # in the frame's column order, as the caller lists them
        if col in categorical:
            cats = np.sort(df[col].astype(str).unique())
            variables.append(Variable(col, tuple(cats)))
            blocks.append((df[col].astype(str).to_numpy()[:, None] == cats[None, :]).astype(np.float64))
        else:
            variables.append(Variable(col))
            blocks.append(df[col].to_numpy(np.float64)[:, None])
    x = np.concatenate(blocks, axis=1)
    if task == "classification":
        classes = np.sort(df[target].astype(str).unique())
        y = np.searchsorted(classes, df[target].astype(str).to_numpy()).astype(np.float64)
        class_names = tuple(classes)
    else:
        y, class_names = df[target].to_numpy(np.float64), None
    return _tabular(name, task, x[~is_test], y[~is_test], x[is_test], y[is_test], variables, target_name=target,
                    class_names=class_names, standardize_y=task == "regression", source="from_frame", seed=seed)


def _guess_task(y: pd.Series) -> str:
    return "regression" if pd.api.types.is_float_dtype(y) and y.nunique() > 10 else "classification"


def _split(n: int, test_fraction: float, seed: int, test) -> np.ndarray:
    if test is not None:
        is_test = np.asarray(test, bool)
        if is_test.shape != (n,):
            raise UserError(f"test must be a boolean mask of the {n} rows, got shape {is_test.shape}")
    else:
        if not 0 < test_fraction < 1:
            raise UserError(f"test_fraction must be in (0, 1), got {test_fraction}")
        perm = np.random.RandomState(seed).permutation(n)
        is_test = np.zeros(n, bool)
        is_test[perm[:max(1, int(round(test_fraction * n)))]] = True
    if is_test.all() or not is_test.any():
        raise UserError(f"the split leaves an empty {'training' if is_test.all() else 'test'} set; "
                        "pass more rows or another test_fraction")
    return is_test
