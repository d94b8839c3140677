"""FactorVAE (Kim & Mnih [1]) and the attention disentanglement loss of AD-FactorVAE (Liu et al. [2]).

Networks: Table 1 of [1] (64x64 binary images); discriminator ``depth - 1`` x Dense(1000) + LeakyReLU(0.2), Dense(2).

Objectives, ``z = mu + eps * exp(logvar / 2)``, discriminator logits ``D``: VAE
``BCE(x, decode(z)) + KL(q(z|x) || N(0, I)) + gamma * TC (+ lambda * L_AD)``, ``TC = mean_b (D(z)_0 - D(z)_1)``;
discriminator ``0.5 * (CE(D(z), 0) + CE(D(perm(z')), 1))``, ``z'`` from a second batch, ``perm`` shuffling each
dimension across the batch.

``L_AD`` (reference-spec-expvae.md P2.2): with ``A`` the pre-ReLU output of conv layer ``layer`` and
``M^i_b = Up(ReLU(sum_k alpha^i_bk A_bk))``, ``alpha^i_bk = mean_{pq} d mu_i(x_b) / dA_bkpq``, for two random dimensions
``i != j``: ``L_AD = 2 * sum_p min(M^i_p, M^j_p) / sum_p (M^i_p + M^j_p)``. ``second_order`` differentiates through
``alpha``; the default stops its gradient (Brongers'). ``attention_maps(form="brongers")``: his form of the maps.

References: [1] Kim & Mnih. Disentangling by Factorising. ICML 2018. [2] Liu et al. Towards Visually Explaining VAEs.
CVPR 2020. [3] Selvaraju et al. Grad-CAM. ICCV 2017."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from common.export import load_keras_model, save_keras_model
from common.layers import torch_uniform

ENCODER_FILTERS = (32, 32, 64, 64)
DECODER_FILTERS = (64, 32, 32, 1)
INIT_STD = 0.02
LEAKY_SLOPE = 0.2
REDUCTIONS = ("mean", "pooled")
MAP_FORMS = ("gradcam", "brongers")  # of the L_AD attention maps (attention_maps)


def _normal() -> keras.initializers.Initializer:
    return keras.initializers.RandomNormal(0.0, INIT_STD)


def _dense(units: int, name: str, activation: str | None = None) -> keras.layers.Dense:
    return keras.layers.Dense(units, activation=activation, kernel_initializer=_normal(), bias_initializer="zeros",
                              name=name)


class FactorVAE(keras.Model):
    """The conv VAE of FactorVAE (module docstring), its encoder split at any conv layer for Grad-CAM."""

    def __init__(self, latent_dim: int = 10, image_size: int = 64, hidden_dim: int = 128,
                 encoder_fc_relu: bool = True, **kwargs):
        super().__init__(**kwargs)
        if image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16 (four stride-2 convs), got {image_size}")
        self.latent_dim, self.image_size, self.hidden_dim = int(latent_dim), int(image_size), int(hidden_dim)
        self.encoder_fc_relu = bool(encoder_fc_relu)
        self.convs = [keras.layers.Conv2D(f, 4, strides=2, padding="same", kernel_initializer=_normal(),
                                          bias_initializer="zeros", name=f"conv{i + 1}")
                      for i, f in enumerate(ENCODER_FILTERS)]
        self.fc = _dense(hidden_dim, "fc")
        self.stats = _dense(2 * latent_dim, "stats")
        side = image_size // 16
        self.dec_fc1 = _dense(hidden_dim, "dec_fc1", "relu")
        self.dec_fc2 = _dense(side * side * DECODER_FILTERS[0], "dec_fc2", "relu")
        self.dec_reshape = keras.layers.Reshape((side, side, DECODER_FILTERS[0]))
        self.deconvs = []
        for i, f in enumerate(DECODER_FILTERS):
            fan_in = f * 16  # torch's ConvTranspose2d fan_in: weight dim 1 (out channels) x k x k
            self.deconvs.append(keras.layers.Conv2DTranspose(
                f, 4, strides=2, padding="same", activation=None if i == len(DECODER_FILTERS) - 1 else "relu",
                kernel_initializer=torch_uniform(fan_in), bias_initializer=torch_uniform(fan_in),
                name=f"deconv{i + 1}"))
        self.decode(tf.zeros([1, latent_dim]))
        self.encode(tf.zeros([1, image_size, image_size, 1]))
        self.built = True

    # ------------------------------------------------------------------------------------------------ networks
    def features(self, x: tf.Tensor, layer: int) -> tf.Tensor:
        """Pre-ReLU output ``A`` of conv layer ``layer`` (1-4) for images ``x`` ``[B, H, W, 1]``: ``[B, h, w, K]``."""
        h = x
        for i, conv in enumerate(self.convs[:layer]):
            h = conv(tf.nn.relu(h) if i else h)
        return h

    def encode_from(self, a: tf.Tensor, layer: int) -> tuple[tf.Tensor, tf.Tensor]:
        """``(mu, logvar)`` ``[B, L]`` each from the pre-ReLU features ``a`` of conv layer ``layer``."""
        h = tf.nn.relu(a)
        for conv in self.convs[layer:]:
            h = tf.nn.relu(conv(h))
        h = self.fc(tf.reshape(h, [tf.shape(h)[0], -1]))
        if self.encoder_fc_relu:
            h = tf.nn.relu(h)
        stats = self.stats(h)
        return stats[:, :self.latent_dim], stats[:, self.latent_dim:]

    def encode(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Images ``[B, H, W, 1]`` in [0, 1] -> ``(mu, logvar)``, each ``[B, L]``."""
        layer = len(self.convs)
        return self.encode_from(self.features(x, layer), layer)

    def decode(self, z: tf.Tensor) -> tf.Tensor:
        """``z`` ``[B, L]`` -> Bernoulli logits ``[B, H, W, 1]``."""
        h = self.dec_reshape(self.dec_fc2(self.dec_fc1(z)))
        for deconv in self.deconvs:
            h = deconv(h)
        return h

    def call(self, x, training=False):
        """Eval-mode reconstruction ``sigmoid(decode(mu(x)))`` ``[B, H, W, 1]``."""
        return tf.sigmoid(self.decode(self.encode(x)[0]))

    def get_config(self) -> dict[str, Any]:
        return {"latent_dim": self.latent_dim, "image_size": self.image_size, "hidden_dim": self.hidden_dim,
                "encoder_fc_relu": self.encoder_fc_relu}


