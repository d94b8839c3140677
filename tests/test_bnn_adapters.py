"""BNN.adapters: deep ensembles, MC dropout and distribution heads behind the BNN's ``predict_samples`` contract."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from toy_models import IdentityGenerator

from BNN.adapters import DeepEnsemble, DistributionHead, MCDropout, make_member, train_ensemble
from CLUE.explainer import CLUE, CLUEConfig, CLUEWeights
from common.errors import UserError
from common.predictive import uncertainties

tfd = tfp.distributions
RNG = np.random.default_rng(0)
X = RNG.normal(size=(7, 3)).astype(np.float32)


def _linear(kernel: np.ndarray, bias: np.ndarray, activation=None) -> keras.Model:
    model = keras.Sequential([keras.Input((kernel.shape[0],)), keras.layers.Dense(kernel.shape[1],
                                                                                   activation=activation)])
    model.layers[0].set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return model


def _entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(p + 1e-10)).sum(-1)


def _softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_two_member_classification_ensemble_matches_hand_entropies():
    params = [(RNG.normal(size=(3, 4)), RNG.normal(size=4)) for _ in range(2)]
    probs = np.stack([_softmax(X.astype(np.float64) @ w + b) for w, b in params])  # [2, B, 4]
    total = _entropy(probs.mean(0))
    aleatoric = _entropy(probs).mean(0)
    for ensemble in (DeepEnsemble([_linear(w, b) for w, b in params], "categorical"),  # logit members
                     DeepEnsemble([_linear(w, b, "softmax") for w, b in params], "categorical", output="probs")):
        assert ensemble.n_samples == 2 and ensemble.arch.input_dim == 3
        u_tot, u_ale, u_epi, mean = (t.numpy() for t in uncertainties(ensemble, tf.constant(X)))
        np.testing.assert_allclose(u_tot, total, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(u_ale, aleatoric, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(u_epi, total - aleatoric, atol=2e-6)
        np.testing.assert_allclose(mean, probs.mean(0), atol=1e-6)
        assert (u_epi > 1e-4).all()  # two different members disagree


def test_two_member_regression_ensemble_matches_hand_variances():
    params = [(RNG.normal(size=(3, 2)), RNG.normal(size=2)) for _ in range(2)]
    raw = np.stack([X.astype(np.float64) @ w + b for w, b in params])  # [2, B, 2]: mean, log std
    mu, sigma = raw[..., 0], np.exp(raw[..., 1])
    var_ale = (sigma ** 2).mean(0)
    var_epi = ((mu - mu.mean(0)) ** 2).mean(0)  # two members: ((mu_1 - mu_2) / 2)^2
    np.testing.assert_allclose(var_epi, ((mu[0] - mu[1]) / 2) ** 2)
    ensemble = DeepEnsemble([_linear(w, b) for w, b in params], "gaussian")
    u_tot, u_ale, u_epi, mean = (t.numpy() for t in uncertainties(ensemble, X))
    np.testing.assert_allclose(u_ale, np.sqrt(var_ale), rtol=1e-5)
    np.testing.assert_allclose(u_epi, np.sqrt(var_epi), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(u_tot, np.sqrt(var_ale + var_epi), rtol=1e-5)
    np.testing.assert_allclose(mean, mu.mean(0), rtol=1e-5, atol=1e-6)


def test_mc_dropout_rate_zero_has_no_epistemic_uncertainty_and_masks_are_seeded():
    for likelihood, out_dim in (("categorical", 4), ("gaussian", 2)):
        model = make_member(3, out_dim, hidden=(16, 16), dropout=0.3, seed=1)
        off = MCDropout(model, n_samples=8, rate=0.0, likelihood=likelihood)
        _, _, epistemic, _ = uncertainties(off, X)
        np.testing.assert_allclose(epistemic.numpy(), 0.0, atol=1e-6)
        on = MCDropout(model, n_samples=8, seed=3, likelihood=likelihood)
        _, _, epistemic, _ = uncertainties(on, X)
        assert (epistemic.numpy() > 1e-4).all()
    probs = MCDropout(make_member(3, 4, (16, 16), 0.3, seed=1), n_samples=8, seed=3).predict_samples(X).numpy()
    again = MCDropout(make_member(3, 4, (16, 16), 0.3, seed=1), n_samples=8, seed=3).predict_samples(X).numpy()
    other = MCDropout(make_member(3, 4, (16, 16), 0.3, seed=1), n_samples=8, seed=4).predict_samples(X).numpy()
    np.testing.assert_array_equal(probs, again)
    assert np.abs(probs - other).max() > 1e-3
    # a sample's mask is shared by all rows: a row's prediction does not depend on the rest of its batch
    np.testing.assert_allclose(MCDropout(make_member(3, 4, (16, 16), 0.3, seed=1), 8, seed=3).predict_samples(
        X[2:4]).numpy(), probs[:, 2:4], atol=1e-6)
    with pytest.raises(UserError, match="no keras.layers.Dropout"):
        MCDropout(make_member(3, 4, (16,), 0.0))


def test_distribution_heads_equal_the_ensemble_of_the_same_heads():
    logits = [_linear(RNG.normal(size=(3, 4)), RNG.normal(size=4)) for _ in range(3)]
    inputs = keras.Input((3,))
    stacked = keras.layers.Lambda(lambda ts: tf.stack(ts, axis=1))([m(inputs) for m in logits])  # [B, 3, C]
    head_model = keras.Model(inputs, stacked)
    heads = DistributionHead(lambda x, training=False: tfd.Categorical(logits=head_model(x)), mode="heads",
                             input_dim=3)
    mixture = DistributionHead(lambda x, training=False: tfd.MixtureSameFamily(
        tfd.Categorical(logits=tf.zeros([tf.shape(x)[0], 3])), tfd.Categorical(logits=head_model(x))), input_dim=3)
    expected = DeepEnsemble(logits).predict_samples(X).numpy()
    np.testing.assert_allclose(heads.predict_samples(X).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(mixture.predict_samples(X).numpy(), expected, atol=1e-6)
    assert heads.n_samples == 3


def test_distribution_over_logits_is_reparameterised_and_zero_scale_is_certain():
    mean_model = _linear(RNG.normal(size=(3, 4)), RNG.normal(size=4))

    def head(scale):
        return DistributionHead(lambda x, training=False: tfd.Independent(
            tfd.Normal(mean_model(x), scale * tf.ones([tf.shape(x)[0], 4])), 1), mode="parameters", n_samples=16,
            seed=2, input_dim=3)

    _, _, epistemic, mean = uncertainties(head(0.0), X)
    np.testing.assert_allclose(epistemic.numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(mean.numpy(), _softmax(mean_model(X).numpy()), atol=1e-6)
    _, _, epistemic, _ = uncertainties(head(2.0), X)
    assert (epistemic.numpy() > 1e-3).all()
    x = tf.constant(X)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(uncertainties(head(2.0), x)[0])
    assert np.isfinite(tape.gradient(total, x).numpy()).all()


def test_clue_runs_on_an_ensemble_and_checks_its_input_width():
    ensemble = train_ensemble(X, np.array([0, 1, 2, 0, 1, 2, 0]), "classification", n_members=2, hidden=(8,),
                              epochs=2, seed=0)
    assert ensemble.n_samples == 2 and ensemble.arch.input_dim == 3
    w0 = ensemble.members[0].layers[0].get_weights()[0]
    assert np.abs(w0 - ensemble.members[1].layers[0].get_weights()[0]).max() > 1e-3  # different seeds
    clue = CLUE(ensemble, IdentityGenerator(), CLUEConfig(CLUEWeights(distance=0.05), lr=0.1, max_steps=15))
    result = clue.explain(X)
    assert np.isfinite(result.x).all() and result.uncertainty_after.mean() < result.uncertainty_before.mean()
    with pytest.raises(UserError, match="columns"):
        clue.explain(np.zeros((2, 5), np.float32))
    regression = train_ensemble(X, X[:, 0], "regression", n_members=2, hidden=(8,), epochs=2, seed=0)
    mu, sigma = regression.predict_samples(X)
    assert mu.shape == sigma.shape == (2, 7) and (sigma.numpy() > 0).all()
