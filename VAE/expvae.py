"""The one-class convolutional VAE of Liu et al. [1] (``ConvVAE(latent_size=32)`` of the original code).

Layout (``reference-spec-expvae.md`` sections 1 and 5.2, NHWC): ``enc_a``: ``[B, 784]`` -> Conv(64, k4, s2) -> ReLU ->
Conv(128, k4, s2) -> ``A`` ``[B, 7, 7, 128]`` (pre-activation, the attention target; spec trap 1); ``enc_b``: ReLU ->
Dense(1024, relu) -> ``(mu, logvar)`` ``[B, L]``; ``decoder``: Dense(1024) -> Dense(6272) -> ConvT(64, k4, s2) ->
ConvT(1, k4, s2) -> logits ``[B, 784]``; ``"same"`` padding is PyTorch's ``padding=1`` here.

Loss (spec 2, trap 9): ``sum_b [sum_p BCE(sigmoid(logit_bp), x_bp) + KL(N(mu_b, diag exp logvar_b) || N(0, I))]``.

References: [1] Liu et al. Towards Visually Explaining VAEs. CVPR 2020. [2] Kingma & Welling. Auto-Encoding Variational
Bayes. ICLR 2014."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from common.export import load_keras_model, save_keras_model
from common.layers import torch_uniform
from common.validation import check_tensor_inputs

IMAGE_SHAPE = (28, 28, 1)
WEIGHTS_FILE = "model.weights.h5"


def _conv(filters: int, fan_in: int, name: str, transpose: bool = False, activation: str | None = None):
    cls = keras.layers.Conv2DTranspose if transpose else keras.layers.Conv2D
    return cls(filters, 4, strides=2, padding="same", activation=activation, kernel_initializer=torch_uniform(fan_in),
               bias_initializer=torch_uniform(fan_in), name=name)  # two initializers: independent draws, as torch


def _dense(units: int, fan_in: int, name: str, activation: str | None = None) -> keras.layers.Dense:
    return keras.layers.Dense(units, activation=activation, kernel_initializer=torch_uniform(fan_in),
                              bias_initializer=torch_uniform(fan_in), name=name)


class ExpVAE(keras.Model):
    """One-class conv VAE for 28x28x1 images, its encoder split at the attention target (spec 1, 5.2)."""

    def __init__(self, latent_dim: int = 32, filters: Sequence[int] = (64, 128), hidden_dim: int = 1024, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim, self.hidden_dim = int(latent_dim), int(hidden_dim)
        self.filters = tuple(int(f) for f in filters)
        f1, f2 = self.filters
        h, w, _ = IMAGE_SHAPE
        grid = (h // 4, w // 4, f2)  # (7, 7, f2)
        flat = grid[0] * grid[1] * f2
        self.enc_a = keras.Sequential(
            [keras.Input((h * w,)), keras.layers.Reshape(IMAGE_SHAPE), _conv(f1, 1 * 16, "conv1"),
             keras.layers.ReLU(), _conv(f2, f1 * 16, "conv2")], name="enc_a")  # no activation: A is pre-ReLU
        a_in = keras.Input(grid)
        hidden = _dense(hidden_dim, flat, "fc", "relu")(keras.layers.Flatten()(keras.layers.ReLU()(a_in)))
        self.enc_b = keras.Model(a_in, [_dense(latent_dim, hidden_dim, "mu")(hidden),
                                        _dense(latent_dim, hidden_dim, "logvar")(hidden)], name="enc_b")
        self.decoder = keras.Sequential(
            [keras.Input((latent_dim,)), _dense(hidden_dim, latent_dim, "dec_fc1", "relu"),
             _dense(flat, hidden_dim, "dec_fc2", "relu"), keras.layers.Reshape(grid),
             # torch's ConvTranspose2d fan_in is computed from weight dim 1 = out_channels
             _conv(f1, f1 * 16, "deconv1", transpose=True, activation="relu"),
             _conv(1, 1 * 16, "deconv2", transpose=True), keras.layers.Flatten()], name="decoder")
        self.built = True

    # ------------------------------------------------------------------------------------------------ networks
    def call(self, x, training=False):
        return tf.sigmoid(self.decode(self._encode(x)[0]))

    def encode(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``x`` float32 ``[B, 784]`` in [0, 1] -> ``(mu, logvar)``, each ``[B, L]``; ``UserError`` for a bad ``x``."""
        x = check_tensor_inputs(x, IMAGE_SHAPE[0] * IMAGE_SHAPE[1], "x", "this ExpVAE", None, IMAGE_SHAPE)
        return self._encode(x)

    def _encode(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """:meth:`encode` without the input checks (the library's own graph paths)."""
        return self.enc_b(self.enc_a(x))

    def decode(self, z: tf.Tensor) -> tf.Tensor:
        """``z`` ``[B, L]`` -> Bernoulli logits ``[B, 784]``."""
        return self.decoder(z)

    def reconstruct(self, x: tf.Tensor) -> tf.Tensor:
        """Eval-mode reconstruction ``sigmoid(decode(mu(x)))`` ``[B, 784]``."""
        return self.call(x)

    # --------------------------------------------------------------------------------------------- objectives
    def loss_terms(self, x: tf.Tensor, eps: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """Per-example ``bce``, ``kl``, ``loss`` ``[B]`` and ``logits``; ``z = mu + eps * exp(logvar / 2)`` or
        ``mu``."""
        mu, logvar = self._encode(x)
        z = mu if eps is None else mu + eps * tf.exp(0.5 * logvar)
        logits = self.decode(z)
        bce = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits), -1)
        kl = -0.5 * tf.reduce_sum(1.0 + logvar - tf.square(mu) - tf.exp(logvar), -1)
        return {"bce": bce, "kl": kl, "loss": bce + kl, "logits": logits}

    def training_loss(self, x: tf.Tensor, eps: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The original's objective, summed over the batch, and the batch-mean ELBO (for logging)."""
        loss = self.loss_terms(x, eps)["loss"]  # [B]
        return tf.reduce_sum(loss), -tf.reduce_mean(loss)

    def get_config(self) -> dict[str, Any]:
        return {"latent_dim": self.latent_dim, "filters": list(self.filters), "hidden_dim": self.hidden_dim}


def save_expvae(model: ExpVAE, export_dir: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
    """Atomically writes ``export_dir/{model.weights.h5, model.json}`` (kind ``"expvae"``, plus ``extra``)."""
    return save_keras_model(model, export_dir, "expvae", extra)


def load_expvae(export_dir: str | os.PathLike) -> ExpVAE:
    """Rebuilds an :class:`ExpVAE` written by :func:`save_expvae`."""
    model, _ = load_keras_model(export_dir, ("expvae",), lambda info: ExpVAE(**info.config), "ExpVAE",
                                "VAE.expvae.save_expvae (`python -m VAE.train --model expvae`)",
                                "`python -m VAE.train --dataset mnist_t10k --model expvae --out RUN_DIR`")
    return model


