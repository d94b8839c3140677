"""Dataset registry and loaders, reproducing the original preprocessing and splits (spec section 1).

Loaders read raw files through :mod:`data.sources` and return a :class:`Dataset` in the model-input space: continuous
columns standardized with the training split's mean and population std, categorical variables one-hot ("flat"), images
flat in [0, 1]. ``seed=0`` is the original's random split (COMPAS ``train_test_split(test_size=0.1, random_state=42)``,
UCI ``np.random.seed(42)`` permutation, test = first tenth); ``seed=k`` uses random state ``42 + k``; fixed splits
(LSAT, MNIST, ``mnist_t10k``) ignore it."""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from common import tabular
from common.errors import UserError
from data.dsprites import load_dataset as _load_dsprites
from data.schema import Dataset, Variable
from data.sources import DataFileError, fetch, find_first

logger = logging.getLogger(__name__)

ORIGINAL_SPLIT_SEED = 42  # random_state of the original COMPAS and UCI splits
MNIST_NORM = (0.1307, 0.3081)  # the original's BNN input normalization of MNIST pixels (spec 1.6)


# ----------------------------------------------------------------------------------------------------------- tabular


def _tabular(name: str, task: str, x_train, y_train, x_test, y_test, variables: Sequence[Variable],
             target_name: str, class_names=None, standardize_y: bool = False, **info) -> Dataset:
    """Standardizes continuous columns (and regression targets) with training statistics (spec 1.1)."""
    vec = tuple(v.width for v in variables)
    x_mean, x_std = tabular.standardize_stats(x_train, vec)
    x_train = ((np.asarray(x_train, np.float64) - x_mean) / x_std).astype(np.float32)
    x_test = ((np.asarray(x_test, np.float64) - x_mean) / x_std).astype(np.float32)
    if standardize_y:
        y_train, y_test = np.reshape(y_train, (-1, 1)), np.reshape(y_test, (-1, 1))
        y_mean, y_std = tabular.standardize_stats(y_train)
        y_train = ((y_train - y_mean) / y_std).astype(np.float32)
        y_test = ((y_test - y_mean) / y_std).astype(np.float32)
    else:
        y_mean, y_std = np.zeros(1), np.ones(1)
        y_train, y_test = np.asarray(y_train, np.float32), np.asarray(y_test, np.float32)
    names = []
    for v in variables:
        names += [v.name] if v.categories is None else [f"{v.name}={c}" for c in v.categories]
    return Dataset(name, task, x_train, y_train, x_test, y_test, vec, tuple(names), x_mean, x_std,
                   np.atleast_1d(y_mean), np.atleast_1d(y_std), variables=tuple(variables), target_name=target_name,
                   class_names=class_names, info=info)


def _load_lsat(data_dir, seed: int) -> Dataset:
    """LSAT (spec 1.2): the upstream 80/20 files; regression of ZFYA on LSAT, UGPA, race (8) and sex (2)."""
    race = ("amerind", "mexican", "other", "black", "asian", "puerto", "hisp", "white")
    sex = ("female", "male")
    columns = ["LSAT", "UGPA", *race, *sex]
    train = pd.read_csv(fetch("lsat/law_school_cf_train.csv", data_dir))
    test = pd.read_csv(fetch("lsat/law_school_cf_test.csv", data_dir))
    variables = [Variable("LSAT"), Variable("UGPA"), Variable("race", race), Variable("sex", sex)]
    ds = _tabular("lsat", "regression", train[columns].to_numpy(np.float64), train["ZFYA"].to_numpy(np.float64),
                  test[columns].to_numpy(np.float64), test["ZFYA"].to_numpy(np.float64), variables,
                  target_name="ZFYA", standardize_y=True)
    # The CSV's race/sex columns are one-hot already; keep the CSV's column names for the flat layout.
    return _replace(ds, feature_names=tuple(columns))


def _replace(ds: Dataset, **changes) -> Dataset:
    import dataclasses

    return dataclasses.replace(ds, **changes)


