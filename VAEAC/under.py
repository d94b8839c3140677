"""The two-level "under-VAEAC" (spec 4.9): a small VAE on a trained VAEAC's latent space, the evaluation's ground truth.

``p_gt(x) = int N(u; 0, I) p_VAEAC(x | z = g(u)) du``; fitted to ``z ~ q_VAEAC(z | x)`` of the frozen base with
reconstruction ``-sum (z_hat - z)^2``, loss ``mean_B(-vlb) / dim(z)``. References: [1] Antorán et al. Getting a CLUE.
ICLR 2021 (Sec. 5.1, App. E)."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from common import likelihoods as lk
from common.layers import mlp_generator_net, mlp_recognition_net
from VAEAC.model import VAEAC


class UnderVAEAC(keras.Model):
    """A Gaussian VAE on the latent z of a frozen ``base`` VAEAC (``[nb]``: width 150, depth 2, ``dim(u) = L``)."""

    def __init__(self, base: VAEAC, width: int = 150, depth: int = 2, latent_dim: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.base = base
        self.base.trainable = False
        self.width, self.depth = int(width), int(depth)
        self.latent_dim = int(latent_dim or base.latent_dim)
        z_dim = base.latent_dim
        self.encoder = mlp_recognition_net(z_dim, self.width, self.depth, self.latent_dim, name="under_encoder")
        self.decoder = mlp_generator_net(z_dim, self.width, self.depth, self.latent_dim, variant="vae",
                                         name="under_decoder")
        self.vlb_scale = 1.0 / z_dim
        self.built = True

    def call(self, z, training=False):
        return self.decoder(self.encode_z(z, training=training)[0], training=training)

    def encode_z(self, z: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """q(u | z): ``(loc, scale)`` ``[B, dim(u)]``."""
        return lk.normal_parse_params(self.encoder(z, training=training), lk.MIN_ENCODER_SIGMA)

    def elbo_terms(self, z: tf.Tensor, training: bool = False, eps: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """Inner ELBO on codes ``z [B, L]``: ``rec = -sum (z_hat - z)^2``, ``kl``, ``elbo``, each ``[B]``."""
        loc, scale = self.encode_z(z, training=training)
        u = loc if eps is None else loc + scale * eps
        z_hat = self.decoder(u, training=training)
        rec = tf.reduce_sum(lk.gauss_unit_log_likelihood(z_hat, z), -1)
        kl = tf.reduce_sum(lk.kl_normal_std_normal(loc, scale), -1)
        return {"rec": rec, "kl": kl, "elbo": rec - kl}

    def sample_base_latent(self, x: tf.Tensor, eps_z: tf.Tensor) -> tf.Tensor:
        """``z ~ q_VAEAC(z | x)`` from the frozen base (inference-mode BN, no gradient), ``[B, L]``."""
        loc, scale = self.base.posterior(x, training=False)
        return tf.stop_gradient(loc + scale * eps_z)

    def training_loss(self, x: tf.Tensor, eps_z: tf.Tensor, eps_u: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``mean_B(-vlb) / dim(z)`` with z drawn from the base posterior, and the unscaled ``mean_B(vlb)``."""
        vlb = self.elbo_terms(self.sample_base_latent(x, eps_z), training=True, eps=eps_u)["elbo"]
        return -tf.reduce_mean(vlb) * self.vlb_scale, tf.reduce_mean(vlb)

    def elbo(self, x: tf.Tensor) -> tf.Tensor:
        """Eval ELBO ``[B]`` of the base posterior mean of ``x`` (``u = loc``)."""
        return self.elbo_terms(self.base.posterior(x)[0])["elbo"]

    def u_regenerate(self, u: tf.Tensor) -> tf.Tensor:
        """``base.decode(g(u))``: the raw base output ``[B, D']``."""
        return self.base.decode(self.decoder(u, training=False), training=False)

    def u_recognition(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """q(u | ·) through the base recognition mean: ``(loc, scale)`` ``[B, dim(u)]``."""
        return self.encode_z(self.base.posterior(x)[0])

    def u_mask_recognition(self, x: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """q(u | ·) through the base *prior* mean of the observed part (the log p_gt(x) proposal)."""
        return self.encode_z(self.base.prior(x, mask)[0])

    def sample(self, n: int, seed: tf.Tensor) -> tf.Tensor:
        """Raw base outputs of ``n`` ground-truth draws ``u ~ N(0, I)``, ``[n, D']`` (spec 6.3)."""
        return self.u_regenerate(tf.random.stateless_normal((n, self.latent_dim), seed))

    def get_config(self) -> dict[str, Any]:
        return {"base": self.base.get_config(), "width": self.width, "depth": self.depth,
                "latent_dim": self.latent_dim}
