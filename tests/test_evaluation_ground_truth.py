"""CLUE.evaluation.ground_truth: the artificial dataset, the ground-truth conditionals and log p(x) (spec 6.3)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
from evaluation_fakes import fake_real, ground_truth

from CLUE import evaluation as ev
from common import likelihoods as lk


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_artificial_dataset_has_the_declared_layout(task):
    gt, vec = ground_truth(task)
    real = fake_real("fake_real", vec, task, n_train=300, n_test=100)
    ds = ev.make_artificial_dataset(gt, real, seed=3, name=f"art_test_{task}")
    assert ds.x_train.shape == (300, 7) and ds.x_test.shape == (100, 7)
    assert ds.name == f"art_test_{task}"
    x = np.concatenate([ds.x_train, ds.x_test])
    for s in lk.block_slices(vec):
        if s.stop - s.start > 1:  # a sampled one-hot per categorical variable
            assert set(np.unique(x[:, s])) <= {0.0, 1.0}
            np.testing.assert_array_equal(x[:, s].sum(axis=1), 1.0)
            assert len(np.unique(x[:, s].argmax(1))) > 1  # sampled, not always the argmax of one decoder output
    assert len(np.unique(x[:, 3])) == len(x)  # continuous columns carry N(0, 1) noise
    if task == "classification":
        assert ds.y_train.shape == (300,) and set(np.unique(ds.y_train)) <= {0.0, 1.0}
    else:
        assert ds.y_train.shape == (300, 1) and np.isfinite(ds.y_train).all()
    again = ev.make_artificial_dataset(gt, real, seed=3, name=f"art_test_{task}")
    np.testing.assert_array_equal(again.x_train, ds.x_train)  # seeded
    other = ev.make_artificial_dataset(gt, real, seed=4, name=f"art_test_{task}")
    assert not np.array_equal(other.x_train, ds.x_train)


def test_artificial_regression_label_is_the_noise_free_output_and_gaussian_base_is_sampled():
    gt, _ = ground_truth("regression")
    x, y, xy = ev.sample_artificial_xy(gt, 64, seed=0)
    raw_seed = tf.random.experimental.stateless_split(tf.constant([0, 7], tf.int64), 2)[0]
    raw = gt.under.sample(64, raw_seed).numpy()
    np.testing.assert_allclose(y[:, 0], raw[:, 7], rtol=1e-6)  # [nb]: y without noise
    assert np.abs(xy[:, 7] - raw[:, 7]).mean() > 0.3  # ... while the joint sample carries N(0, 1) noise
    gt_w, _ = ground_truth("regression", "gauss")
    x, y, xy = ev.sample_artificial_xy(gt_w, 64, seed=0)
    assert x.shape == (64, 4) and y.shape == (64, 1)
    np.testing.assert_array_equal(y[:, 0], xy[:, 4])  # wine: y is part of the Gaussian sample


def test_summarize_conditional_matches_hand_computation():
    probs = np.array([[[0.9, 0.1], [1.0, 0.0]], [[0.1, 0.9], [1.0, 0.0]]], np.float32)  # [N=2, B=2, C=2]
    h, label = ev.summarize_conditional(probs, "classification")
    np.testing.assert_allclose(h, [math.log(2), 0.0], atol=1e-6)
    np.testing.assert_array_equal(label, [0, 0])
    mu = np.array([[1.0, 0.0], [3.0, 0.0]], np.float32)  # [N=2, B=2]
    sigma = np.array([[1.0, 2.0], [1.0, 2.0]], np.float32)
    h, mean = ev.summarize_conditional((mu, sigma), "regression")
    np.testing.assert_allclose(h, [math.sqrt(1 + 1), 2.0], rtol=1e-6)  # sqrt(mean sigma^2 + var mu)
    np.testing.assert_allclose(mean, [2.0, 0.0])


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_gt_conditional_uses_the_base_prior_net_with_y_masked(task):
    gt, _ = ground_truth(task)
    x = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    samples = ev.gt_conditional_samples(gt, x, n_samples=4, seed=2)
    xy = np.concatenate([x, np.full((5, gt.y_width), 7.0, np.float32)], 1)  # y values must not matter
    mask = np.concatenate([np.zeros((5, 7)), np.ones((5, gt.y_width))], 1).astype(np.float32)
    loc, scale = gt.vaeac.prior(xy, mask)
    z = loc + scale * tf.random.stateless_normal((4, 5, 3), tf.constant([2, 11], tf.int64))
    out = tf.reshape(gt.vaeac.decode(tf.reshape(z, (20, 3))), (4, 5, -1))
    if task == "classification":
        np.testing.assert_allclose(samples, tf.nn.softmax(out[..., 7:9]), rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_allclose(samples[0], out[..., 7], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(samples[1], 1.0)  # gauss_cat regression: sigma = 1 (trap 30)


class _LinearGaussianUnder:
    """u ~ N(0, 1), x = w u + b + s eps in 3 columns (the last plays y): p(x_1, x_2) is Gaussian, known exactly."""

    latent_dim = 1

    def __init__(self, w, b, s):
        self.w, self.b, self.s = (np.asarray(v, np.float32) for v in (w, b, s))
        self.base = SimpleNamespace(likelihood="gauss", pred_sig=True, input_dim_vec=[1, 1, 1], input_dim=3)

    def u_mask_recognition(self, xy, mask):  # a deliberately imperfect Gaussian proposal
        return 0.5 * xy[:, :1], tf.fill([tf.shape(xy)[0], 1], 0.9)

    def u_regenerate(self, u):
        mean = u * self.w[None] + self.b[None]
        raw_s = np.log(np.expm1(self.s))  # softplus^{-1}: normal_parse_params recovers s
        return tf.concat([mean, tf.broadcast_to(raw_s[None], tf.shape(mean))], axis=1)


def test_log_px_matches_analytic_linear_gaussian_and_increases_with_samples():
    under = _LinearGaussianUnder(w=[1.0, -0.7, 0.3], b=[0.2, 0.1, 0.0], s=[0.5, 0.6, 0.4])
    gt = ev.GroundTruth(under, x_dim=2, task="regression")
    x = np.random.default_rng(1).normal(size=(6, 2)).astype(np.float32) * 1.3
    cov = np.outer(under.w[:2], under.w[:2]) + np.diag(under.s[:2] ** 2)
    diff = x - under.b[:2]
    exact = (-0.5 * np.einsum("bi,ij,bj->b", diff, np.linalg.inv(cov), diff)
             - 0.5 * np.log(np.linalg.det(2 * np.pi * cov)))
    estimate = ev.log_px(gt, x, n_samples=20000, seed=0)
    np.testing.assert_allclose(estimate, exact, atol=0.02)
    few = np.mean([ev.log_px(gt, x, n_samples=2, seed=s) for s in range(20)], axis=0)
    assert np.all(few < estimate - 1e-3)  # importance sampling is biased low; more samples close the gap