def _load_compas(data_dir, seed: int, leak_free: bool = False) -> Dataset:
    """COMPAS (spec 1.3), ProPublica's two-year file filtered as the original; label ``two_year_recid``; ``leak_free``
    drops the ``is_recid`` input (DEVIATIONS.md)."""
    from sklearn.model_selection import train_test_split

    df = pd.read_csv(fetch("compas/compas-scores-two-years.csv", data_dir))
    df = df.dropna(subset=["days_b_screening_arrest"])
    served = (pd.to_datetime(df["c_jail_out"]) - pd.to_datetime(df["c_jail_in"])).dt.days
    df = df.assign(time_served=served.clip(lower=0))
    keep = ((df["days_b_screening_arrest"] <= 30) & (df["days_b_screening_arrest"] >= -30) & (df["is_recid"] != -1)
            & (df["c_charge_degree"] != "O") & (df["score_text"] != "NA"))
    df = df[keep]
    categorical = ["age_cat", "race", "sex", "c_charge_degree"] + ([] if leak_free else ["is_recid"])
    variables, blocks = [], []
    for col in categorical:
        cats = np.sort(df[col].unique())  # OneHotEncoder(categories='auto') sorts the categories
        variables.append(Variable(col, tuple(str(c) for c in cats)))
        blocks.append((df[col].to_numpy()[:, None] == cats[None, :]).astype(np.float64))
    for col in ("priors_count", "time_served"):
        variables.append(Variable(col))
        blocks.append(df[col].to_numpy(np.float64)[:, None])
    x, y = np.concatenate(blocks, axis=1), df["two_year_recid"].to_numpy()
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.1, random_state=ORIGINAL_SPLIT_SEED + seed,
                                                        shuffle=True)
    name = "compas_leak_free" if leak_free else "compas"
    return _tabular(name, "classification", x_train, y_train, x_test, y_test, variables,
                    target_name="two_year_recid", class_names=("no recidivism", "recidivism"), leak_free=leak_free)


def _uci_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The original UCI split: ``np.random.seed(42 + seed)``, permute, test = KFold(10)'s first fold."""
    perm = np.random.RandomState(ORIGINAL_SPLIT_SEED + seed).permutation(n)
    n_test = n // 10 + (1 if n % 10 else 0)  # KFold gives the first n % 10 folds one extra row
    return perm[n_test:], perm[:n_test]


WINE_FEATURES = ("fixed acidity", "volatile acidity", "citric acid", "residual sugar", "chlorides",
                 "free sulfur dioxide", "total sulfur dioxide", "density", "pH", "sulphates", "alcohol")


def _load_wine(data_dir, seed: int) -> Dataset:
    """Red wine quality (spec 1.4), 11 continuous features; read with the original's ``header=1`` (1598 wines,
    DEVIATIONS.md)."""
    raw = pd.read_csv(fetch("wine/winequality-red.csv", data_dir), sep=";", header=1).to_numpy(np.float64)
    train, test = _uci_split(len(raw), seed)
    variables = [Variable(n) for n in WINE_FEATURES]
    return _tabular("wine", "regression", raw[train, :-1], raw[train, -1], raw[test, :-1], raw[test, -1], variables,
                    target_name="quality", standardize_y=True, dropped_first_row=True)


CREDIT_CONTINUOUS = ("AGE", "PAY_0", "PAY_2", "PAY_3", "PAY_4", "PAY_5", "PAY_6",
                     *(f"BILL_AMT{i}" for i in range(1, 7)), *(f"PAY_AMT{i}" for i in range(1, 7)))
# Codes after the original's min-subtraction and clipping (spec 1.4): code = clip(raw - min_train, 0, K - 1).
CREDIT_CATEGORICAL = (
    ("SEX", ("1 male", "2 female")),
    ("EDUCATION", ("0 undocumented", "1 graduate school", "2 university", "3-6 high school/others/unknown")),
    ("MARRIAGE", ("0 undocumented", "1 married", "2-3 single/others")),
)


def _read_credit(path) -> np.ndarray:
    """The 30,000 x 24 (X1..X23, Y) matrix from either the UCI .xls or the CSV export."""
    if str(path).endswith(".xls"):
        table = pd.read_excel(path, header=[0, 1], index_col=0)
    else:
        table = pd.read_csv(path, index_col=0)
    values = table.to_numpy(np.float64)
    if values.shape[1] != 24 or len(values) < 2:
        raise DataFileError(f"{path}: expected the credit table with 23 features and the default label "
                            f"(24 columns after the ID), got shape {values.shape}")
    return values