def discriminator(latent_dim: int, width: int = 1000, depth: int = 6, name: str = "discriminator") -> keras.Sequential:
    """TC discriminator of [1]: ``[B, L]`` -> logits ``[B, 2]`` (0: ``q(z)``, 1: ``prod_j q(z_j)``)."""
    layers: list[keras.layers.Layer] = [keras.Input((latent_dim,))]
    for i in range(depth - 1):
        layers += [_dense(width, f"fc{i + 1}"), keras.layers.LeakyReLU(negative_slope=LEAKY_SLOPE)]
    layers.append(_dense(2, "logits"))
    return keras.Sequential(layers, name=name)


# ------------------------------------------------------------------------------------------------- objectives
def permute_dims(z: tf.Tensor, keys: tf.Tensor) -> tf.Tensor:
    """Shuffles each column ``j`` of ``z`` ``[B, L]`` by ``argsort(keys[:, j])`` (a sample of ``prod_j q(z_j)``)."""
    perm = tf.argsort(keys, axis=0)  # [B, L], one permutation per column
    return tf.transpose(tf.gather(tf.transpose(z), tf.transpose(perm), batch_dims=1))


def reconstruction_loss(x: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Bernoulli negative log-likelihood summed over pixels, averaged over the batch."""
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits)
    return tf.reduce_mean(tf.reduce_sum(tf.reshape(bce, [tf.shape(x)[0], -1]), axis=1))


def kl_divergence(mu: tf.Tensor, logvar: tf.Tensor) -> tf.Tensor:
    """``KL(N(mu, exp logvar) || N(0, I))`` summed over latent dimensions, averaged over the batch."""
    return tf.reduce_mean(tf.reduce_sum(-0.5 * (1.0 + logvar - tf.square(mu) - tf.exp(logvar)), axis=1))


def tc_estimate(logits: tf.Tensor) -> tf.Tensor:
    """Density-ratio estimate of the total correlation, ``mean_b (D(z)_0 - D(z)_1)`` ([1], Eq. 3)."""
    return tf.reduce_mean(logits[:, 0] - logits[:, 1])


def discriminator_loss(logits_joint: tf.Tensor, logits_permuted: tf.Tensor) -> tf.Tensor:
    """``0.5 * (CE(D(z), 0) + CE(D(perm(z')), 1))``, each cross-entropy averaged over its batch."""
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits
    zeros = tf.zeros(tf.shape(logits_joint)[:1], tf.int32)
    ones = tf.ones(tf.shape(logits_permuted)[:1], tf.int32)
    return 0.5 * (tf.reduce_mean(ce(labels=zeros, logits=logits_joint))
                  + tf.reduce_mean(ce(labels=ones, logits=logits_permuted)))


def discriminator_accuracy(logits_joint: tf.Tensor, logits_permuted: tf.Tensor) -> tf.Tensor:
    """Fraction of the ``2B`` codes the discriminator classifies correctly."""
    right = tf.concat([tf.cast(logits_joint[:, 0] > logits_joint[:, 1], tf.float32),
                       tf.cast(logits_permuted[:, 1] > logits_permuted[:, 0], tf.float32)], axis=0)
    return tf.reduce_mean(right)


def attention_maps(model: FactorVAE, x: tf.Tensor, dims: tf.Tensor, layer: int = 1, second_order: bool = True,
                   upsample: bool = True, form: str = "gradcam", eps: tf.Tensor | None = None
                   ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Maps ``[B, n, H, W]`` of dimensions ``dims`` at conv ``layer`` and ``(mu, logvar)`` of the same pass.

    ``form="gradcam"``: ``ReLU(sum_k alpha_k A_k)`` of the latent mean, ``A`` before the conv's ReLU, bilinear
    upsampling (half-pixel centers). ``"brongers"``: Brongers' ``gradcam.py``, ``sum_k ReLU(alpha_k ReLU(A)_k)`` of the
    sampled ``z = mu + eps * exp(logvar / 2)`` (``eps`` ``[B, L]``; the mean if None), upsampled with aligned corners.
    ``alpha_k``: the spatial mean of ``d sum_b target_i / dA_k`` (with ``second_order=False``, a constant)."""
    if form not in MAP_FORMS:
        raise ValueError(f"unknown map form {form!r}; choose one of {MAP_FORMS}")
    a = model.features(x, layer)  # [B, h, w, K]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(a)
        mu, logvar = model.encode_from(a, layer)
        target = mu if form == "gradcam" or eps is None else mu + eps * tf.exp(0.5 * logvar)
        picked = tf.gather(target, dims, axis=1)  # [B, n]
        scores = tf.unstack(tf.reduce_sum(picked, axis=0))  # the batch decouples: d sum_b z_i(x_b) / dA_b
    grads = tf.stack([tape.gradient(s, a) for s in scores], axis=1)  # [B, n, h, w, K]
    del tape
    alpha = tf.reduce_mean(grads, axis=[2, 3])  # [B, n, K]
    if not second_order:
        alpha = tf.stop_gradient(alpha)
    if form == "gradcam":
        maps = tf.nn.relu(tf.einsum("bhwk,bnk->bhwn", a, alpha))  # [B, h, w, n]
    else:  # the hooked conv output is rectified in place by the ReLU after it; each channel rectified, then summed
        maps = tf.reduce_sum(tf.nn.relu(tf.nn.relu(a)[:, :, :, None, :] * alpha[:, None, None, :, :]), axis=-1)
    if upsample and form == "gradcam":
        maps = tf.image.resize(maps, tf.shape(x)[1:3], method="bilinear")
    elif upsample:
        maps = tf.compat.v1.image.resize_bilinear(maps, tf.shape(x)[1:3], align_corners=True)
    return tf.transpose(maps, [0, 3, 1, 2]), mu, logvar


def attention_disentanglement_loss(map_i: tf.Tensor, map_j: tf.Tensor, reduction: str = "mean") -> tf.Tensor:
    """``L_AD`` of maps ``[B, H, W]``, per image and averaged (``"mean"``) or pooled and divided by ``B``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose one of {REDUCTIONS}")
    overlap = tf.reduce_sum(tf.minimum(map_i, map_j), axis=[1, 2])  # [B]
    total = tf.reduce_sum(map_i + map_j, axis=[1, 2])
    if reduction == "mean":
        return tf.reduce_mean(tf.math.divide_no_nan(2.0 * overlap, total))
    batch = tf.cast(tf.shape(map_i)[0], map_i.dtype)
    return tf.math.divide_no_nan(2.0 * tf.reduce_sum(overlap), tf.reduce_sum(total)) / batch


def distinct_pair(generator: tf.random.Generator, n: int) -> tf.Tensor:
    """Two distinct dimensions ``[i, j]`` of ``range(n)``, uniform over ordered pairs, from ``generator``."""
    i = generator.uniform([], 0, n, dtype=tf.int32)
    j = (i + generator.uniform([], 1, n, dtype=tf.int32)) % n
    return tf.stack([i, j])


def make_train_step(model: FactorVAE, disc: keras.Model, vae_optimizer, disc_optimizer,
                    generator: tf.random.Generator, gamma: float = 40.0, ad_weight: float = 0.0, ad_layer: int = 1,
                    second_order: bool = False, ad_reduction: str = "pooled", ad_map: str = "gradcam"):
    """One FactorVAE (``ad_weight = 0``) or AD-FactorVAE iteration as a ``tf.function``:
    ``step(x1, x2) -> {recon, kl, tc, ad, vae_loss, disc_loss, disc_accuracy}``.

    Both gradients are taken at the current parameters, then both optimizers step; ``generator`` draws the noise, the
    permutations and the pair of dimensions."""
    latent = model.latent_dim
    use_ad = ad_weight > 0

    @tf.function
    def step(x1, x2):
        batch = tf.shape(x1)[0]
        eps1, eps2 = generator.normal([batch, latent]), generator.normal([batch, latent])
        keys = generator.uniform([batch, latent])
        mu2, logvar2 = model.encode(x2)
        z_perm = tf.stop_gradient(permute_dims(mu2 + eps2 * tf.exp(0.5 * logvar2), keys))
        with tf.GradientTape(persistent=True) as tape:
            if use_ad:
                maps, mu, logvar = attention_maps(model, x1, distinct_pair(generator, latent), ad_layer,
                                                  second_order, form=ad_map, eps=eps1)
                ad = attention_disentanglement_loss(maps[:, 0], maps[:, 1], ad_reduction)
            else:
                mu, logvar = model.encode(x1)
                ad = tf.constant(0.0)
            z = mu + eps1 * tf.exp(0.5 * logvar)
            recon = reconstruction_loss(x1, model.decode(z))
            kl = kl_divergence(mu, logvar)
            logits_joint = disc(z)
            tc = tc_estimate(logits_joint)
            vae_loss = recon + kl + gamma * tc + ad_weight * ad
            logits_perm = disc(z_perm)
            disc_loss = discriminator_loss(logits_joint, logits_perm)  # D's gradient only: z enters as data
        vae_grads = tape.gradient(vae_loss, model.trainable_variables)
        disc_grads = tape.gradient(disc_loss, disc.trainable_variables)
        del tape
        vae_optimizer.apply_gradients(zip(vae_grads, model.trainable_variables))
        disc_optimizer.apply_gradients(zip(disc_grads, disc.trainable_variables))
        return {"recon": recon, "kl": kl, "tc": tc, "ad": ad, "vae_loss": vae_loss, "disc_loss": disc_loss,
                "disc_accuracy": discriminator_accuracy(logits_joint, logits_perm)}

    return step


# --------------------------------------------------------------------------------------------------- export
def save_factorvae(model: FactorVAE, export_dir: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
    """Atomically writes ``export_dir/{model.weights.h5, model.json}`` (kind ``"factorvae"``)."""
    return save_keras_model(model, export_dir, "factorvae", extra)


def load_factorvae(export_dir: str | os.PathLike) -> FactorVAE:
    """Rebuilds a :class:`FactorVAE` written by :func:`save_factorvae`."""
    model, _ = load_keras_model(export_dir, ("factorvae",), lambda info: FactorVAE(**info.config), "FactorVAE",
                                "VAE.factorvae.save_factorvae (`python -m VAE.train_factorvae`)",
                                "`python -m VAE.train_factorvae --out RUN_DIR`")
    return model


