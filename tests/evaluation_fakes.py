"""Small fake datasets and ground-truth VAEACs shared by the evaluation tests (tests/test_evaluation_*.py)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

import data
from CLUE import evaluation as ev
from VAEAC.model import VAEAC
from VAEAC.under import UnderVAEAC

X_VEC = [3, 1, 2, 1]  # two categorical and two continuous variables: 7 flat columns


def fake_real(name, vec, task, n_train=40, n_test=10):
    d = sum(vec)
    rng = np.random.default_rng(0)
    y = (rng.integers(0, 2, n_train + n_test).astype(np.float32) if task == "classification"
         else rng.normal(size=(n_train + n_test, 1)).astype(np.float32))
    x = rng.normal(size=(n_train + n_test, d)).astype(np.float32)
    return data.Dataset(name, task, x[:n_train], y[:n_train], x[n_train:], y[n_train:], tuple(vec),
                        tuple(f"f{i}" for i in range(d)), np.zeros(d), np.ones(d), np.zeros(1), np.ones(1),
                        class_names=("a", "b") if task == "classification" else None)


def ground_truth(task, likelihood="gauss_cat"):
    tf.keras.utils.set_random_seed(1)
    if likelihood == "gauss":  # wine-like: all continuous, learned decoder scale
        vec = [1] * 5
        base = VAEAC(vec, latent_dim=2, likelihood="gauss", width=16, depth=2, pred_sig=True)
        return ev.GroundTruth(UnderVAEAC(base, width=8, depth=2), 4, task), [1] * 4
    vec = X_VEC + ([2] if task == "classification" else [1])
    base = VAEAC(vec, latent_dim=3, likelihood="gauss_cat", width=16, depth=2)
    return ev.GroundTruth(UnderVAEAC(base, width=8, depth=2), sum(X_VEC), task), X_VEC