def _load_credit(data_dir, seed: int) -> Dataset:
    """Default of credit card clients (spec 1.4), 29 flat columns; category codes offset by the training split's
    minimum."""
    raw = _read_credit(find_first(["credit/UCI_Credit_Card.csv", "credit/default of credit card clients.xls"],
                                  data_dir))
    train, test = _uci_split(len(raw), seed)
    x, y = raw[:, :-1].copy(), raw[:, -1]
    cat_cols = (1, 2, 3)
    for col, (_, cats) in zip(cat_cols, CREDIT_CATEGORICAL):
        x[:, col] = np.clip(np.round(x[:, col]) - x[train, col].min(), 0, len(cats) - 1)
    variables = [Variable("LIMIT_BAL")] + [Variable(n, c) for n, c in CREDIT_CATEGORICAL]
    variables += [Variable(n) for n in CREDIT_CONTINUOUS]
    flat = tabular.compact_to_flat(x, [v.width for v in variables])
    return _tabular("credit", "classification", flat[train], y[train], flat[test], y[test], variables,
                    target_name="default payment next month", class_names=("no default", "default"))


# ------------------------------------------------------------------------------------------------------------ images


def _read_idx(path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        payload = f.read()
    ndim = payload[3]
    shape = tuple(int.from_bytes(payload[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(payload, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _image_dataset(name, x_train, y_train, x_test, y_test, image_shape, pixel_norm, **info) -> Dataset:
    d = int(np.prod(image_shape))
    h, w, _ = image_shape
    return Dataset(name, "classification", x_train.reshape(-1, d).astype(np.float32), y_train.astype(np.float32),
                   x_test.reshape(-1, d).astype(np.float32), y_test.astype(np.float32), (1,) * d,
                   tuple(f"pixel_{r}_{c}" for r in range(h) for c in range(w)), np.zeros(d), np.ones(d),
                   np.zeros(1), np.ones(1), image_shape=image_shape, pixel_norm=pixel_norm,
                   target_name="digit", class_names=tuple(str(i) for i in range(10)), info=info)


def _load_mnist(data_dir, seed: int) -> Dataset:
    """MNIST, 60,000 / 10,000 (spec 1.6); pixels in [0, 1], not binarized."""
    try:
        x_train = _read_idx(fetch("mnist/train-images-idx3-ubyte.gz", data_dir))
    except DataFileError as err:
        raise DataFileError(f"{err}\nWithout the 60k training images, use the dataset 'mnist_t10k' (the official "
                            f"10k test set split 8,000 / 2,000), which needs only the t10k files.") from err
    y_train = _read_idx(fetch("mnist/train-labels-idx1-ubyte.gz", data_dir))
    x_test = _read_idx(fetch("mnist/t10k-images-idx3-ubyte.gz", data_dir))
    y_test = _read_idx(fetch("mnist/t10k-labels-idx1-ubyte.gz", data_dir))
    return _image_dataset("mnist", x_train / 255.0, y_train, x_test / 255.0, y_test, (28, 28, 1), MNIST_NORM)


def _load_mnist_t10k(data_dir, seed: int) -> Dataset:
    """The official 10k MNIST test set split 8,000 train / 2,000 test by a fixed permutation (DESIGN.md)."""
    x = _read_idx(fetch("mnist/t10k-images-idx3-ubyte.gz", data_dir)) / 255.0
    y = _read_idx(fetch("mnist/t10k-labels-idx1-ubyte.gz", data_dir))
    perm = np.random.RandomState(0).permutation(10000)
    train, test = perm[:8000], perm[8000:]
    return _image_dataset("mnist_t10k", x[train], y[train], x[test], y[test], (28, 28, 1), MNIST_NORM)


def _load_digits(data_dir, seed: int) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, always offline): 1,437 train / 360 test by ``seed``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x, y = bunch.data / 16.0, bunch.target
    perm = np.random.RandomState(seed).permutation(len(x))
    train, test = perm[:1437], perm[1437:]
    norm = (float(x[train].mean()), float(x[train].std()))
    return _image_dataset("digits", x[train], y[train], x[test], y[test], (8, 8, 1), norm)


# VAE training settings of the original scripts (tabular: RAdam 1e-4, batch 128, <= 2500 epochs, patience 200;
# MNIST: RAdam 7e-4, batch 256, <= 300 epochs, patience 60). digits is a small offline stand-in.
_VAE_TABULAR = {"arch": "mlp", "lr": 1e-4, "batch_size": 128, "max_epochs": 2500, "early_stop": 200}
_VAE_MNIST = {"arch": "mnist_conv", "lr": 7e-4, "batch_size": 256, "max_epochs": 300, "early_stop": 60}


@dataclass(frozen=True)
class DatasetSpec:
    """Everything the project knows of one dataset.

    Attributes:
      loader: ``loader(data_dir, seed, **options) -> Dataset``; ``options``: its keyword options.
      latent_dim: the VAE / VAEAC latent size L of the original's scripts; ``vae``: the VAE's training settings.
      thresholds: the evaluation's [nb] ``(tau_aleatoric, tau_epistemic)``, or None.
      mask_per_variable: the ground-truth VAEAC masks whole variables ([nb]: Credit)."""

    loader: Callable[..., Dataset]
    description: str
    task: str
    latent_dim: int
    vae: dict[str, Any]
    thresholds: tuple[float, float] | None = None
    mask_per_variable: bool = False
    options: tuple[str, ...] = ()


DATASETS: dict[str, DatasetSpec] = {
    "lsat": DatasetSpec(_load_lsat, "LSAT law school, regression, 17432/4358, 12 flat dims", "regression", 4,
                        _VAE_TABULAR, (0.68, 0.07)),
    "compas": DatasetSpec(_load_compas, "COMPAS two-year recidivism, classification, 5554/618, 17 flat dims",
                          "classification", 4, _VAE_TABULAR, (0.15, 0.02), options=("leak_free",)),
    "compas_leak_free": DatasetSpec(lambda data_dir, seed: _load_compas(data_dir, seed, leak_free=True),
                                    "COMPAS without the is_recid input, 15 flat dims", "classification", 4,
                                    _VAE_TABULAR),
    "credit": DatasetSpec(_load_credit, "default of credit card clients, classification, 27000/3000, 29 flat dims",
                          "classification", 8, _VAE_TABULAR, (0.45, 0.008), mask_per_variable=True),
    "wine": DatasetSpec(_load_wine, "red wine quality, regression, 1438/160, 11 dims", "regression", 6,
                        _VAE_TABULAR, (0.8, 0.35)),
    "mnist": DatasetSpec(_load_mnist, "MNIST 60000/10000, 28x28 in [0, 1]", "classification", 20, _VAE_MNIST),
    "mnist_t10k": DatasetSpec(_load_mnist_t10k, "MNIST test set split 8000/2000, 28x28 in [0, 1]",
                              "classification", 20, _VAE_MNIST),
    "digits": DatasetSpec(_load_digits, "scikit-learn 8x8 digits 1437/360, offline", "classification", 8,
                          {"arch": "mlp", "lr": 1e-3, "batch_size": 128, "max_epochs": 500, "early_stop": 50}),
    "dsprites": DatasetSpec(_load_dsprites, "dSprites 64x64 binary, a seeded 10000/2000 subset (the npz; "
                            "source='render': the procedural grid)", "classification", 10,
                            {**_VAE_MNIST, "arch": "mlp"}, options=("source", "n_train", "n_test")),
}


def spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of a built-in dataset (``UserError`` if unknown)."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def check_named(dataset: Dataset | None, name: str) -> None:
    """Checks that a dataset given to a training script is a :class:`Dataset` named ``name`` (``UserError``)."""
    if dataset is None:
        return
    if not isinstance(dataset, Dataset):
        raise UserError(f"expected a data.Dataset, got {type(dataset).__name__}; build one with data.load or "
                        "data.from_frame")
    if dataset.name != name:
        raise UserError(f"the dataset passed is named {dataset.name!r} but the config names {name!r}; set the "
                        f"config's dataset to {dataset.name!r}")


def load(name: str, data_dir: str | os.PathLike | None = None, seed: int = 0, **options: Any) -> Dataset:
    """Loads a dataset of the paper, preprocessed as the original code does.

    Args:
      name: one of ``data.DATASETS``.
      data_dir: folder searched first for the raw files (then ``$CLUE_DATA_DIR`` and the cache).
      seed: split seed (module docstring); **options: e.g. ``compas``'s ``leak_free=True``.

    Raises:
      UserError: unknown name or option; DataFileError: a raw file is missing or fails its checksum."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} (or pass a data.Dataset "
                        "object to the training script's main)")
    entry = DATASETS[name]
    unknown = set(options) - set(entry.options)
    if unknown:
        raise UserError(f"dataset {name!r} takes no option(s) {sorted(unknown)}; it accepts {list(entry.options)}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")
    return entry.loader(data_dir, int(seed), **options)
