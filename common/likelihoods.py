"""Likelihoods, latent Gaussians and the flat/compact tabular layouts (``common.tabular``) of the VAE and VAEAC.

Mixed likelihood (spec 4.2, ``rms_cat_loglike``): per variable ``-(x_hat - x)^2`` (no 1/2, no log(2 pi)) or
``log softmax(logits)[class]``; the losses divide the ELBO by the number of variables (:func:`vlb_scale`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

# The layout conversions live in common.tabular (NumPy only); re-exported here for the likelihood code.
from common.tabular import (  # noqa: F401
    block_slices,
    check_input_dim_vec,
    compact_mask_to_flat,
    compact_to_flat,
    flat_to_compact,
    input_dim_vec_to_x_dims,
    x_dims_to_input_dim_vec,
)

MIN_ENCODER_SIGMA = 1e-3  # normal_parse_params(., 1e-3) on every encoder / prior network output (spec 4.2)
MIN_DECODER_SIGMA = 1e-2  # decoder sigma floor when the Gaussian likelihood learns its scale (trap 8)

LIKELIHOODS = ("gauss_cat", "gauss", "bernoulli")


# ------------------------------------------------------------------------------------------------ latent Gaussians
def normal_parse_params(params: tf.Tensor, min_sigma: float = MIN_ENCODER_SIGMA) -> tuple[tf.Tensor, tf.Tensor]:
    """Splits ``[B, 2L]`` network output into ``loc = params[:, :L]``, ``scale = max(softplus(params[:, L:]), min)``."""
    loc, raw = tf.split(params, 2, axis=-1)
    return loc, tf.maximum(tf.nn.softplus(raw), min_sigma)


def kl_normal_std_normal(loc: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    """KL(N(loc, scale) || N(0, 1)) = 0.5 (scale^2 + loc^2 - 1 - log scale^2), ``[B, L]`` (Kingma & Welling, App. B)."""
    return 0.5 * (tf.square(scale) + tf.square(loc) - 1.0) - tf.math.log(scale)


def kl_normal_normal(loc_q: tf.Tensor, scale_q: tf.Tensor, loc_p: tf.Tensor, scale_p: tf.Tensor) -> tf.Tensor:
    """Per-dimension KL(N(loc_q, scale_q) || N(loc_p, scale_p)) between diagonal Gaussians, ``[B, L]``."""
    var_ratio = tf.square(scale_q / scale_p)
    return 0.5 * (var_ratio + tf.square((loc_q - loc_p) / scale_p) - 1.0 - tf.math.log(var_ratio))


def normal_log_prob(x: tf.Tensor, loc: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
    """Elementwise log N(x; loc, scale)."""
    return -0.5 * tf.square((x - loc) / scale) - tf.math.log(scale) - 0.5 * np.log(2.0 * np.pi)


# ---------------------------------------------------------------------------------------------------- likelihoods
def _first_argmax_onehot(block: tf.Tensor) -> tf.Tensor:
    """Hard one-hot of the argmax of the last axis; ties go to the lowest index (as torch.max / np.argmax)."""
    k = block.shape[-1]
    is_max = tf.cast(block >= tf.reduce_max(block, axis=-1, keepdims=True), tf.int32)
    # the first maximum is the position where the running count of maxima first reaches 1
    first = tf.logical_and(is_max > 0, tf.cumsum(is_max, axis=-1) == 1)
    return tf.one_hot(tf.argmax(tf.cast(first, tf.int32), axis=-1), k, dtype=block.dtype)


def gauss_cat_log_likelihood(out: tf.Tensor, x: tf.Tensor, input_dim_vec: Sequence[int]) -> tf.Tensor:
    """Per-variable log-likelihood ``[..., n_vars]`` of flat ``x`` under flat output ``out`` (means; K logits per
    categorical block): ``-(out_j - x_j)^2``, or ``log softmax(block)[argmax of x's block, ties: lowest index]``."""
    slices = block_slices(input_dim_vec)
    if out.shape[-1] != slices[-1].stop or x.shape[-1] != slices[-1].stop:
        raise ValueError(f"expected flat tensors with {slices[-1].stop} columns, got {out.shape} and {x.shape}")
    cols = []
    for s in slices:
        if s.stop - s.start == 1:
            cols.append(-tf.square(out[..., s] - x[..., s]))  # [..., 1]
        else:
            target = tf.stop_gradient(_first_argmax_onehot(x[..., s]))  # [..., K]
            log_p = tf.nn.log_softmax(out[..., s], axis=-1)
            cols.append(tf.reduce_sum(target * log_p, axis=-1, keepdims=True))
    return tf.concat(cols, axis=-1)  # [..., n_vars]


def gauss_unit_log_likelihood(out: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """``-(out - x)^2`` elementwise (the original's ``pred_sig=False`` Gaussian: no 1/2, no constant), ``[..., D]``."""
    return -tf.square(out - x)


def gauss_learned_scale_log_likelihood(out: tf.Tensor, x: tf.Tensor,
                                       min_sigma: float = MIN_DECODER_SIGMA) -> tf.Tensor:
    """``log N(x; mu, max(softplus(s), min_sigma))`` elementwise, ``[..., D]``; ``out = [mu, s]`` has width 2D."""
    loc, scale = normal_parse_params(out, min_sigma)
    return normal_log_prob(x, loc, scale)


def bernoulli_log_likelihood(logits: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """``-BCEWithLogits(logits, x)`` elementwise; ``x`` may be continuous in [0, 1] (gray pixels). ``[..., D]``."""
    return -tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=logits)


def log_likelihood(likelihood: str, out: tf.Tensor, x: tf.Tensor, input_dim_vec: Sequence[int],
                   pred_sig: bool = False) -> tf.Tensor:
    """Per-term log-likelihood for a model's ``likelihood`` name: ``[..., n_vars]`` (gauss_cat) or ``[..., D]``."""
    if likelihood == "gauss_cat":
        return gauss_cat_log_likelihood(out, x, input_dim_vec)
    if likelihood == "gauss":
        return gauss_learned_scale_log_likelihood(out, x) if pred_sig else gauss_unit_log_likelihood(out, x)
    if likelihood == "bernoulli":
        return bernoulli_log_likelihood(out, x)
    raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {LIKELIHOODS}")


def vlb_scale(likelihood: str, input_dim_vec: Sequence[int]) -> float:
    """The loss normalizer (spec 4.2): 1/n_variables for gauss_cat, else 1/flat input dim (1/784 for MNIST)."""
    vec = check_input_dim_vec(input_dim_vec)
    return 1.0 / (len(vec) if likelihood == "gauss_cat" else sum(vec))


def decoder_output_dim(likelihood: str, input_dim_vec: Sequence[int], pred_sig: bool = False) -> int:
    """Width of the decoder output: ``2D`` for a Gaussian with learned scale, else ``D``."""
    return sum(check_input_dim_vec(input_dim_vec)) * (2 if likelihood == "gauss" and pred_sig else 1)


# ------------------------------------------------------------------------------------- decoding to the input space
def selective_softmax(out: tf.Tensor, input_dim_vec: Sequence[int], mode: str = "hard",
                      seed: tf.Tensor | None = None) -> tf.Tensor:
    """Flat gauss_cat decoder output ``[..., D]`` -> the flat input space (spec 4.2). Categorical blocks, by ``mode``:
    ``"hard"`` argmax one-hot (no gradient); ``"straight_through"`` hard forward, softmax Jacobian backward (trap 23);
    ``"probs"`` softmax; ``"sample"`` Gumbel-max one-hot plus N(0, 1) on continuous columns (needs a stateless ``seed``
    ``[2]``). Continuous columns are otherwise copied."""
    if mode not in ("hard", "straight_through", "probs", "sample"):
        raise ValueError(f"unknown selective_softmax mode {mode!r}")
    if mode == "sample" and seed is None:
        raise ValueError("mode='sample' needs a stateless seed")
    cols = []
    for i, s in enumerate(block_slices(input_dim_vec)):
        block = out[..., s]
        sub_seed = None if seed is None else tf.random.experimental.stateless_fold_in(seed, i)
        if s.stop - s.start == 1:
            cols.append(block + tf.random.stateless_normal(tf.shape(block), sub_seed) if mode == "sample" else block)
            continue
        if mode == "probs":
            cols.append(tf.nn.softmax(block, axis=-1))
        elif mode == "sample":
            u = tf.random.stateless_uniform(tf.shape(block), sub_seed)
            gumbel = -tf.math.log(-tf.math.log(u + 1e-20) + 1e-20)
            cols.append(_first_argmax_onehot(tf.nn.log_softmax(block, axis=-1) + gumbel))
        else:
            hard = tf.stop_gradient(_first_argmax_onehot(block))
            if mode == "hard":
                cols.append(hard)
            else:
                p = tf.nn.softmax(block, axis=-1)
                cols.append((hard - tf.stop_gradient(p)) + p)
    return tf.concat(cols, axis=-1)
