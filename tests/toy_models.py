"""Small stand-in models with the interfaces CLUE and its baselines use, for fast, exact tests.

Every computation is elementwise over rows (no matmul), so results do not depend on which rows share a batch.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


class IdentityGenerator:
    """x = z, with the generator interface of a VAE (``encode`` returns ``(x, 1)``)."""

    def regenerate(self, z, straight_through=True):
        return tf.identity(z)

    def encode(self, x):
        x = tf.convert_to_tensor(x)
        return x, tf.ones_like(x)


class ToyGaussianBNN:
    """S samples of a heteroscedastic Gaussian: mu_s = sum_j a_sj x_j, sigma_s = softplus(sum_j c_sj x_j^2 - 1)."""

    def __init__(self, dim: int, n_samples: int = 8, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.a = tf.constant(rng.normal(size=(n_samples, 1, dim)), tf.float32)
        self.c = tf.constant(rng.uniform(0.2, 1.0, size=(n_samples, 1, dim)), tf.float32)

    def predict_samples(self, x):
        x = tf.convert_to_tensor(x, tf.float32)[None]  # [1, B, D]
        return tf.reduce_sum(self.a * x, -1), tf.nn.softplus(tf.reduce_sum(self.c * x * x, -1) - 1.0)


class ToyCategoricalBNN:
    """S samples of a 3-class softmax whose logits are elementwise-weighted sums of the inputs."""

    def __init__(self, dim: int, n_samples: int = 8, n_classes: int = 3, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.w = tf.constant(rng.normal(size=(n_samples, 1, n_classes, dim)), tf.float32)

    def predict_samples(self, x):
        x = tf.convert_to_tensor(x, tf.float32)[None, :, None, :]  # [1, B, 1, D]
        return tf.nn.softmax(tf.reduce_sum(self.w * x, -1), axis=-1)  # [S, B, C]


class MeanInfill:
    """A VAEAC stand-in whose in-filling is a fixed value per feature (e.g. the training mean)."""

    def __init__(self, fill):
        self.fill = tf.constant(np.asarray(fill, np.float32))

    def inpaint(self, x, mask, n_samples=1, z_mean=False):
        x = tf.convert_to_tensor(x, tf.float32)
        return tf.broadcast_to(self.fill, [n_samples, tf.shape(x)[0], x.shape[-1]])
