"""Mask generators for the VAEAC (spec 4.7; Ivanov et al., ICLR 2019). **mask = 1 means missing**; draws come from a
checkpointed ``tf.random.Generator``."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


def nan_mask(x: tf.Tensor) -> tf.Tensor:
    """1 where ``x`` ``[B, D]`` is NaN (always unobserved)."""
    return tf.cast(tf.math.is_nan(x), x.dtype)


def top_masker(x: tf.Tensor, generator: tf.random.Generator, p: float = 1.0,
               input_dim_vec: Sequence[int] | None = None) -> tf.Tensor:
    """The original's ``top_masker(p)``: per row ``r ~ U(0, p)``, each entry (or variable, given ``input_dim_vec``)
    masked w.p. ``r`` (marginally ``p / 2``), OR the NaN mask."""
    batch = tf.shape(x)[0]
    rate = generator.uniform([batch, 1], 0.0, p)  # [B, 1]
    if input_dim_vec is None:
        mask = tf.cast(generator.uniform(tf.shape(x)) < rate, x.dtype)
    else:
        per_var = tf.cast(generator.uniform([batch, len(input_dim_vec)]) < rate, x.dtype)  # [B, n_vars]
        mask = tf.repeat(per_var, list(input_dim_vec), axis=1)
    return tf.maximum(mask, nan_mask(x))


def mcar_masker(x: tf.Tensor, generator: tf.random.Generator, p: float = 0.5) -> tf.Tensor:
    """Missing completely at random with a fixed rate ``p`` per entry (``ImageMCARGenerator``), OR NaN mask."""
    return tf.maximum(tf.cast(generator.uniform(tf.shape(x)) < p, x.dtype), nan_mask(x))


def apply_mask(x: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """``x`` with missing entries (mask = 1) set to 0 (NaNs included): the prior network's view of the data."""
    return tf.where(mask > 0.5, tf.zeros_like(x), x)
