"""Variational auto-encoders: tabular gauss_cat / Gaussian MLP VAEs and the MNIST convolutional Bernoulli VAE.

:class:`VAE` covers the original's ``VAE_gauss_net``, ``VAE_gauss_cat_net``, ``VAE_bern_net`` and
``MNISTconv_VAE_bern_net`` (spec 4.3-4.5) through ``likelihood`` and ``arch``, with flat inputs and outputs. ELBO per
example (Eq. 3 of [1]): ``vlb = log p(x | z) - KL(q(z | x) || N(0, I))``, ``q`` diagonal Gaussian with scale >= 1e-3;
training minimizes ``mean_B(-vlb) * vlb_scale`` with ``z = loc + scale * eps``, evaluation decodes ``z = loc``.

References: [1] Kingma & Welling. Auto-Encoding Variational Bayes. ICLR 2014. [2] Antorán et al. Getting a CLUE. ICLR
2021. [3] Burda et al. Importance Weighted Autoencoders. ICLR 2016."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from common import likelihoods as lk
from common.errors import UserError
from common.export import load_keras_model, save_keras_model
from common.layers import assign_sequential_from_npz, mlp_generator_net, mlp_recognition_net
from common.validation import check_tensor_inputs, load_npz

logger = logging.getLogger(__name__)

ARCHS = ("mlp", "mnist_conv")
WEIGHTS_FILE = "model.weights.h5"
PARITY_KINDS = ("gauss_cat", "gauss")  # meta.kind values of the parity kit's VAEs (SCHEMA-WINE-CREDIT.md section 3)


class VAE(keras.Model):
    """A VAE with a diagonal-Gaussian posterior, a N(0, I) prior and a flat likelihood.

    Args:
      input_dim_vec: per-variable widths of the flat input (``[1]*D`` for Gaussian or pixel data).
      likelihood: ``"gauss_cat"``, ``"gauss"`` (``-(x_hat - x)^2``; ``pred_sig``: a learned scale, decoder outputs
        ``2D``) or ``"bernoulli"``.
      width, depth: MLP width and depth (depth 3 = input Dense + 2 residual blocks); ``arch``: ``"mlp"`` or
        ``"mnist_conv"``."""

    def __init__(self, input_dim_vec: Sequence[int], latent_dim: int, likelihood: str = "gauss_cat",
                 width: int = 300, depth: int = 3, arch: str = "mlp", pred_sig: bool = False, **kwargs):
        super().__init__(**kwargs)
        if likelihood not in lk.LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {lk.LIKELIHOODS}")
        if arch not in ARCHS:
            raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")
        if pred_sig and likelihood != "gauss":
            raise ValueError("pred_sig is only defined for the Gaussian likelihood")
        self.input_dim_vec = [int(k) for k in input_dim_vec]
        self.input_dim = sum(self.input_dim_vec)
        self.latent_dim = int(latent_dim)
        self.likelihood = likelihood
        self.width, self.depth, self.arch, self.pred_sig = int(width), int(depth), arch, bool(pred_sig)
        self.vlb_scale = lk.vlb_scale(likelihood, self.input_dim_vec)
        out_dim = lk.decoder_output_dim(likelihood, self.input_dim_vec, pred_sig)
        if arch == "mnist_conv":
            from VAE.conv import IMAGE_SHAPE, mnist_generator_resnet, mnist_recognition_resnet
            if likelihood != "bernoulli" or self.input_dim != IMAGE_SHAPE[0] * IMAGE_SHAPE[1]:
                raise ValueError("arch 'mnist_conv' needs the Bernoulli likelihood and 784 flat pixels")
            self.encoder = mnist_recognition_resnet(self.latent_dim)
            self.decoder = mnist_generator_resnet(self.latent_dim)
        else:
            self.encoder = mlp_recognition_net(self.input_dim, self.width, self.depth, self.latent_dim)
            self.decoder = mlp_generator_net(out_dim, self.width, self.depth, self.latent_dim, variant="vae")
        self.built = True  # both sub-networks are built from their Input shapes
        self.dataset: str | None = None  # the data.load name it was trained on, when known (load_vae); for messages

    # ------------------------------------------------------------------------------------------------ networks
    def call(self, x, training=False):
        loc, _ = self._encode(x, training=training)
        return self.decode(loc, training=training)

    def encode(self, x: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """q(z | x): ``x`` float32 ``[B, D]`` -> ``(loc, scale)`` ``[B, L]``; ``UserError`` for a bad ``x``."""
        image_shape = (28, 28, 1) if self.arch == "mnist_conv" else None
        x = check_tensor_inputs(x, self.input_dim, "x", "this VAE", self.dataset, image_shape)
        return self._encode(x, training=training)

    def _encode(self, x: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """:meth:`encode` without the input checks (the library's own graph paths)."""
        return lk.normal_parse_params(self.encoder(x, training=training), lk.MIN_ENCODER_SIGMA)

    def decode(self, z: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Raw decoder output ``[B, D]`` (``[B, 2D]`` with ``pred_sig``): means, categorical logits or pixel logits."""
        return self.decoder(z, training=training)

    def regenerate(self, z: tf.Tensor, straight_through: bool = True) -> tf.Tensor:
        """Decodes ``z [B, L]`` to ``[B, D]``: means, one-hot blocks (softmax gradient if ``straight_through``) or
        probabilities."""
        out = self.decode(z, training=False)
        if self.likelihood == "gauss_cat":
            return lk.selective_softmax(out, self.input_dim_vec, "straight_through" if straight_through else "hard")
        if self.likelihood == "bernoulli":
            return tf.sigmoid(out)
        return out[:, : self.input_dim] if self.pred_sig else out

    def reconstruct(self, x) -> np.ndarray:
        """Hard regeneration of the encoder mean of rows ``x [n, D]`` (CLUE's starting point)."""
        return self.regenerate(self.encode(x)[0], straight_through=False).numpy()

    # --------------------------------------------------------------------------------------------- objectives
    def elbo_terms(self, x: tf.Tensor, training: bool = False, eps: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """ELBO terms (``rec``, ``kl``, ``elbo`` ``[B]``, per-term parts, decoder ``out``) of ``x [B, D]``;
        ``eps=None``: ``z = loc``."""
        loc, scale = self._encode(x, training=training)
        z = loc if eps is None else loc + scale * eps
        out = self.decode(z, training=training)
        rec_per_term = lk.log_likelihood(self.likelihood, out, x, self.input_dim_vec, self.pred_sig)
        kl_per_dim = lk.kl_normal_std_normal(loc, scale)
        rec, kl = tf.reduce_sum(rec_per_term, -1), tf.reduce_sum(kl_per_dim, -1)
        return {"rec_per_term": rec_per_term, "rec": rec, "kl_per_dim": kl_per_dim, "kl": kl, "elbo": rec - kl,
                "out": out}

    def elbo(self, x: tf.Tensor) -> tf.Tensor:
        """Per-example evaluation ELBO ``[B]``: inference-mode BN, ``z = loc`` (the original's dev ELBO)."""
        return self.elbo_terms(x, training=False)["elbo"]

    def training_loss(self, x: tf.Tensor, eps: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Training objective ``mean_B(-vlb) * vlb_scale`` (train-mode BN, sampled z) and ``mean_B(vlb)``."""
        vlb = self.elbo_terms(x, training=True, eps=eps)["elbo"]
        return -tf.reduce_mean(vlb) * self.vlb_scale, tf.reduce_mean(vlb)

    def importance_log_likelihood(self, x: tf.Tensor, n_samples: int = 1000, seed: tf.Tensor | None = None,
                                  chunk: int = 100) -> tuple[tf.Tensor, tf.Tensor]:
        """Importance-sampled ``log p(x)`` ``[B]`` (IWAE bound of [3], Eq. 8) and the Monte-Carlo ELBO from the same
        samples.

        ``log p(x) ~= logsumexp_k(log w_k) - log K``, ``log w = log p(x | z) + log N(z; 0, I) - log q(z | x)``,
        ``z_k ~ q``, ``K = n_samples`` decoded ``chunk`` at a time; ``seed``: int ``[2]`` stateless seed."""
        loc, scale = self._encode(x, training=False)  # [B, L]
        log_w = []
        for start in range(0, n_samples, chunk):
            k = min(chunk, n_samples - start)
            shape = (k, tf.shape(x)[0], self.latent_dim)
            eps = tf.random.normal(shape) if seed is None else tf.random.stateless_normal(
                shape, tf.random.experimental.stateless_fold_in(seed, start))
            z = loc + scale * eps  # [k, B, L]
            out = self.decode(tf.reshape(z, (-1, self.latent_dim)), training=False)
            out = tf.reshape(out, (k, -1, out.shape[-1]))  # [k, B, D']
            rec = tf.reduce_sum(lk.log_likelihood(self.likelihood, out, tf.broadcast_to(x, (k, *x.shape)),
                                                  self.input_dim_vec, self.pred_sig), -1)  # [k, B]
            log_prior = tf.reduce_sum(lk.normal_log_prob(z, 0.0, 1.0), -1)
            log_q = tf.reduce_sum(lk.normal_log_prob(z, loc, scale), -1)
            log_w.append(rec + log_prior - log_q)
        log_w = tf.concat(log_w, axis=0)  # [K, B]
        log_px = tf.reduce_logsumexp(log_w, axis=0) - tf.math.log(float(n_samples))
        return log_px, tf.reduce_mean(log_w, axis=0)

    def sample_prior(self, n: int, seed: tf.Tensor | None = None) -> tf.Tensor:
        """``n`` prior draws decoded with :meth:`regenerate` (hard), ``[n, D]``."""
        z = tf.random.stateless_normal((n, self.latent_dim), seed) if seed is not None else \
            tf.random.normal((n, self.latent_dim))
        return self.regenerate(z, straight_through=False)

    # -------------------------------------------------------------------------------------------- persistence
    def get_config(self) -> dict[str, Any]:
        return {"input_dim_vec": self.input_dim_vec, "latent_dim": self.latent_dim, "likelihood": self.likelihood,
                "width": self.width, "depth": self.depth, "arch": self.arch, "pred_sig": self.pred_sig}


def build_vae(config: Mapping[str, Any]) -> VAE:
    """Rebuilds a :class:`VAE` from :meth:`VAE.get_config` (extra keys are rejected)."""
    return VAE(**dict(config))


def save_vae(model: VAE, export_dir: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
    """Atomically writes ``export_dir/{model.weights.h5, model.json}`` (kind ``"vae"``, plus ``extra``)."""
    return save_keras_model(model, export_dir, "vae", extra)


def load_vae(export_dir: str | os.PathLike) -> VAE:
    """Rebuilds a VAE written by :func:`save_vae` (``FileNotFoundError`` or ``UserError`` naming the file)."""
    model, info = load_keras_model(export_dir, ("vae",), lambda info: build_vae(info.config), "VAE",
                                   "VAE.model.save_vae", "`python -m VAE.train --dataset {dataset} --out RUN_DIR`")
    model.dataset = info.dataset
    return model




def load_parity_npz(path: str | os.PathLike) -> VAE:
    """Loads a tabular VAE from the parity kit's npz (``SCHEMA.md``, ``SCHEMA-WINE-CREDIT.md`` section 3)."""
    arrays = load_npz(path, "the parity-kit VAE npz")
    if "meta" not in arrays:
        raise KeyError(f"{path}: no 'meta' entry; not a parity-kit VAE npz")
    meta = json.loads(str(arrays.pop("meta")))
    kind, pred_sig = meta.get("kind", "gauss_cat"), bool(meta.get("pred_sig", False))
    if kind not in PARITY_KINDS or (pred_sig and kind != "gauss"):
        raise UserError(f"{path}: meta.kind {kind!r} with pred_sig={pred_sig} is not a VAE kind of the parity kit; "
                        f"this loader builds {', '.join(PARITY_KINDS)} (pred_sig only with gauss), see SCHEMA.md "
                        "section 3 and SCHEMA-WINE-CREDIT.md section 3")
    model = VAE(meta["input_dim_vec"], meta["latent_dim"], kind, meta["width"], meta["depth"], pred_sig=pred_sig)
    assign_sequential_from_npz(model.encoder, arrays, "encoder")
    assign_sequential_from_npz(model.decoder, arrays, "decoder")
    return model


from_npz = load_parity_npz
