"""The one-class convolutional VAE of Liu et al. [1] (``ConvVAE(latent_size=32)`` of the original code).

Layout follows ``reference-spec-expvae.md`` sections 1 and 5.2, in NHWC:

* ``enc_a``: flat ``[B, 784]`` -> Conv(64, k4, s2) -> ReLU -> Conv(128, k4, s2) -> ``A`` ``[B, 7, 7, 128]``. ``A`` is
  the *pre-activation* output of the second conv layer (the original's ``encoder.2``), the attention target; the
  ReLU that follows is the first layer of ``enc_b`` so that no fused activation hides it (spec trap 1).
* ``enc_b``: ``A`` -> ReLU -> Flatten -> Dense(1024, relu) -> ``(mu, logvar)``, each ``[B, L]`` (two heads, like the
  original's ``fc1``/``fc2``; ``logvar`` unconstrained).
* ``decoder``: ``z`` -> Dense(1024, relu) -> Dense(6272, relu) -> (7, 7, 128) -> ConvT(64, k4, s2, relu) ->
  ConvT(1, k4, s2) -> flat Bernoulli *logits* ``[B, 784]``.

"same" padding with kernel 4, stride 2 on the even sizes 28 and 14 pads one pixel per side, i.e. PyTorch's
``padding=1`` (spec 5.2). Kernels and biases are initialised like PyTorch's defaults (U(+-1/sqrt(fan_in))).
No batch norm, no dropout: every example's computation is independent of the rest of the batch.

Loss (spec 2): the negative ELBO with beta = 1, *summed* over pixels and over the batch,
``sum_b [sum_p BCE(sigmoid(logit_bp), x_bp) + KL(N(mu_b, diag exp logvar_b) || N(0, I))]``, BCE from logits on
grey-level targets (never Keras's mean-reduced BCE, spec trap 9). Training samples ``z = mu + eps * exp(logvar / 2)``;
evaluation uses ``z = mu`` (eval mode of the original).

#### References
[1] Liu et al. Towards Visually Explaining Variational Autoencoders. CVPR 2020. arXiv:1911.07389.
[2] Kingma & Welling. Auto-Encoding Variational Bayes. ICLR 2014.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from common.export import load_keras_model, register_loader, save_keras_model
from common.layers import torch_uniform
from common.validation import check_tensor_inputs

IMAGE_SHAPE = (28, 28, 1)
WEIGHTS_FILE = "model.weights.h5"


def _conv(filters: int, fan_in: int, name: str, transpose: bool = False, activation: str | None = None):
    init = torch_uniform(fan_in)
    cls = keras.layers.Conv2DTranspose if transpose else keras.layers.Conv2D
    return cls(filters, 4, strides=2, padding="same", activation=activation, kernel_initializer=init,
               bias_initializer=init, name=name)


def _dense(units: int, fan_in: int, name: str, activation: str | None = None) -> keras.layers.Dense:
    init = torch_uniform(fan_in)
    return keras.layers.Dense(units, activation=activation, kernel_initializer=init, bias_initializer=init, name=name)


class ExpVAE(keras.Model):
    """One-class conv VAE whose encoder is split at the attention target (spec 1, 5.2).

    Args:
      latent_dim: L (the original: 32).
      filters: channels of the two encoder convs (the original: ``(64, 128)``); the decoder mirrors them.
      hidden_dim: width of the dense layers (the original: 1024).

    Only 28x28x1 images are supported (the 7x7 grid after two stride-2 convs is built into the decoder).
    """

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
        """``x`` float32 ``[B, 784]`` in [0, 1] -> ``(mu, logvar)``, each ``[B, L]``.

        Raises:
          UserError: ``x`` is empty, not ``[B, 784]`` or holds NaN or inf (values are checked when concrete).
        """
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
        """Per-example negative-ELBO terms.

        Args:
          x: float32 ``[B, 784]`` grey levels in [0, 1].
          eps: float32 ``[B, L]`` standard-normal noise for ``z = mu + eps * exp(logvar / 2)``; ``None``: ``z = mu``.

        Returns:
          ``bce`` ``[B]`` (summed over pixels), ``kl`` ``[B]``, ``loss = bce + kl`` ``[B]``, ``logits`` ``[B, 784]``.
        """
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
    """Atomically writes ``export_dir/{model.weights.h5, model.json}`` (``common.export``, kind ``"expvae"``);
    ``extra`` (``dataset``, ``epoch``, ...) goes into ``model.json`` too."""
    return save_keras_model(model, export_dir, "expvae", extra)


def load_expvae(export_dir: str | os.PathLike) -> ExpVAE:
    """Rebuilds an :class:`ExpVAE` written by :func:`save_expvae` (or, before ``model.json``, with
    ``model_config.json``).

    Raises:
      FileNotFoundError: ``export_dir`` holds no ``model.json`` (nor ``model_config.json``) or no
        ``model.weights.h5``.
      UserError (a ValueError): the export is not an ExpVAE (e.g. a CLUE VAE written by ``VAE.model.save_vae``),
        or a file is truncated or corrupt (the message names it and what to do).
    """
    model, _ = load_keras_model(export_dir, ("expvae",), lambda info: ExpVAE(**info.config), "ExpVAE",
                                "VAE.expvae.save_expvae (`python -m VAE.train --model expvae`)",
                                "`python -m VAE.train --dataset mnist_t10k --model expvae --out RUN_DIR`")
    return model


register_loader("expvae", load_expvae)
