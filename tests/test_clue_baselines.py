"""U-FIDO and the sensitivity baselines (spec 6.1, 6.2)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from toy_models import MeanInfill, ToyCategoricalBNN, ToyGaussianBNN

from CLUE.baselines import UFIDOConfig, global_sensitivity, localized_sensitivity, u_fido
from common.predictive import uncertainties


@pytest.fixture()
def points():
    return np.random.default_rng(0).normal(size=(24, 6)).astype(np.float32) * 1.5


@pytest.mark.parametrize("bnn_cls", [ToyCategoricalBNN, ToyGaussianBNN])
def test_ufido_masks_are_probabilities_and_the_loss_falls(points, bnn_cls):
    bnn = bnn_cls(6)
    result = u_fido(bnn, MeanInfill(np.zeros(6)), points, UFIDOConfig(l1_weight=0.1, n_iterations=12), seed=0)
    assert result.mask_probs.shape == points.shape
    assert np.all((result.mask_probs >= 0) & (result.mask_probs <= 1))
    assert set(np.unique(result.mask)) <= {0.0, 1.0}
    np.testing.assert_array_equal(result.mask, (result.mask_probs > 0.5).astype(np.float32))
    assert result.loss[-3:].mean() < result.loss[:3].mean()
    # The explanation keeps unmasked features and in-fills the masked ones.
    np.testing.assert_array_equal(result.x[result.mask == 0], points[result.mask == 0])
    assert np.all(result.x[result.mask == 1] == 0.0)


def test_ufido_l1_weight_controls_the_mask_size(points):
    bnn = ToyCategoricalBNN(6)
    sizes = [u_fido(bnn, MeanInfill(np.zeros(6)), points, UFIDOConfig(l1_weight=w, n_iterations=15)).mask.mean()
             for w in (1e-3, 100.0)]
    assert sizes[1] < sizes[0]
    assert sizes[1] == 0.0  # a huge penalty masks nothing


def test_ufido_reuses_its_traced_step_and_resets_it_between_calls(points):
    """A sweep calls u_fido once per L1 weight: the traced step is kept, and every call starts afresh."""
    from CLUE import baselines

    bnn, infill = ToyGaussianBNN(6), MeanInfill(np.zeros(6))
    configs = [UFIDOConfig(l1_weight=w, epistemic=0.5, n_iterations=6) for w in (1e-3, 0.3)]
    first = u_fido(bnn, infill, points, configs[0], seed=3)
    step = baselines._mask_step(bnn, infill, *points.shape, configs[0])
    u_fido(bnn, infill, points, configs[1], seed=4)  # another L1 weight and seed, same trace
    again = u_fido(bnn, infill, points, configs[0], seed=3)
    assert baselines._mask_step(bnn, infill, *points.shape, configs[1]) is step
    assert step.loss_and_grad.experimental_get_tracing_count() == 1
    np.testing.assert_array_equal(again.mask_probs, first.mask_probs)
    np.testing.assert_array_equal(again.loss, first.loss)
    other_seed = u_fido(bnn, infill, points, configs[0], seed=5)
    assert not np.array_equal(other_seed.loss, first.loss)


def test_ufido_lowers_uncertainty_when_infill_is_certain(points):
    """If in-filling with a point the BNN is sure about is cheap, U-FIDO learns to mask."""
    bnn = ToyCategoricalBNN(6)
    certain = np.full(6, 3.0, np.float32)
    result = u_fido(bnn, MeanInfill(certain), points, UFIDOConfig(l1_weight=1e-3, n_iterations=20))
    before = uncertainties(bnn, points)[0].numpy()
    after = uncertainties(bnn, result.x)[0].numpy()
    assert after.mean() < before.mean()


def test_global_sensitivity_is_the_mean_absolute_gradient(points):
    bnn = ToyGaussianBNN(6)
    x = tf.constant(points)
    with tf.GradientTape() as tape:
        tape.watch(x)
        _, ale, epi, _ = uncertainties(bnn, x)
        obj = 2.0 * tf.reduce_sum(ale) + 0.5 * tf.reduce_sum(epi)
    expected = np.abs(tape.gradient(obj, x).numpy()).mean(axis=0)
    np.testing.assert_allclose(global_sensitivity(bnn, points, 2.0, 0.5, batch_size=5), expected, rtol=1e-5)


@pytest.mark.parametrize("normalize", [False, True])
def test_localized_sensitivity_descends(points, normalize):
    bnn = ToyCategoricalBNN(6)
    stepped = localized_sensitivity(bnn, points, step=-0.05, normalize_grad=normalize, batch_size=7)
    ale0, epi0 = (u.numpy() for u in uncertainties(bnn, points)[1:3])
    ale1, epi1 = (u.numpy() for u in uncertainties(bnn, stepped)[1:3])
    assert np.mean(ale1 + epi1 < ale0 + epi0) > 0.9
    assert np.all(localized_sensitivity(bnn, points, step=0.0) == points)
