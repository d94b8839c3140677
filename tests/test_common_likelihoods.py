"""Likelihoods, KLs, layout conversions and selective_softmax against hand computations (numpy / scipy)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from scipy import special, stats

from common import likelihoods as lk

VEC = [1, 3, 1, 2]  # continuous, 3-class, continuous, 2-class -> 7 flat columns


def _random_flat(rng, n, vec):
    compact = np.stack([rng.normal(size=n) if k == 1 else rng.integers(0, k, size=n) for k in vec], axis=1)
    return compact.astype(np.float32), lk.compact_to_flat(compact.astype(np.float32), vec)


def test_flat_compact_round_trip_and_x_dims():
    rng = np.random.default_rng(0)
    compact, flat = _random_flat(rng, 50, VEC)
    assert flat.shape == (50, 7)
    np.testing.assert_array_equal(lk.flat_to_compact(flat, VEC), compact)
    assert lk.input_dim_vec_to_x_dims([1, 1, 8, 2]) == [1, 1] + [8] * 8 + [2, 2]
    assert lk.x_dims_to_input_dim_vec(lk.input_dim_vec_to_x_dims([3, 6, 2, 2, 2, 1, 1])) == [3, 6, 2, 2, 2, 1, 1]
    np.testing.assert_array_equal(lk.compact_mask_to_flat(np.array([[1, 0, 1, 0]]), VEC), [[1, 0, 0, 0, 1, 0, 0]])
    with pytest.raises(ValueError):
        lk.flat_to_compact(flat[:, :6], VEC)
    with pytest.raises(ValueError):
        lk.compact_to_flat(np.array([[0.0, 3.0, 0.0, 0.0]], np.float32), VEC)  # class 3 of a 3-class variable


def test_gauss_cat_log_likelihood_matches_hand_computation():
    rng = np.random.default_rng(1)
    compact, flat = _random_flat(rng, 20, VEC)
    out = rng.normal(size=(20, 7)).astype(np.float32) * 2
    ours = lk.gauss_cat_log_likelihood(tf.constant(out), tf.constant(flat), VEC).numpy()
    assert ours.shape == (20, 4)
    expected = np.stack([
        -(out[:, 0] - compact[:, 0]) ** 2,
        special.log_softmax(out[:, 1:4], axis=1)[np.arange(20), compact[:, 1].astype(int)],
        -(out[:, 4] - compact[:, 2]) ** 2,
        special.log_softmax(out[:, 5:7], axis=1)[np.arange(20), compact[:, 3].astype(int)],
    ], axis=1)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
    # the loss normaliser counts variables, not flat columns
    assert lk.vlb_scale("gauss_cat", VEC) == pytest.approx(1 / 4)
    assert lk.vlb_scale("bernoulli", [1] * 784) == pytest.approx(1 / 784)


def test_gauss_cat_target_ties_go_to_lowest_index():
    out = tf.constant([[0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0]])
    x = tf.constant([[0.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0]])  # tie between classes 0 and 1 of the 3-class block
    ll = lk.gauss_cat_log_likelihood(out, x, VEC).numpy()
    np.testing.assert_allclose(ll[0, 1], special.log_softmax([1.0, 2.0, 3.0])[0], rtol=1e-6)


def test_bernoulli_and_gaussian_likelihoods():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(6, 5)).astype(np.float32) * 3
    x = rng.uniform(size=(6, 5)).astype(np.float32)  # grey pixels: continuous targets
    p = special.expit(logits.astype(np.float64))
    np.testing.assert_allclose(lk.bernoulli_log_likelihood(logits, x).numpy(),
                               x * np.log(p) + (1 - x) * np.log1p(-p), rtol=1e-5, atol=1e-6)
    mu, s = rng.normal(size=(6, 5)), rng.normal(size=(6, 5)) * 2 - 3  # some softplus(s) below the 1e-2 floor
    out = np.concatenate([mu, s], axis=1).astype(np.float32)
    sigma = np.maximum(np.log1p(np.exp(s)), 1e-2)
    np.testing.assert_allclose(lk.gauss_learned_scale_log_likelihood(out, x).numpy(),
                               stats.norm.logpdf(x, mu, sigma), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(lk.gauss_unit_log_likelihood(mu.astype(np.float32), x).numpy(), -(mu - x) ** 2,
                               rtol=1e-5, atol=1e-6)


def test_kl_divergences_match_closed_form_and_monte_carlo():
    rng = np.random.default_rng(3)
    loc_q, scale_q = rng.normal(size=3), np.exp(rng.normal(size=3) * 0.5)
    loc_p, scale_p = rng.normal(size=3), np.exp(rng.normal(size=3) * 0.5)
    z = rng.normal(loc_q, scale_q, size=(400_000, 3))
    mc = (stats.norm.logpdf(z, loc_q, scale_q) - stats.norm.logpdf(z, loc_p, scale_p)).mean(0)
    ours = lk.kl_normal_normal(*(tf.constant(a, tf.float64) for a in (loc_q, scale_q, loc_p, scale_p))).numpy()
    np.testing.assert_allclose(ours, mc, atol=0.02)
    std = lk.kl_normal_std_normal(tf.constant(loc_q), tf.constant(scale_q)).numpy()
    np.testing.assert_allclose(std, 0.5 * (scale_q**2 + loc_q**2 - 1 - np.log(scale_q**2)), rtol=1e-12)
    loc, scale = lk.normal_parse_params(tf.constant([[0.3, -50.0]]), 1e-3)
    assert float(loc[0, 0]) == pytest.approx(0.3) and float(scale[0, 0]) == pytest.approx(1e-3)


def test_selective_softmax_hard_and_straight_through():
    rng = np.random.default_rng(4)
    out = tf.constant(rng.normal(size=(8, 7)).astype(np.float32) * 3)
    hard = lk.selective_softmax(out, VEC, "hard").numpy()
    for s in lk.block_slices(VEC):
        block = hard[:, s]
        if block.shape[1] > 1:  # every categorical block decodes to a valid category: exactly one 1, rest 0
            assert set(np.unique(block)) <= {0.0, 1.0}
            np.testing.assert_array_equal(block.sum(1), 1.0)
            np.testing.assert_array_equal(block.argmax(1), out.numpy()[:, s].argmax(1))
        else:
            np.testing.assert_array_equal(block, out.numpy()[:, s])
    with tf.GradientTape() as tape:
        tape.watch(out)
        st = lk.selective_softmax(out, VEC, "straight_through")
    np.testing.assert_array_equal(st.numpy(), hard)  # forward value is exactly the one-hot
    jac = tape.batch_jacobian(st, out).numpy()  # [B, 7, 7]
    p = special.softmax(out.numpy()[:, 1:4], axis=1)
    np.testing.assert_allclose(jac[:, 1:4, 1:4], np.einsum("bi,ij->bij", p, np.eye(3)) - np.einsum("bi,bj->bij", p, p),
                               atol=1e-6)
    np.testing.assert_allclose(jac[:, 0, 0], 1.0)
    assert np.abs(jac[:, 0, 1:]).max() == 0 and np.abs(jac[:, 1:4, 5:]).max() == 0
    probs = lk.selective_softmax(out, VEC, "probs").numpy()
    np.testing.assert_allclose(probs[:, 5:7].sum(1), 1.0, rtol=1e-6)


def test_selective_softmax_sample_follows_the_softmax():
    logits = np.array([[0.0, 1.0, 2.0, 0.0, 0.5, -0.5, 0.0]], np.float32)
    out = tf.constant(np.repeat(logits, 20000, axis=0))
    samples = lk.selective_softmax(out, VEC, "sample", seed=tf.constant([1, 2])).numpy()
    block = samples[:, 1:4]
    np.testing.assert_array_equal(block.sum(1), 1.0)
    np.testing.assert_allclose(block.mean(0), special.softmax(logits[0, 1:4]), atol=0.015)
    assert abs(samples[:, 0].std() - 1.0) < 0.03 and abs(samples[:, 0].mean()) < 0.03  # N(0, 1) noise
    with pytest.raises(ValueError):
        lk.selective_softmax(out, VEC, "sample")
