"""common.predictive: the contract every model CLUE explains keeps, and the one uncertainty decomposition."""

from __future__ import annotations

import ast
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from BNN.adapters import DeepEnsemble, MCDropout
from BNN.model import Architecture, init_params
from BNN.posterior import Posterior
from common.errors import UserError
from common.predictive import Predictive, decompose, input_spec, uncertainties


def _entropy(p):
    return -np.sum(p * np.log(p + 1e-10), axis=-1)


def test_decompose_matches_a_hand_computation_for_both_likelihoods():
    probs = np.array([[[0.9, 0.1]], [[0.5, 0.5]]], np.float32)  # S=2, B=1, C=2
    total, ale, epi, mean = (t.numpy() for t in decompose(tf.constant(probs)))
    np.testing.assert_allclose(mean, [[0.7, 0.3]], rtol=1e-6)
    np.testing.assert_allclose(total, _entropy(np.array([0.7, 0.3])), rtol=1e-5)
    np.testing.assert_allclose(ale, (_entropy(probs[0, 0]) + _entropy(probs[1, 0])) / 2, rtol=1e-5)
    np.testing.assert_allclose(epi, total - ale, rtol=1e-5)
    mu, sigma = np.array([[1.0], [3.0]], np.float32), np.array([[0.5], [1.5]], np.float32)  # S=2, B=1
    total, ale, epi, mean = (t.numpy() for t in decompose((tf.constant(mu), tf.constant(sigma))))
    np.testing.assert_allclose(mean, [2.0])
    np.testing.assert_allclose(ale, [np.sqrt((0.25 + 2.25) / 2)], rtol=1e-6)  # sqrt(E sigma^2)
    np.testing.assert_allclose(epi, [1.0], rtol=1e-6)  # sqrt(Var mu), centered
    np.testing.assert_allclose(total, np.sqrt(ale**2 + epi**2), rtol=1e-6)


def _posterior(likelihood="categorical", input_dim=4):
    arch = Architecture(input_dim=input_dim, output_dim=2, width=8, depth=1)
    params = [init_params(arch, seed=s) for s in range(3)]
    stacked = {k: tf.stack([p[k] for p in params]) for k in params[0]}
    return Posterior(arch, likelihood, stacked, dataset="toy")


def _member(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])


def test_every_model_keeps_the_contract_and_reports_the_one_decomposition():
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    dropout = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dropout(0.5),
                                keras.layers.Dense(2)])
    models = [_posterior(), _posterior("gaussian"), DeepEnsemble([_member(0), _member(1)], "categorical"),
              MCDropout(dropout, n_samples=4, seed=0)]
    for model in models:
        assert isinstance(model, Predictive), type(model).__name__
        expected = uncertainties(model, tf.constant(x))[:3]
        for got, want in zip(model.uncertainty(x), expected):
            np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert not isinstance(object(), Predictive)


def test_input_spec_reads_the_contract_and_refuses_mismatched_widths():
    post = _posterior()
    spec = input_spec(post)
    assert (spec["width"], spec["dataset"], spec["what"]) == (4, "toy", "this BNN")

    class Generator:
        input_dim, dataset = 6, "other"

    with pytest.raises(UserError, match="takes 4 input columns but the Generator 6"):
        input_spec(post, Generator())


def test_baselines_and_the_evaluation_metrics_depend_on_the_contract_not_on_the_optimizer():
    root = Path(__file__).resolve().parent.parent
    for module in ("CLUE/baselines.py", "CLUE/evaluation/metrics.py", "BNN/adapters.py", "BNN/posterior.py"):
        tree = ast.parse((root / module).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "CLUE.explainer" not in imported, module
        assert "common.predictive" in imported, module
