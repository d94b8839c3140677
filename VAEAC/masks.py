"""Mask generators for the VAEAC (spec 4.7). Convention: **mask = 1 means missing** (to be inpainted).

All generators draw from a ``tf.random.Generator`` so that training is reproducible and resumable (the generator is
checkpointed with the model).

#### References
[1] Ivanov, Figurnov & Vetrov. Variational Autoencoder with Arbitrary Conditioning. ICLR 2019.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


def nan_mask(x: tf.Tensor) -> tf.Tensor:
    """1 where ``x`` is NaN (genuinely missing values are always treated as unobserved), float ``[B, D]``."""
    return tf.cast(tf.math.is_nan(x), x.dtype)


def top_masker(x: tf.Tensor, generator: tf.random.Generator, p: float = 1.0,
               input_dim_vec: Sequence[int] | None = None) -> tf.Tensor:
    """The original's ``top_masker(p)``: per row draw ``r ~ U(0, p)``, then mask each entry independently w.p. ``r``.

    The result is OR-ed with the NaN mask of ``x``. The [nb] experiments use ``p = 1`` (each row's missing rate is
    uniform on [0, 1], so an entry is missing with marginal probability ``p / 2``).

    Args:
      x: float ``[B, D]`` flat batch.
      generator: the training RNG.
      p: upper bound of the per-row masking rate.
      input_dim_vec: if given, mask per *variable* (a one-hot block is masked whole; the original's ``flatten=True``);
        otherwise per flat column (``flatten=False``, what the [nb] experiments use).

    Returns:
      float ``[B, D]`` mask, 1 = missing.
    """
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
