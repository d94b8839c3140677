"""VAE with arbitrary conditioning (VAEAC) as the original uses it for in-filling and ground-truth data (spec 4.6).

Networks over flat data of width D (mask = 1 means missing): recognition ``q(z | x)``; prior ``p(z | x_obs, m)`` on
``[apply_mask(x, m), m]``; generator ``p(x | z)`` (the VAEAC MLP variant, trap 25). Per example (Eq. 4 of [1], as the
original, reconstructing all dimensions), with ``z ~ q``, sigma_mu = 1e4 and sigma_sigma = 1e-4:
  ``vlb = log p(x | z) - KL(q(z | x) || p(z | x_obs, m)) + reg``,
  ``reg = -sum_l mu_p^2 / (2 sigma_mu^2) + sigma_sigma * sum_l (log sigma_p - sigma_p)``.

References: [1] Ivanov et al. Variational Autoencoder with Arbitrary Conditioning. ICLR 2019. [2] Antorán et al. Getting
a CLUE. ICLR 2021."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from common import likelihoods as lk
from common.layers import mlp_generator_net, mlp_recognition_net
from VAEAC.masks import apply_mask

SIGMA_MU = 1e4  # prior-network regularizer scales of the original (Sec. 4.3.2 of [1])
SIGMA_SIGMA = 1e-4
WEIGHTS_FILE = "model.weights.h5"


class VAEAC(keras.Model):
    """VAEAC over flat data (module docstring); ``width``, ``depth``: MLP size of all three networks (paper: 350, 3);
    ``pred_sig``: learned Gaussian scale."""

    def __init__(self, input_dim_vec: Sequence[int], latent_dim: int, likelihood: str = "gauss_cat",
                 width: int = 350, depth: int = 3, pred_sig: bool = False, **kwargs):
        super().__init__(**kwargs)
        if likelihood not in lk.LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {lk.LIKELIHOODS}")
        if pred_sig and likelihood != "gauss":
            raise ValueError("pred_sig is only defined for the Gaussian likelihood")
        self.input_dim_vec = [int(k) for k in input_dim_vec]
        self.input_dim = sum(self.input_dim_vec)
        self.latent_dim, self.likelihood = int(latent_dim), likelihood
        self.width, self.depth, self.pred_sig = int(width), int(depth), bool(pred_sig)
        self.vlb_scale = lk.vlb_scale(likelihood, self.input_dim_vec)
        d = self.input_dim
        self.recognition_net = mlp_recognition_net(d, self.width, self.depth, self.latent_dim, name="recognition")
        self.prior_net = mlp_recognition_net(2 * d, self.width, self.depth, self.latent_dim, name="prior")
        self.decoder = mlp_generator_net(lk.decoder_output_dim(likelihood, self.input_dim_vec, pred_sig), self.width,
                                         self.depth, self.latent_dim, variant="vaeac", name="decoder")
        self.built = True

    def call(self, x, training=False):
        return self.decode(self.posterior(x, training=training)[0], training=training)

    # ------------------------------------------------------------------------------------------------ networks
    def posterior(self, x: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """q(z | x) from the full row ``[B, D]``: ``(loc, scale)`` each ``[B, L]``, scale >= 1e-3."""
        return lk.normal_parse_params(self.recognition_net(x, training=training), lk.MIN_ENCODER_SIGMA)

    def prior(self, x: tf.Tensor, mask: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """p(z | x_obs, m): the prior network sees only observed entries and the mask. ``(loc, scale)`` ``[B, L]``."""
        inputs = tf.concat([apply_mask(x, mask), mask], axis=-1)  # [B, 2D]
        return lk.normal_parse_params(self.prior_net(inputs, training=training), lk.MIN_ENCODER_SIGMA)

    def decode(self, z: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Raw generator output ``[B, D]`` (``[B, 2D]`` with ``pred_sig``)."""
        return self.decoder(z, training=training)

    def postprocess(self, out: tf.Tensor, mode: str = "hard") -> tf.Tensor:
        """Decoder output -> flat data: ``mode`` ``"hard"``, ``"probs"`` (softmax), ``"straight_through"`` or ``"raw"``
        (logits, or ``[mu, s]``)."""
        if mode == "raw":
            return out
        if self.likelihood == "gauss_cat":
            return lk.selective_softmax(out, self.input_dim_vec, mode)
        if self.likelihood == "bernoulli":
            return tf.sigmoid(out)
        return out[..., : self.input_dim] if self.pred_sig else out

    def regenerate(self, z: tf.Tensor, straight_through: bool = False) -> tf.Tensor:
        """``z [B, L]`` -> flat data ``[B, D]`` in inference mode (differentiable; the original detached it)."""
        return self.postprocess(self.decode(z), "straight_through" if straight_through else "hard")

    # --------------------------------------------------------------------------------------------- objectives
    @staticmethod
    def prior_regulariser(loc: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
        """``-sum mu^2 / (2 sigma_mu^2) + sigma_sigma sum (log sigma - sigma)`` per example, ``[B]``."""
        return (-tf.reduce_sum(tf.square(loc), -1) / (2.0 * SIGMA_MU**2)
                + SIGMA_SIGMA * tf.reduce_sum(tf.math.log(scale) - scale, -1))

    def elbo_terms(self, x: tf.Tensor, mask: tf.Tensor, training: bool = False,
                   eps: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """ELBO pieces, each ``[B]``: ``rec``, ``kl``, ``reg``, ``elbo``; ``eps [B, L]`` samples z (None: z = loc)."""
        q_loc, q_scale = self.posterior(x, training=training)
        p_loc, p_scale = self.prior(x, mask, training=training)
        z = q_loc if eps is None else q_loc + q_scale * eps
        out = self.decode(z, training=training)
        rec = tf.reduce_sum(lk.log_likelihood(self.likelihood, out, x, self.input_dim_vec, self.pred_sig), -1)
        kl = tf.reduce_sum(lk.kl_normal_normal(q_loc, q_scale, p_loc, p_scale), -1)
        reg = self.prior_regulariser(p_loc, p_scale)
        return {"rec": rec, "kl": kl, "reg": reg, "elbo": rec - kl + reg}

    def elbo(self, x: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        """Eval-mode ELBO ``[B]`` decoding ``z = loc`` of q (the original's ``eval``)."""
        return self.elbo_terms(x, mask)["elbo"]

    def training_loss(self, x: tf.Tensor, mask: tf.Tensor, eps: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``mean_B(-vlb) * vlb_scale`` in train mode and the unscaled ``mean_B(vlb)``."""
        vlb = self.elbo_terms(x, mask, training=True, eps=eps)["elbo"]
        return -tf.reduce_mean(vlb) * self.vlb_scale, tf.reduce_mean(vlb)

    def inpaint(self, x: tf.Tensor, mask: tf.Tensor, n_samples: int = 1, z_mean: bool = False,
                mode: str = "hard", keep_observed: bool = False, seed: tf.Tensor | None = None) -> tf.Tensor:
        """Samples ``[N, B, D]`` of ``p(x | z)``, ``z ~ p(z | x_obs, m)``, for ``x``, ``mask`` ``[B, D]`` (1 = missing,
        may be NaN).

        ``z_mean``: the prior mean; ``keep_observed``: copy observed entries (the original does not); ``seed``: int
        ``[2]``."""
        x = tf.convert_to_tensor(x, tf.float32)
        mask = tf.convert_to_tensor(mask, tf.float32)
        loc, scale = self.prior(x, mask)  # [B, L]
        shape = (n_samples, tf.shape(x)[0], self.latent_dim)
        if z_mean:
            z = tf.broadcast_to(loc, shape)
        else:
            eps = tf.random.normal(shape) if seed is None else tf.random.stateless_normal(shape, seed)
            z = loc + scale * eps  # [N, B, L]
        out = self.decode(tf.reshape(z, (-1, self.latent_dim)))
        samples = tf.reshape(self.postprocess(out, mode), (n_samples, tf.shape(x)[0], -1))  # [N, B, D']
        if keep_observed:
            if samples.shape[-1] != self.input_dim:
                raise ValueError("keep_observed needs outputs in the data space (not mode='raw' with pred_sig)")
            samples = tf.where(mask[None] > 0.5, samples, tf.where(tf.math.is_nan(x), 0.0, x)[None])
        return samples

    def get_config(self) -> dict[str, Any]:
        return {"input_dim_vec": self.input_dim_vec, "latent_dim": self.latent_dim, "likelihood": self.likelihood,
                "width": self.width, "depth": self.depth, "pred_sig": self.pred_sig}


def join_targets(x: np.ndarray, y: np.ndarray, input_dim_vec: Sequence[int], task: str,
                 n_classes: int | None = None) -> tuple[np.ndarray, list[int]]:
    """Appends y to the flat inputs for a ground-truth VAEAC on (x, y) (spec 1.2-1.4, 6.3): a continuous column or a
    one-hot block; returns ``(xy, input_dim_vec + [1 or C])``."""
    x = np.asarray(x, np.float32)
    if task == "regression":
        y_cols = np.asarray(y, np.float32).reshape(len(x), -1)
        return np.concatenate([x, y_cols], axis=1), [*input_dim_vec, *([1] * y_cols.shape[1])]
    if task != "classification" or not n_classes:
        raise ValueError(f"task must be 'regression' or 'classification' with n_classes, got {task!r}, {n_classes}")
    y_onehot = np.eye(n_classes, dtype=np.float32)[np.asarray(y).astype(np.int64).reshape(-1)]
    return np.concatenate([x, y_onehot], axis=1), [*input_dim_vec, n_classes]
