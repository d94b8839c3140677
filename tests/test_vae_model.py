"""VAE: shapes, regenerate semantics, ELBO bound, export (parity with the original's trained VAEs: test_parity.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from VAE.model import VAE, load_parity_npz, load_vae, save_vae


def test_parity_loader_rejects_foreign_files(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros(3))
    with pytest.raises(KeyError):
        load_parity_npz(tmp_path / "bad.npz")


def _small_gauss_cat(seed=0):
    tf.keras.utils.set_random_seed(seed)
    return VAE([1, 3, 2], latent_dim=2, likelihood="gauss_cat", width=16, depth=2)


def test_shapes_and_regenerate_semantics():
    model = _small_gauss_cat()
    z = tf.random.normal((5, 2))
    out = model.decode(z)
    assert out.shape == (5, 6)
    with tf.GradientTape() as tape:
        tape.watch(z)
        x = model.regenerate(z)
        target = tf.reduce_sum(x * tf.constant([[1.0, 2.0, -1.0, 0.5, 3.0, -2.0]]))
    assert x.shape == (5, 6)
    np.testing.assert_array_equal(x.numpy()[:, 1:4].sum(1), 1.0)  # one-hot block decodes to one valid category
    np.testing.assert_array_equal(x.numpy()[:, 1:4].argmax(1), out.numpy()[:, 1:4].argmax(1))
    grad = tape.gradient(target, z)
    assert grad is not None and np.abs(grad.numpy()).min() > 0  # differentiable w.r.t. z (CLUE's requirement)
    loc, scale = model.encode(x)
    assert loc.shape == scale.shape == (5, 2) and float(tf.reduce_min(scale)) >= 1e-3
    bern = VAE([1] * 10, latent_dim=3, likelihood="bernoulli", width=8, depth=2)
    probs = bern.regenerate(tf.zeros((4, 3))).numpy()
    assert probs.shape == (4, 10) and probs.min() > 0 and probs.max() < 1
    gauss = VAE([1] * 4, latent_dim=2, likelihood="gauss", width=8, depth=2, pred_sig=True)
    assert gauss.decode(tf.zeros((3, 2))).shape == (3, 8) and gauss.regenerate(tf.zeros((3, 2))).shape == (3, 4)
    with pytest.raises(ValueError):
        VAE([1, 2], latent_dim=2, likelihood="gauss_cat", pred_sig=True)


def test_mnist_conv_vae_shapes():
    model = VAE([1] * 784, latent_dim=5, likelihood="bernoulli", arch="mnist_conv")
    x = tf.random.uniform((2, 784))
    loc, scale = model.encode(x)
    assert loc.shape == (2, 5) and model.decode(loc).shape == (2, 784)
    assert model.regenerate(loc).shape == (2, 784)
    loss, _ = model.training_loss(x, tf.random.normal((2, 5)))
    assert np.isfinite(float(loss))


def test_elbo_is_a_lower_bound_on_importance_sampled_log_likelihood():
    model = _small_gauss_cat(1)
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(6, 1)), np.eye(3)[rng.integers(0, 3, 6)], np.eye(2)[rng.integers(0, 2, 6)]],
                       axis=1).astype(np.float32)
    log_px, elbo_mc = model.importance_log_likelihood(x, n_samples=2000, seed=tf.constant([3, 4]))
    log_px, elbo_mc = log_px.numpy(), elbo_mc.numpy()
    assert np.all(elbo_mc < log_px - 1e-3)  # strict gap for an untrained model
    # the Monte-Carlo ELBO agrees with the analytic-KL ELBO estimated with the same posterior
    loc, scale = model.encode(x)
    eps = tf.random.stateless_normal((2000, 6, 2), seed=[5, 6])
    rec = np.mean([model.elbo_terms(x, eps=eps[i])["rec"].numpy() for i in range(0, 2000, 10)], axis=0)
    analytic = rec - model.elbo_terms(x)["kl"].numpy()
    np.testing.assert_allclose(analytic, elbo_mc, atol=0.15 * np.abs(elbo_mc).max() + 0.1)
    # with a single importance sample the estimate is the ELBO itself
    one, elbo_one = model.importance_log_likelihood(x, n_samples=1, seed=tf.constant([3, 4]))
    np.testing.assert_allclose(one.numpy(), elbo_one.numpy(), rtol=1e-6)


def test_export_round_trip(tmp_path):
    model = _small_gauss_cat(2)
    model.training_loss(tf.random.normal((8, 6)), tf.random.normal((8, 2)))  # touch BN
    save_vae(model, tmp_path / "export", extra={"dataset": "toy", "epoch": 3})
    meta = json.loads((tmp_path / "export" / "model.json").read_text())
    assert meta == {"format": "clue-tf/model/v1", "kind": "vae", "config": model.get_config(), "dataset": "toy",
                    "weights": ["model.weights.h5"], "epoch": 3}
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["model.json", "model.weights.h5"]
    loaded = load_vae(tmp_path / "export")
    x = tf.random.normal((4, 6))
    np.testing.assert_array_equal(loaded.encoder(x).numpy(), model.encoder(x).numpy())
    np.testing.assert_array_equal(loaded.regenerate(tf.ones((3, 2))).numpy(), model.regenerate(tf.ones((3, 2))).numpy())
    assert loaded.dataset == "toy"
    with pytest.raises(FileNotFoundError):
        load_vae(tmp_path / "missing")
    # The layout written before model.json is not read (the committed weights were migrated once).
    (tmp_path / "export" / "model.json").unlink()
    (tmp_path / "export" / "model_config.json").write_text(json.dumps({"model": model.get_config()}))
    with pytest.raises(FileNotFoundError, match="model.json not found"):
        load_vae(tmp_path / "export")
