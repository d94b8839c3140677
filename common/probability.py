"""Uncertainty decompositions of a BNN's posterior predictive (spec section 3), as differentiable TF functions.

A BNN posterior is represented by S weight samples. For an input x, sample s predicts either class probabilities
p_s(y|x) (classification) or a Gaussian N(mu_s, sigma_s^2) (regression). The predictive uncertainty splits into an
aleatoric part (noise the model expects in the data) and an epistemic part (disagreement between samples) [1, 2]:

* categorical (entropies, natural logs, nats), Eq. (4) of [1]:
  ``H[p_bar] = E_s H[p_s] + (H[p_bar] - E_s H[p_s])``, i.e. total = aleatoric + epistemic (mutual information);
* Gaussian (standard deviations), law of total variance, Eq. (5) of [1]:
  ``Var[y] = E_s sigma_s^2 + Var_s mu_s``, i.e. total^2 = aleatoric^2 + epistemic^2.

Differences from the original ``src/probability.py`` (both documented in DEVIATIONS.md):

* the epistemic variance is the *centred* variance ``mean_s (mu_s - mu_bar)^2``; the original's raw-moment form
  ``mean mu^2 - mu_bar^2`` can be slightly negative in float32 and its square root is then NaN;
* the square roots have a finite gradient at 0 (``_sqrt_finite_grad``), so CLUE can differentiate through points where
  all samples agree. Forward values are the exact square roots.

Every function accepts NumPy arrays or tensors and returns float32 tensors; gradients flow to the inputs.

#### References
[1] Depeweg, S., Hernández-Lobato, J. M., Doshi-Velez, F., Udluft, S. "Decomposition of uncertainty in Bayesian deep
    learning for efficient and risk-sensitive learning." ICML 2018.
[2] Antorán, J., Bhatt, U., Adel, T., Weller, A., Hernández-Lobato, J. M. "Getting a CLUE: A method for explaining
    uncertainty estimates." ICLR 2021, Eqs. (1)-(2).
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
    """Entropy of categorical distributions, ``-sum_c p_c log(p_c + eps)``.

    Args:
      probs: float `[..., C]` probabilities.
      eps: added inside the log.

    Returns:
      float32 `[...]` entropies in nats.
    """
    probs = tf.convert_to_tensor(probs, tf.float32)
    return -tf.reduce_sum(probs * tf.math.log(probs + eps), axis=-1)


def decompose_entropy_cat(probs, eps: float = ENTROPY_EPS) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Total, aleatoric and epistemic entropy of a categorical posterior predictive (spec section 3).

    Args:
      probs: float `[S, B, C]` class probabilities of S posterior samples.
      eps: added inside every log (1e-10 in the original).

    Returns:
      (total, aleatoric, epistemic), each float32 `[B]`: H[mean_s p_s], mean_s H[p_s], and their difference (the
      mutual information between y and the weights). total = aleatoric + epistemic exactly.
    """
    probs = tf.convert_to_tensor(probs, tf.float32)
    if probs.shape.rank != 3:
        raise ValueError(f"decompose_entropy_cat expects probs of shape [S, B, C], got {probs.shape}")
    total = entropy_cat(tf.reduce_mean(probs, axis=0), eps)  # [B]
    aleatoric = tf.reduce_mean(entropy_cat(probs, eps), axis=0)  # [S, B] -> [B]
    return total, aleatoric, total - aleatoric


def decompose_var_gauss(mu, sigma) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Total, aleatoric and epistemic variance of a Gaussian posterior predictive (law of total variance).

    Args:
      mu: float `[S, B]` or `[S, B, D]` per-sample predictive means.
      sigma: float, same shape as ``mu``: per-sample predictive standard deviations.

    Returns:
      (total, aleatoric, epistemic) variances, each float32 `[B]` (summed over D when given). The epistemic variance
      is the centred (biased, 1/S) variance of ``mu`` over samples, so it is never negative.
    """
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
    """Total, aleatoric and epistemic standard deviation of a Gaussian posterior predictive (spec section 3).

    Args:
      mu: float `[S, B]` or `[S, B, D]` per-sample predictive means.
      sigma: float, same shape as ``mu``: per-sample predictive standard deviations.

    Returns:
      (total, aleatoric, epistemic), each float32 `[B]`, with total^2 = aleatoric^2 + epistemic^2. Variances are
      summed over D before the square root, as the original's ``sum_dims=True``.
    """
    return tuple(_sqrt_finite_grad(v) for v in decompose_var_gauss(mu, sigma))


def gaussian_log_prob(y, mu, sigma) -> tf.Tensor:
    """Elementwise log N(y; mu, sigma^2), including the -0.5 log(2 pi) constant.

    Args:
      y, mu, sigma: float tensors that broadcast together.

    Returns:
      float32 tensor of the broadcast shape.
    """
    y, mu, sigma = (tf.convert_to_tensor(t, tf.float32) for t in (y, mu, sigma))
    z = (y - mu) / sigma
    return -0.5 * tf.math.log(2.0 * 3.141592653589793) - tf.math.log(sigma) - 0.5 * tf.square(z)
