"""Gradient-based attention maps from a VAE's latent space (Liu et al. [1]): the original code's map, the paper's
per-dimension formula and the paper's anomaly attention.

``A_b`` ``[7, 7, K]`` is the pre-ReLU output of the encoder's second conv (``ExpVAE.enc_a``) for image ``b``,
``mu(x_b)`` ``[L]`` the latent mean (eval mode), ``Up`` bilinear upsampling (half-pixel centers); ``normalize`` min-max
normalizes each map.
* ``"code"`` (the original's ``gradcam.py``, spec section 3): ``G_b = d(sum_i mu_i(x_b)) / dA_b`` (``batch_rms``:
  divided by its batch-wide RMS + 1e-5, spec trap 5), ``alpha_bk = mean_{p,q} G_bkpq``, ``L_b = sum_k alpha_bk A_bk``,
  ``M_b = |Up(L_b)|`` (spec traps 3, 4).
* ``"paper"`` (Eq. 2-3 of [1]): ``alpha^i_bk = mean_{p,q} d mu_i(x_b) / dA_bkpq``,
  ``M_b = Up(mean_i ReLU(sum_k alpha^i_bk A_bk))``.
* ``"anomaly"`` (Eq. 4 of [1], spec P2.1): the normal training images' moment-matched aggregate posterior
  ``mu_agg = mean_n mu(x_n)``, ``sigma_agg^2 = mean_n (sigma^2(x_n) + mu(x_n)^2) - mu_agg^2`` [3]; per image
  ``u ~ D = N(mu_x - mu_agg, sigma_x^2 + sigma_agg^2)`` (test minus normal; ``draws = 0``: ``u = E[D]``),
  back-propagated as the gradient of ``mu``: ``G_b = sum_i u_bi d mu_i(x_b) / dA_b``, then ``M_b = Up(ReLU(L_b))``.

References: [1] Liu et al. Towards Visually Explaining VAEs. CVPR 2020. [2] Selvaraju et al. Grad-CAM. ICCV 2017.
[3] Makhzani et al. Adversarial Autoencoders. ICLR 2016 workshop."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

METHODS = ("code", "paper", "anomaly")
RECTIFIERS = ("abs", "relu")
MINMAX_EPS = 1e-12  # guards a constant map (spec trap 6)


def minmax(maps: tf.Tensor) -> tf.Tensor:
    """Per-image min-max normalization of ``[B, H, W]`` maps into [0, 1] (a constant map becomes zeros)."""
    low = tf.reduce_min(maps, axis=[1, 2], keepdims=True)
    shifted = maps - low
    return shifted / (tf.reduce_max(shifted, axis=[1, 2], keepdims=True) + MINMAX_EPS)


def _rectify(maps: tf.Tensor, rectify: str) -> tf.Tensor:
    return tf.abs(maps) if rectify == "abs" else tf.nn.relu(maps)


def _upsample(maps: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Bilinear ``[B, h, w]`` -> ``[B, H, W]``, half-pixel centers (PyTorch's ``align_corners=False``)."""
    return tf.image.resize(maps[..., None], size, method="bilinear")[..., 0]


def target_and_jacobian(model, x: tf.Tensor, per_dimension: bool) -> tuple[tf.Tensor, tf.Tensor]:
    """``A`` ``[B, h, w, K]`` and ``d sum(mu) / dA``, or (``per_dimension``) ``d mu_i / dA`` ``[B, L, h, w, K]``."""
    a = model.enc_a(tf.convert_to_tensor(x, tf.float32))  # [B, h, w, K]
    with tf.GradientTape() as tape:
        tape.watch(a)  # A is fed into enc_b from outside the tape (spec trap 18)
        mu, _ = model.enc_b(a)  # [B, L]
        score = mu if per_dimension else tf.reduce_sum(mu)
    grad = tape.batch_jacobian(score, a) if per_dimension else tape.gradient(score, a)
    return a, grad


@dataclass(frozen=True)
class AggregatePosterior:
    """Moment-matched aggregate posterior: ``mean`` and ``var`` ``[L]`` over ``n_images`` images."""

    mean: np.ndarray
    var: np.ndarray
    n_images: int


