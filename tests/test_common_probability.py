"""Uncertainty decompositions (common/probability.py) against hand-computed values and their identities."""

import numpy as np
import pytest
import tensorflow as tf

from common import probability


def _entropy(p):
    return -np.sum(p * np.log(p + 1e-10), axis=-1)


def test_entropy_split_matches_hand_computed_values():
    # Two samples that disagree completely on row 0 and agree on row 1.
    probs = np.array([[[1.0, 0.0], [0.5, 0.5]],
                      [[0.0, 1.0], [0.5, 0.5]]], np.float32)  # [S=2, B=2, C=2]
    total, ale, epi = (t.numpy() for t in probability.decompose_entropy_cat(probs))
    np.testing.assert_allclose(total, [np.log(2), np.log(2)], atol=1e-6)
    np.testing.assert_allclose(ale, [0.0, np.log(2)], atol=1e-6)  # confident samples; both uniform
    np.testing.assert_allclose(epi, [np.log(2), 0.0], atol=1e-6)  # all disagreement is epistemic


def test_entropy_split_random_matches_numpy_and_adds_up():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(7, 5, 4)) * 3
    probs = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    total, ale, epi = (t.numpy() for t in probability.decompose_entropy_cat(probs))
    np.testing.assert_allclose(total, _entropy(probs.mean(0)), rtol=1e-5)
    np.testing.assert_allclose(ale, _entropy(probs).mean(0), rtol=1e-5)
    np.testing.assert_allclose(total, ale + epi, atol=1e-6)
    assert np.all(epi > -1e-6)  # mutual information is non-negative (Jensen)


def test_std_split_matches_hand_computed_values():
    mu = np.array([[1.0, 2.0], [3.0, 2.0]], np.float32)  # [S=2, B=2]
    sigma = np.array([[1.0, 3.0], [1.0, 4.0]], np.float32)
    total, ale, epi = (t.numpy() for t in probability.decompose_std_gauss(mu, sigma))
    np.testing.assert_allclose(ale, [1.0, np.sqrt(12.5)], rtol=1e-6)
    np.testing.assert_allclose(epi, [1.0, 0.0], atol=1e-7)  # var of {1, 3} is 1; identical means give 0
    np.testing.assert_allclose(total**2, ale**2 + epi**2, rtol=1e-6)


def test_std_split_sums_over_output_dims():
    rng = np.random.default_rng(1)
    mu, sigma = rng.normal(size=(6, 3, 2)).astype(np.float32), rng.uniform(0.5, 2, size=(6, 3, 2)).astype(np.float32)
    total, ale, epi = (t.numpy() for t in probability.decompose_std_gauss(mu, sigma))
    np.testing.assert_allclose(ale**2, (sigma**2).mean(0).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(epi**2, mu.var(0).sum(-1), rtol=1e-5)
    np.testing.assert_allclose(total**2, ale**2 + epi**2, rtol=1e-5)


def test_epistemic_std_is_not_nan_where_raw_moments_cancel():
    # 53 identical samples per row: E[mu^2] - E[mu]^2 in float32 rounds to small negatives on some rows (NaN after
    # the original's sqrt); the centred variance stays >= 0 (rounding of the mean leaves it below 1e-7).
    mu = np.tile(np.linspace(0.1, 3.0, 500, dtype=np.float32), (53, 1))  # [S, B]
    raw = (tf.reduce_mean(mu**2, 0) - tf.reduce_mean(mu, 0) ** 2).numpy()
    assert np.any(raw < 0), "the fixture should reproduce the original's cancellation"
    total, ale, epi = (t.numpy() for t in probability.decompose_std_gauss(mu, np.ones_like(mu)))
    assert np.all(np.isfinite(epi)) and np.all(epi**2 < 1e-7)
    np.testing.assert_allclose(total, ale, rtol=1e-6)


@pytest.mark.parametrize("spread", [0.0, 0.3])
def test_gradients_flow_and_are_finite_even_when_samples_agree(spread):
    x = tf.Variable(np.linspace(-1, 1, 5, dtype=np.float32))
    weights = tf.constant(1.0 + spread * np.arange(4, dtype=np.float32))[:, None]  # [S, 1]
    with tf.GradientTape() as tape:
        mu = weights * x[None]  # [S, B]; spread 0 -> all samples agree exactly
        sigma = tf.nn.softplus(mu)
        total, ale, epi = probability.decompose_std_gauss(mu, sigma)
        loss = tf.reduce_sum(total + ale + epi)
    grad = tape.gradient(loss, x).numpy()
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)
    with tf.GradientTape() as tape:
        probs = tf.nn.softmax(tf.stack([weights * x[None], -weights * x[None]], -1), -1)  # [S, B, 2]
        loss = tf.reduce_sum(probability.decompose_entropy_cat(probs)[0])
    grad = tape.gradient(loss, x).numpy()
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)


def test_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"\[S, B, C\]"):
        probability.decompose_entropy_cat(np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match="equal shape"):
        probability.decompose_std_gauss(np.ones((3, 2)), np.ones((3, 4)))
