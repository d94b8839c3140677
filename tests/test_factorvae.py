"""FactorVAE / AD-FactorVAE: the TC machinery, the attention disentanglement loss and its gradient order, and a
tiny training run that resumes exactly."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from common.config import with_preset
from VAE import factorvae as fv
from VAE import train_factorvae as train


def test_permute_dims_shuffles_each_dimension_independently():
    batch, latent = 256, 4
    z = tf.constant(np.arange(batch)[:, None] + 1000.0 * np.arange(latent)[None, :], tf.float32)
    keys = tf.random.stateless_uniform([batch, latent], seed=[1, 2])
    out = fv.permute_dims(z, keys).numpy()
    for j in range(latent):  # every column is a permutation of itself ...
        np.testing.assert_array_equal(np.sort(out[:, j]), z.numpy()[:, j])
    ranks = out - 1000.0 * np.arange(latent)  # ... by its own permutation
    assert all(not np.array_equal(ranks[:, i], ranks[:, j]) for i in range(latent) for j in range(i))
    assert np.mean(ranks[:, 0] == np.arange(batch)) < 0.05  # rows are broken up
    np.testing.assert_array_equal(out, fv.permute_dims(z, keys).numpy())  # a function of the keys


def test_discriminator_loss_decreases_on_a_separable_case():
    """Joint codes with z_1 = z_0 against their per-dimension permutation: the discriminator learns to tell them."""
    disc = fv.discriminator(2, width=64, depth=3)
    opt = keras.optimizers.Adam(1e-3, 0.5, 0.9)
    rng = tf.random.Generator.from_seed(0)

    @tf.function
    def step():
        z0 = rng.normal([256, 1])
        joint = tf.concat([z0, z0], axis=1)
        permuted = fv.permute_dims(tf.concat([z0, z0], axis=1), rng.uniform([256, 2]))
        with tf.GradientTape() as tape:
            lj, lp = disc(joint), disc(permuted)
            loss = fv.discriminator_loss(lj, lp)
        opt.apply_gradients(zip(tape.gradient(loss, disc.trainable_variables), disc.trainable_variables))
        return loss, fv.discriminator_accuracy(lj, lp), fv.tc_estimate(lj)

    history = [step() for _ in range(300)]
    first, last = float(history[0][0]), float(np.mean([h[0] for h in history[-20:]]))
    assert first == pytest.approx(np.log(2), abs=0.02)  # N(0, 0.02) weights: chance
    assert last < 0.45, (first, last)
    assert float(np.mean([h[1] for h in history[-20:]])) > 0.75
    assert float(history[-1][2]) > 0.5  # a dependent code has a positive TC estimate


def test_tc_estimate_and_discriminator_loss_by_hand():
    logits = tf.constant([[2.0, 0.0], [1.0, 1.0]])
    assert float(fv.tc_estimate(logits)) == pytest.approx(1.0)  # mean(2 - 0, 1 - 1)
    ce0 = np.mean([np.log1p(np.exp(-2.0)), np.log(2.0)])  # class 0 for the joint codes
    ce1 = np.mean([np.log1p(np.exp(2.0)), np.log(2.0)])  # class 1 for the same logits as "permuted"
    assert float(fv.discriminator_loss(logits, logits)) == pytest.approx(0.5 * (ce0 + ce1), rel=1e-6)


def test_attention_loss_zero_for_disjoint_positive_for_overlapping_maps():
    m = lambda rows: tf.constant(rows, tf.float32)[:, None, :]  # [B, 1, W] maps
    loss = lambda a, b, **kw: float(fv.attention_disentanglement_loss(m(a), m(b), **kw))
    assert loss([[1, 1, 0, 0]], [[0, 0, 1, 1]]) == 0.0  # disjoint
    assert loss([[1, 1, 0, 0]], [[0, 1, 1, 0]]) == pytest.approx(0.5)  # 2 * 1 / (2 + 2)
    assert loss([[3, 0, 1, 0]], [[1, 0, 2, 5]]) == pytest.approx(2 * (1 + 1) / (4 + 8))
    assert loss([[1, 2, 3, 0]], [[1, 2, 3, 0]]) == pytest.approx(1.0)  # identical
    assert loss([[0, 0, 0, 0]], [[0, 0, 0, 0]]) == 0.0  # no attention at all: no overlap, no NaN
    two = ([[1, 1, 0, 0], [2, 0, 0, 0]], [[0, 1, 1, 0], [2, 0, 0, 2]])
    assert loss(*two) == pytest.approx((0.5 + 2 * 2 / 6) / 2)  # per-image ratios, averaged
    assert loss(*two, reduction="pooled") == pytest.approx(2 * 3 / 10 / 2)  # Brongers: pooled ratio / B
    with pytest.raises(ValueError, match="reduction"):
        loss(*two, reduction="sum")


@pytest.fixture(scope="module")
def small_model():
    keras.utils.set_random_seed(0)
    model = fv.FactorVAE(latent_dim=4)
    x = tf.constant(fv_images(3))
    return model, x


def fv_images(n):
    from data.dsprites import render

    return render(np.arange(n) * 997 + 12345).astype(np.float32)[..., None]


@pytest.mark.parametrize("layer", [1, 4])
def test_attention_maps_are_per_dimension_gradcam(small_model, layer):
    model, x = small_model
    dims = tf.constant([2, 0])
    maps, mu, _ = fv.attention_maps(model, x, dims, layer=layer, upsample=False)
    a = model.features(x, layer)
    np.testing.assert_allclose(mu.numpy(), model.encode(x)[0].numpy(), rtol=1e-5, atol=1e-6)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(a)
        mu_a = model.encode_from(a, layer)[0]
        columns = [mu_a[:, i:i + 1] for i in (2, 0)]
    for n, column in enumerate(columns):
        jac = tape.batch_jacobian(column, a)[:, 0]  # [B, h, w, K], image by image
        alpha = jac.numpy().mean(axis=(1, 2))  # [B, K]
        expected = np.maximum(np.einsum("bhwk,bk->bhw", a.numpy(), alpha), 0)
        assert expected.max() > 0
        np.testing.assert_allclose(maps[:, n].numpy(), expected, rtol=1e-4, atol=1e-4 * expected.max())
    up, _, _ = fv.attention_maps(model, x, dims, layer=layer)
    assert up.shape == (3, 2, 64, 64) and float(tf.reduce_min(up)) >= 0


def test_brongers_maps_rectify_each_channel_of_the_rectified_activations_for_the_sampled_z(small_model):
    """``form="brongers"``: sum_k ReLU(alpha_k ReLU(A)_k), alpha from d z_i / dA with z = mu + eps sigma, upsampled
    with aligned corners (corner pixels equal the coarse map's corners)."""
    model, x = small_model
    dims = tf.constant([1, 3])
    eps = tf.constant(np.random.RandomState(4).normal(size=(len(x), model.latent_dim)).astype(np.float32))
    maps, _, _ = fv.attention_maps(model, x, dims, layer=1, upsample=False, form="brongers", eps=eps)
    a = model.features(x, 1)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(a)
        mu_a, logvar_a = model.encode_from(a, 1)
        z = mu_a + eps * tf.exp(0.5 * logvar_a)
        columns = [z[:, i:i + 1] for i in (1, 3)]
    for n, column in enumerate(columns):
        alpha = tape.batch_jacobian(column, a)[:, 0].numpy().mean(axis=(1, 2))  # [B, K]
        expected = np.maximum(np.maximum(a.numpy(), 0) * alpha[:, None, None, :], 0).sum(-1)
        assert expected.max() > 0
        np.testing.assert_allclose(maps[:, n].numpy(), expected, rtol=1e-4, atol=1e-4 * expected.max())
    gradcam, _, _ = fv.attention_maps(model, x, dims, layer=1, upsample=False)
    assert not np.allclose(gradcam.numpy(), maps.numpy())
    up, _, _ = fv.attention_maps(model, x, dims, layer=1, form="brongers", eps=eps)
    np.testing.assert_allclose(up[:, :, 0, 0].numpy(), maps[:, :, 0, 0].numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(up[:, :, -1, -1].numpy(), maps[:, :, -1, -1].numpy(), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="map form"):
        fv.attention_maps(model, x, dims, form="other")


def test_second_order_gradient_reaches_the_layers_after_the_target(small_model):
    """First order (alpha held constant) moves only the layers up to the target; second order moves all of them."""
    model, x = small_model
    grads = {}
    for second_order in (True, False):
        with tf.GradientTape() as tape:
            maps, _, _ = fv.attention_maps(model, x, tf.constant([1, 3]), layer=1, second_order=second_order)
            loss = fv.attention_disentanglement_loss(maps[:, 0], maps[:, 1])
        grads[second_order] = {v.path: g for v, g in zip(model.trainable_variables,
                                                         tape.gradient(loss, model.trainable_variables))}
        assert 0 < float(loss) < 1
    norm = lambda g: 0.0 if g is None else float(tf.norm(g))
    after_target = [p for p in grads[True] if p.split("/")[-2] in ("conv2", "conv3", "conv4", "fc", "stats")]
    assert len(after_target) == 10 and all(norm(grads[False][p]) == 0.0 for p in after_target)
    # alpha depends on the kernels after the target (biases only move ReLU masks, whose derivative is 0)
    assert all(norm(grads[True][p]) > 0.0 for p in after_target if p.endswith("kernel"))
    conv1 = [p for p in grads[True] if "conv1/kernel" in p]
    assert norm(grads[False][conv1[0]]) > 0 and norm(grads[True][conv1[0]]) > 0


def test_help_and_presets(capsys):
    import common.cli

    with pytest.raises(SystemExit) as exit_info:
        common.cli.run_script(train.main, train.Config, train.PRESETS, prog="python -m VAE.train_factorvae",
                              preset_help=train.PRESET_HELP, argv=["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "usage: python -m VAE.train_factorvae" in text and "--ad-second-order" in text and "tiny" in text
    paper = with_preset(train.Config, train.PRESETS, "paper")
    assert (paper.batch_size, paper.latent_dim, paper.gamma, paper.ad_weight) == (64, 10, 40.0, 40.0)
    assert (paper.lr, paper.beta1, paper.beta2, paper.disc_lr, paper.disc_beta1, paper.disc_beta2) == \
        (1e-4, 0.9, 0.999, 1e-4, 0.5, 0.9)
    assert (paper.disc_width, paper.disc_depth, paper.max_iters) == (1000, 6, 300000)
    assert (paper.ad_second_order, paper.ad_reduction, paper.ad_layer) == (False, "pooled", 1)  # Brongers' L_AD
    assert paper.ad_map == "gradcam" and "--ad-map" in text
    brongers = with_preset(train.Config, train.PRESETS, "brongers")
    assert (brongers.latent_dim, brongers.encoder_fc_relu, brongers.ad_map, brongers.ad_weight) == (32, False,
                                                                                                  "brongers", 40.0)
    from common.errors import UserError

    with pytest.raises(UserError, match="multiple of --log-every"):
        train.Config(checkpoint_every=150)
    with pytest.raises(UserError, match="--ad-map"):
        train.Config(ad_map="other")


def test_tiny_run_with_brongers_maps(tmp_path):
    metrics = train.main(with_preset(train.Config, train.PRESETS, "tiny", model="ad_factorvae", ad_map="brongers",
                                     out=str(tmp_path / "run")))
    assert metrics["iterations"] == 4 and 0 < metrics["train/ad"] < 1


def _tiny(out, **overrides):
    return with_preset(train.Config, train.PRESETS, "tiny", model="ad_factorvae", ad_second_order=True,
                       ad_reduction="mean", out=str(out), deterministic=True, **overrides)


def test_tiny_ad_factorvae_run_resumes_exactly(tmp_path):
    straight = train.main(_tiny(tmp_path / "straight"))
    first = train.main(_tiny(tmp_path / "resumed", max_iters=2))
    assert first["iterations"] == 2
    resumed = train.main(_tiny(tmp_path / "resumed"))
    assert resumed["iterations"] == straight["iterations"] == 4
    for key in ("train/recon", "train/kl", "train/tc", "train/ad", "train/disc_loss", "eval/factor_score"):
        assert resumed[key] == straight[key], key
    assert 0 < straight["train/ad"] < 1 and 0 <= straight["eval/factor_score"] <= 1
    rows = (tmp_path / "resumed" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    assert rows[1:] != [] and json.loads((tmp_path / "resumed" / "config.json").read_text())["max_iters"] == 4
    saved = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    assert saved["train/recon"] == straight["train/recon"] and saved["data/source"] == "render"
    a, b = fv.load_factorvae(tmp_path / "straight" / "model"), fv.load_factorvae(tmp_path / "resumed" / "model")
    for va, vb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())


def _pair(gamma_disc_seed=0):
    keras.utils.set_random_seed(gamma_disc_seed)
    return fv.FactorVAE(latent_dim=4), fv.discriminator(4, width=16, depth=3)


def test_train_step_vae_update_is_its_own_loss_gradient_and_the_discriminator_only_trains_itself():
    """One step's VAE update equals SGD on recon + KL + gamma * TC computed by hand with the same noise (so the
    discriminator's loss does not reach the VAE), and the discriminator's own update leaves the VAE's weights alone."""
    x1, x2 = tf.constant(fv_images(4)), tf.constant(fv_images(8)[4:])
    (model, disc), (ref_model, ref_disc) = _pair(), _pair()
    generator = tf.random.Generator.from_seed(3)
    replay = tf.random.Generator.from_seed(3)
    step = fv.make_train_step(model, disc, keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.0), generator, gamma=40.0)
    step(x1, x2)
    eps1 = replay.normal([4, 4])
    with tf.GradientTape() as tape:
        mu, logvar = ref_model.encode(x1)
        z = mu + eps1 * tf.exp(0.5 * logvar)
        loss = (fv.reconstruction_loss(x1, ref_model.decode(z)) + fv.kl_divergence(mu, logvar)
                + 40.0 * fv.tc_estimate(ref_disc(z)))
    grads = tape.gradient(loss, ref_model.trainable_variables)
    for var, ref, grad in zip(model.trainable_variables, ref_model.trainable_variables, grads):
        np.testing.assert_allclose(var.numpy(), (ref - 0.1 * grad).numpy(), rtol=1e-4, atol=1e-6)
    for var, ref in zip(disc.trainable_variables, ref_disc.trainable_variables):
        np.testing.assert_array_equal(var.numpy(), ref.numpy())  # discriminator learning rate 0
    model2, disc2 = _pair()
    before = [v.numpy() for v in model2.trainable_variables]
    fv.make_train_step(model2, disc2, keras.optimizers.SGD(0.0), keras.optimizers.SGD(0.1),
                       tf.random.Generator.from_seed(3), gamma=40.0)(x1, x2)
    for var, old in zip(model2.trainable_variables, before):
        np.testing.assert_array_equal(var.numpy(), old)
    assert any(not np.array_equal(v.numpy(), r.numpy()) for v, r in zip(disc2.trainable_variables,
                                                                      ref_disc.trainable_variables))
