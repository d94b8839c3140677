"""VAEAC: prior network sees only observed values, inpainting semantics, regulariser, under-VAEAC, joint helper."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from VAEAC.export import load_model, save_model
from VAEAC.model import VAEAC, join_targets
from VAEAC.under import UnderVAEAC

VEC = [1, 3, 1, 2]


def _model(seed=0, **kw):
    tf.keras.utils.set_random_seed(seed)
    return VAEAC(VEC, latent_dim=3, width=16, depth=2, **kw)


def _data(n=6, seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(size=(n, 1)), np.eye(3)[rng.integers(0, 3, n)], rng.normal(size=(n, 1)),
                        np.eye(2)[rng.integers(0, 2, n)]], axis=1).astype(np.float32)
    mask = (rng.uniform(size=x.shape) < 0.5).astype(np.float32)
    return x, mask


def test_inpainting_keeps_observed_and_ignores_missing_values():
    model = _model()
    x, mask = _data()
    seed = tf.constant([7, 8])
    out = model.inpaint(x, mask, n_samples=5, keep_observed=True, seed=seed).numpy()
    assert out.shape == (5, 6, 7)
    np.testing.assert_array_equal(out[:, mask == 0], np.broadcast_to(x[mask == 0], (5, int((mask == 0).sum()))))
    assert np.std(out[:, :, 0][:, mask[:, 0] == 1], axis=0).min() > 0  # missing continuous entries vary by sample
    # the prior sees only observed entries: changing (or NaN-ing) the missing ones changes nothing
    x_other = np.where(mask == 1, np.nan, x).astype(np.float32)
    np.testing.assert_array_equal(model.inpaint(x_other, mask, 5, keep_observed=True, seed=seed).numpy(), out)
    raw = model.inpaint(x, mask, 5, seed=seed).numpy()  # original semantics: model output everywhere
    hard = raw[..., 1:4]
    np.testing.assert_array_equal(hard.sum(-1), 1.0)
    assert model.inpaint(x, mask, 3, z_mean=True, mode="probs").numpy().std(0).max() < 1e-6  # z = prior mean


def test_elbo_terms_and_regulariser():
    model = _model(1)
    x, mask = _data(seed=1)
    terms = {k: v.numpy() for k, v in model.elbo_terms(x, mask).items()}
    np.testing.assert_allclose(terms["elbo"], terms["rec"] - terms["kl"] + terms["reg"], rtol=1e-6)
    assert np.all(terms["kl"] >= 0)
    loc, scale = np.array([[1.0, -2.0]]), np.array([[0.5, 2.0]])
    reg = VAEAC.prior_regulariser(tf.constant(loc), tf.constant(scale)).numpy()
    np.testing.assert_allclose(reg, -(1 + 4) / (2 * 1e8) + 1e-4 * (np.log(0.5) - 0.5 + np.log(2.0) - 2.0))
    # a fully observed row: prior and posterior see the same information; the KL is finite and differentiable
    with tf.GradientTape() as tape:
        loss, _ = model.training_loss(x, np.zeros_like(mask), tf.random.normal((6, 3)))
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in grads)
    assert len(model.trainable_variables) == len(grads)


def test_gaussian_pred_sig_and_bernoulli_variants():
    g = VAEAC([1] * 4, latent_dim=2, likelihood="gauss", width=8, depth=2, pred_sig=True)
    x = tf.random.normal((5, 4))
    assert g.decode(tf.zeros((5, 2))).shape == (5, 8)
    assert g.inpaint(x, tf.ones((5, 4)), 2, mode="raw").shape == (2, 5, 8)
    assert g.inpaint(x, tf.ones((5, 4)), 2).shape == (2, 5, 4)
    b = VAEAC([1] * 10, latent_dim=2, likelihood="bernoulli", width=8, depth=2)
    probs = b.inpaint(tf.random.uniform((3, 10)), tf.ones((3, 10)), 2).numpy()
    assert probs.min() > 0 and probs.max() < 1


def test_under_vaeac_trains_only_itself_and_regenerates(tmp_path):
    base = _model(2)
    under = UnderVAEAC(base, width=8, depth=2)
    x, mask = _data(8, seed=2)
    base_weights = [w.numpy().copy() for w in base.weights]
    opt = tf.keras.optimizers.SGD(0.1)
    for _ in range(3):
        with tf.GradientTape() as tape:
            loss, _ = under.training_loss(x, tf.random.normal((8, 3)), tf.random.normal((8, 3)))
        opt.apply_gradients(zip(tape.gradient(loss, under.trainable_variables), under.trainable_variables))
    for before, after in zip(base_weights, base.weights, strict=True):
        np.testing.assert_array_equal(before, after.numpy())  # the base VAEAC is frozen
    assert under.sample(4, tf.constant([1, 2])).shape == (4, 7)
    loc, scale = under.u_mask_recognition(x, mask)
    assert loc.shape == (8, 3) and float(tf.reduce_min(scale)) >= 1e-3
    np.testing.assert_allclose(under.u_regenerate(loc).numpy(), base.decode(under.decoder(loc)).numpy(), rtol=1e-6)
    save_model(under, tmp_path / "under", {"epoch": 2})
    meta = json.loads((tmp_path / "under" / "model.json").read_text())
    assert (meta["kind"], meta["config"], meta["epoch"]) == ("under_vaeac", under.get_config(), 2)
    loaded = load_model(tmp_path / "under")
    np.testing.assert_array_equal(loaded.u_regenerate(loc).numpy(), under.u_regenerate(loc).numpy())
    save_model(base, tmp_path / "base", {"dataset": "toy"})
    assert json.loads((tmp_path / "base" / "model.json").read_text())["kind"] == "vaeac"
    assert isinstance(load_model(tmp_path / "base"), VAEAC)
    with pytest.raises(TypeError, match="VAEAC or an UnderVAEAC"):
        save_model(tf.keras.Sequential(), tmp_path / "other")


def test_join_targets():
    x = np.zeros((3, 4), np.float32)
    xy, vec = join_targets(x, np.array([[0.5], [1.0], [-1.0]]), [1, 1, 2], "regression")
    assert vec == [1, 1, 2, 1] and xy.shape == (3, 5) and xy[2, 4] == -1.0
    xy, vec = join_targets(x, np.array([1.0, 0.0, 1.0], np.float32), [1, 1, 2], "classification", n_classes=2)
    assert vec == [1, 1, 2, 2]
    np.testing.assert_array_equal(xy[:, 4:], [[0, 1], [1, 0], [0, 1]])
    with pytest.raises(ValueError):
        join_targets(x, np.zeros(3), [1, 1, 2], "classification")