def aggregate_posterior(model, x, batch_size: int = 1024) -> AggregatePosterior:
    """The :class:`AggregatePosterior` of images ``x`` ``[N, D]`` (float64 sums; empty ``x``: ``ValueError``)."""
    if len(x) == 0:
        raise ValueError("aggregate_posterior needs at least one image")
    first = second = 0.0
    for start in range(0, len(x), batch_size):
        mu, logvar = model.enc_b(model.enc_a(tf.convert_to_tensor(x[start:start + batch_size], tf.float32)))
        mu, var = mu.numpy().astype(np.float64), np.exp(logvar.numpy().astype(np.float64))
        first, second = first + mu.sum(0), second + (var + mu ** 2).sum(0)
    mean = first / len(x)
    var = np.maximum(second / len(x) - mean ** 2, 0.0)
    return AggregatePosterior(mean.astype(np.float32), var.astype(np.float32), len(x))


def difference_distribution(mu: tf.Tensor, logvar: tf.Tensor, aggregate: AggregatePosterior):
    """``(loc, var)`` ``[B, L]`` of ``D``: ``loc = mu - mu_agg``, ``var = exp(logvar) + sigma_agg^2``."""
    loc = mu - tf.constant(aggregate.mean, tf.float32)
    return loc, tf.exp(logvar) + tf.constant(aggregate.var, tf.float32)


def anomaly_noise(n: int, draws: int, latent_dim: int, seed: int = 0) -> np.ndarray:
    """Standard-normal ``eps`` ``[n, draws, L]`` from ``RandomState(seed)``; row ``b`` is image ``b``'s."""
    return np.random.RandomState(seed).standard_normal((n, draws, latent_dim)).astype(np.float32)


def anomaly_directions(mu: tf.Tensor, logvar: tf.Tensor, aggregate: AggregatePosterior,
                       noise: tf.Tensor | np.ndarray | None) -> tf.Tensor:
    """``u = loc + sqrt(var) * noise`` ``[B, draws, L]``; ``noise=None``: ``u = loc`` (one draw)."""
    loc, var = difference_distribution(mu, logvar, aggregate)
    if noise is None:
        return loc[:, None, :]
    return loc[:, None, :] + tf.sqrt(var)[:, None, :] * tf.convert_to_tensor(noise, tf.float32)


def anomaly_coarse_maps(model, x: tf.Tensor, aggregate: AggregatePosterior, draws: int = 1, seed: int = 0,
                        noise: tf.Tensor | np.ndarray | None = None) -> tf.Tensor:
    """Signed coarse anomaly maps ``L_bd = sum_k alpha_bdk A_bk`` ``[B, max(draws, 1), h, w]``; ``noise``
    ``[B, draws, L]`` overrides ``draws`` and ``seed``."""
    a = model.enc_a(tf.convert_to_tensor(x, tf.float32))  # [B, h, w, K]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(a)
        mu, logvar = model.enc_b(a)  # [B, L]
    if noise is None and draws > 0:
        noise = anomaly_noise(int(a.shape[0]), draws, int(mu.shape[-1]), seed)
    if noise is not None and tuple(noise.shape) != (a.shape[0], noise.shape[1], mu.shape[-1]):
        raise ValueError(f"noise must be [B, draws, L] = [{a.shape[0]}, draws, {mu.shape[-1]}], got {noise.shape}")
    u = anomaly_directions(mu, logvar, aggregate, noise)  # [B, draws, L]
    coarse = []
    for d in range(int(u.shape[1])):
        grad = tape.gradient(mu, a, output_gradients=u[:, d])  # [B, h, w, K]
        coarse.append(tf.einsum("bhwk,bk->bhw", a, tf.reduce_mean(grad, axis=[1, 2])))
    del tape
    return tf.stack(coarse, axis=1)


