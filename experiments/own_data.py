"""CLUE on your own model and data: a CSV, a Keras classifier of your own (MC dropout), a VAE trained in two lines,
CLUE with some features held fixed, and a per-explanation "prediction changed" flag (``own_data.ipynb``).

The stand-in for "your CSV" is scikit-learn's bundled breast-cancer table (569 rows, 30 measurements, offline),
written to a CSV and read back, with one categorical column derived from it (a size band of the mean radius) so
that the one-hot path is shown too.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd

import data
from CLUE import CLUE, CLUEConfig, CLUEWeights
from CLUE.generate import changed_features
from VAE import train as vae_train
from VAE.model import load_vae


def write_example_csv(path: str | Path) -> Path:
    """Writes the stand-in CSV: the breast-cancer table, ``diagnosis`` (malignant / benign) and ``size band``."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    df = bunch.frame.rename(columns={"target": "diagnosis"})
    df["diagnosis"] = np.where(df["diagnosis"] == 1, "benign", "malignant")
    df["size band"] = pd.qcut(df["mean radius"], 3, labels=["small", "medium", "large"]).astype(str)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path


def my_classifier(input_dim: int, n_classes: int, seed: int, dropout: float = 0.2) -> keras.Model:
    """A researcher's own Keras classifier: an MLP with dropout, softmax outputs."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((input_dim,)), keras.layers.Dense(64, activation="relu"),
                             keras.layers.Dropout(dropout), keras.layers.Dense(64, activation="relu"),
                             keras.layers.Dropout(dropout), keras.layers.Dense(n_classes, activation="softmax")])


def fit_classifier(ds: data.Dataset, epochs: int, seed: int) -> keras.Model:
    model = my_classifier(ds.x_dim, ds.n_classes, seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(ds.x_train, ds.y_train, epochs=epochs, batch_size=64, verbose=0)
    return model


def train_vae(ds: data.Dataset, out: str | Path, epochs: int, seed: int):
    """The VAE CLUE searches in, in two lines: ``VAE.train.main`` on the dataset object, then its best checkpoint."""
    vae_train.main(vae_train.Config(dataset=ds.name, latent_dim=4, max_epochs=epochs, early_stop=epochs,
                                    lr=1e-3, seed=seed, out=str(out), progress=False), dataset=ds)
    return load_vae(Path(out) / "best")


def fixed_mask(ds: data.Dataset, fixed: list[str]) -> np.ndarray:
    """``[D]`` 1 where CLUE may change a flat column, 0 on every column of the ``fixed`` variables."""
    mask = np.ones(ds.x_dim, np.float32)
    start = 0
    for var in ds.variables:
        if var.name in fixed:
            mask[start:start + var.width] = 0.0
        start += var.width
    return mask


def explain(predictive, vae, ds: data.Dataset, n: int, fixed: list[str], max_steps: int):
    """CLUEs of the ``n`` test points the model is least sure of, with the ``fixed`` variables held at x0.

    Returns:
      (result, rows): the :class:`CLUE.CLUEResult` and the explained test rows.
    """
    clue = CLUE(predictive, vae, CLUEConfig(CLUEWeights.paper(lam=2.0, x_dim=ds.x_dim), lr=0.1,
                                            max_steps=max_steps))
    rows = np.argsort(-clue.uncertainty(ds.x_test), kind="stable")[:n]
    return clue.explain(ds.x_test[rows], cond_mask=fixed_mask(ds, fixed)), rows


def result_table(ds: data.Dataset, result, rows: np.ndarray) -> pd.DataFrame:
    """One row per explanation: entropy before and after, predicted class before and after, changed or not."""
    names = np.asarray(ds.class_names)
    return pd.DataFrame({"test row": rows, "entropy x0": result.uncertainty_before.round(3),
                         "entropy CLUE": result.uncertainty_after.round(3),
                         "class x0": names[result.prediction_before.argmax(1)],
                         "class CLUE": names[result.prediction_after.argmax(1)],
                         "prediction changed": result.prediction_changed, "L1": result.l1_distance.round(2)})


def changes(ds: data.Dataset, result, rows: np.ndarray) -> pd.DataFrame:
    """The features each explanation changed, in original units."""
    return changed_features(ds, result, rows, threshold=0.25)


def summary(ds, model, predictive, result, fixed: list[str]) -> dict:
    x_fixed = fixed_mask(ds, fixed) == 0
    return {"dataset": {"name": ds.name, "n_train": len(ds.x_train), "n_test": len(ds.x_test), "x_dim": ds.x_dim},
            "model": {"test_accuracy": float(np.mean(predictive.predict_samples(ds.x_test).numpy().mean(0)
                                                     .argmax(1) == ds.y_test)), "mc_samples": predictive.n_samples},
            "clue": {**result.summary(),
                     "fixed_columns_unchanged": bool(np.array_equal(result.x[:, x_fixed], result.x0[:, x_fixed]))}}
