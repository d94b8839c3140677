"""Uncertainty decompositions of a BNN's posterior predictive (spec section 3), as differentiable TF functions.

For S samples p_s(y|x) or N(mu_s, sigma_s^2), total = aleatoric + epistemic [1, 2]: ``H[p_bar] = E_s H[p_s] +
(H[p_bar] - E_s H[p_s])`` in nats (Eq. 4 of [1]), ``Var[y] = E_s sigma_s^2 + Var_s mu_s`` (Eq. 5 of [1]).

[1] Depeweg et al. "Decomposition of uncertainty in Bayesian deep learning ..." ICML 2018.
[2] Antorán et al. "Getting a CLUE: A method for explaining uncertainty estimates." ICLR 2021, Eqs. (1)-(2).
"""

from __future__ import annotations

import tensorflow as tf

ENTROPY_EPS = 1e-10  # added inside every log, as in the original
_SQRT_GRAD_FLOOR = 1e-12  # variance below which the square root's gradient is evaluated at this value instead


@tf.custom_gradient
def _sqrt_finite_grad(x: tf.Tensor):
    """sqrt(x) with gradient 0.5 / sqrt(max(x, 1e-12)): exact forward, no inf * 0 = NaN in the backward pass."""
    y = tf.sqrt(x)

    def grad(upstream):
        return upstream * 0.5 * tf.math.rsqrt(tf.maximum(x, _SQRT_GRAD_FLOOR))

    return y, grad


def entropy_cat(probs, eps: float = ENTROPY_EPS) -> tf.Tensor:
    """Entropy ``-sum_c p_c log(p_c + eps)`` in nats of probabilities ``[..., C]``: float32 ``[...]``."""
    probs = tf.convert_to_tensor(probs, tf.float32)
    return -tf.reduce_sum(probs * tf.math.log(probs + eps), axis=-1)


def decompose_entropy_cat(probs, eps: float = ENTROPY_EPS) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(total, aleatoric, epistemic) entropies ``[B]`` of probabilities ``[S, B, C]``: H[mean_s p_s], mean_s H[p_s]
    and their difference (the mutual information), so total = aleatoric + epistemic exactly."""
    probs = tf.convert_to_tensor(probs, tf.float32)
    if probs.shape.rank != 3:
        raise ValueError(f"decompose_entropy_cat expects probs of shape [S, B, C], got {probs.shape}")
    total = entropy_cat(tf.reduce_mean(probs, axis=0), eps)  # [B]
    aleatoric = tf.reduce_mean(entropy_cat(probs, eps), axis=0)  # [S, B] -> [B]
    return total, aleatoric, total - aleatoric


def decompose_var_gauss(mu, sigma) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(total, aleatoric, epistemic) variances ``[B]`` of means and stds ``[S, B]`` or ``[S, B, D]`` (summed over D),
    by the law of total variance; epistemic is the centered (1/S) variance of ``mu``, never negative."""
    mu = tf.convert_to_tensor(mu, tf.float32)
    sigma = tf.convert_to_tensor(sigma, tf.float32)
    if mu.shape.rank not in (2, 3) or mu.shape != sigma.shape:
        raise ValueError(f"expected mu and sigma of equal shape [S, B] or [S, B, D], got {mu.shape} and {sigma.shape}")
    aleatoric = tf.reduce_mean(tf.square(sigma), axis=0)  # [B(, D)]
    epistemic = tf.reduce_mean(tf.square(mu - tf.reduce_mean(mu, axis=0)), axis=0)  # [B(, D)]
    if mu.shape.rank == 3:
        aleatoric = tf.reduce_sum(aleatoric, axis=-1)
        epistemic = tf.reduce_sum(epistemic, axis=-1)
    return aleatoric + epistemic, aleatoric, epistemic


def decompose_std_gauss(mu, sigma) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Square roots of :func:`decompose_var_gauss` (total^2 = aleatoric^2 + epistemic^2; summed over D first, as the
    original's ``sum_dims=True``), with a finite gradient at 0."""
    return tuple(_sqrt_finite_grad(v) for v in decompose_var_gauss(mu, sigma))


def gaussian_log_prob(y, mu, sigma) -> tf.Tensor:
    """Elementwise log N(y; mu, sigma^2), including -0.5 log(2 pi); float32, of the broadcast shape."""
    y, mu, sigma = (tf.convert_to_tensor(t, tf.float32) for t in (y, mu, sigma))
    z = (y - mu) / sigma
    return -0.5 * tf.math.log(2.0 * 3.141592653589793) - tf.math.log(sigma) - 0.5 * tf.square(z)