def attention_map(model, x: tf.Tensor, method: str = "code", normalize: bool = True, batch_rms: bool = False,
                  rectify: str | None = None, upsample_first: bool | None = None,
                  aggregate: AggregatePosterior | None = None, draws: int = 1, seed: int = 0,
                  noise: tf.Tensor | np.ndarray | None = None, reverse: bool = False) -> tf.Tensor:
    """Attention maps ``[B, 28, 28]`` (non-negative) of images ``x`` ``[B, 784]`` by ``method`` (module docstring).

    Args:
      rectify: ``"abs"`` or ``"relu"``; ``None``: ``"abs"`` for ``"code"``, ``"relu"`` for ``"anomaly"``.
      upsample_first: rectify after upsampling; ``None``: ``True`` for ``"code"``, ``False`` for ``"anomaly"``.
      aggregate, draws, seed, noise: ``"anomaly"`` only (:func:`aggregate_posterior`, :func:`anomaly_coarse_maps`).
      reverse: ``"anomaly"`` only: back-propagate ``-u`` (the spec's ``aggregate - test`` reading of D; the map is
        linear in ``u``, so this negates the signed coarse map)."""
    if method not in METHODS:
        raise ValueError(f"unknown attention method {method!r}; choose one of {METHODS}")
    if rectify not in RECTIFIERS + (None,):
        raise ValueError(f"unknown rectifier {rectify!r}; choose one of {RECTIFIERS}")
    if method == "anomaly" and (aggregate is None or draws < 0):
        raise ValueError("method 'anomaly' needs aggregate=aggregate_posterior(model, normal training images) and "
                         f"draws >= 0 (got draws={draws})")
    x = tf.convert_to_tensor(x, tf.float32)
    side = int(round(int(x.shape[-1]) ** 0.5))
    size = (side, side)
    if method == "anomaly":
        coarse = anomaly_coarse_maps(model, x, aggregate, draws, seed, noise)  # [B, draws, h, w]
        coarse = -coarse if reverse else coarse
        n, k = int(coarse.shape[0]), int(coarse.shape[1])
        flat = tf.reshape(coarse, [n * k, *coarse.shape[2:]])
        rectify, upsample_first = rectify or "relu", bool(upsample_first)  # None: the paper's ReLU, then upsampling
        maps = (_rectify(_upsample(flat, size), rectify) if upsample_first
                else _upsample(_rectify(flat, rectify), size))
        maps = tf.reduce_mean(tf.reshape(maps, [n, k, *size]), axis=1)
        return minmax(maps) if normalize else maps
    a, grad = target_and_jacobian(model, x, per_dimension=(method == "paper"))
    if method == "code":
        rectify = rectify or "abs"
        upsample_first = True if upsample_first is None else upsample_first
        if batch_rms:
            grad = grad / (tf.sqrt(tf.reduce_mean(tf.square(grad))) + 1e-5)
        alpha = tf.reduce_mean(grad, axis=[1, 2])  # [B, K]
        coarse = tf.einsum("bhwk,bk->bhw", a, alpha)  # [B, h, w], signed
        maps = (_rectify(_upsample(coarse, size), rectify) if upsample_first
                else _upsample(_rectify(coarse, rectify), size))
    else:
        alpha = tf.reduce_mean(grad, axis=[2, 3])  # [B, L, K]
        per_dim = tf.nn.relu(tf.einsum("bhwk,bik->bihw", a, alpha))  # [B, L, h, w]
        maps = _upsample(tf.reduce_mean(per_dim, axis=1), size)  # [B, H, W]
    return minmax(maps) if normalize else maps


def attention_maps(model, x, batch_size: int = 128, **kwargs) -> tf.Tensor:
    """:func:`attention_map` over ``x`` ``[N, 784]`` in batches (the anomaly noise is drawn for all ``N`` at once)."""
    if kwargs.get("method") == "anomaly" and kwargs.get("noise") is None and kwargs.get("draws", 1) > 0:
        latent_dim = int(np.shape(kwargs["aggregate"].mean)[-1]) if kwargs.get("aggregate") is not None else 0
        kwargs["noise"] = anomaly_noise(len(x), kwargs.pop("draws", 1), latent_dim, kwargs.pop("seed", 0))
    noise = kwargs.pop("noise", None)
    parts = [attention_map(model, x[start:start + batch_size],
                           noise=None if noise is None else noise[start:start + batch_size], **kwargs)
             for start in range(0, len(x), batch_size)]
    return tf.concat(parts, axis=0)  # [N, 28, 28]
