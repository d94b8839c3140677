"""Gradient-based attention maps from a VAE's latent space (Liu et al. [1]): the original code's map, the paper's
per-dimension formula and the paper's anomaly attention.

Let ``A_b`` ``[7, 7, K]`` be the *pre-ReLU* output of the encoder's second conv layer for image ``b`` (the original's
``encoder.2``, ``ExpVAE.enc_a``) and ``mu(x_b)`` ``[L]`` the latent mean (eval mode, no sampling).

``method="code"`` (the primary map; ``gradcam.py`` + ``test_expVAE.py`` of the original, spec section 3):

1. ``S = sum_b sum_i mu_i(x_b)``; ``G_b = dS / dA_b`` (the batch decouples: ``G_b = sum_i d mu_i(x_b) / dA_b``).
2. Optional (``batch_rms=True``): ``G <- G / (sqrt(mean(G^2)) + 1e-5)`` with the mean over the *whole batch*. The
   original does this; it makes raw map magnitudes depend on the other images (spec trap 5), so it is off by
   default. It cancels exactly in the min-max normalised map.
3. ``alpha_bk = mean_{p,q} G_bkpq``; coarse signed map ``L_b = sum_k alpha_bk A_bk`` ``[7, 7]``.
4. Bilinear upsampling to 28x28 (``tf.image.resize``, half-pixel centres = PyTorch ``align_corners=False``), *then*
   the absolute value: ``M_b = |Up(L_b)|`` (abs, not ReLU, and after upsampling; spec traps 3 and 4).
5. Per-image min-max ``(M - min M) / (max(M - min M) + eps)`` (``normalize=True``; what the original displays).

``method="paper"`` (the paper's per-latent-dimension formula, Eq. 2-3 of [1] as recalled in spec section 3):
``alpha^i_bk = mean_{p,q} d mu_i(x_b) / dA_bkpq``, ``M^i_b = ReLU(sum_k alpha^i_bk A_bk)`` at 7x7,
``M_b = Up(mean_i M^i_b)``, then the same min-max.

``method="anomaly"`` (the paper's anomaly attention, Eq. 4 of [1]; built from the paper's description as summarised
in spec Part 2, P2.1: the official code never implemented it, its ``mu_avg`` / ``logvar_avg`` are dead arguments):

1. Aggregate posterior of the *normal* (inlier) training images ``{x_n}``, per latent dimension: the mixture
   ``q_agg(z) = (1/N) sum_n N(mu(x_n), diag sigma^2(x_n))`` replaced by the Gaussian with its first two moments
   (:func:`aggregate_posterior`): ``mu_agg = mean_n mu(x_n)`` and
   ``sigma_agg^2 = mean_n (sigma^2(x_n) + mu(x_n)^2) - mu_agg^2`` (law of total variance: the mean posterior
   variance plus the spread of the means). The paper asks for "the mean and variance over all normal training
   images" and then for a difference of *normals*; the moment-matched Gaussian is the normal with exactly the
   aggregate posterior's mean and variance. Taking the mean of the variances alone would ignore how far apart the
   training images' codes lie, which is most of the aggregate's spread for an informative latent dimension.
2. The normal difference distribution of the test posterior ``N(mu_x, sigma_x^2)`` and the aggregate, independent:
   ``D_i ~ N(mu_x,i - mu_agg,i, sigma_x,i^2 + sigma_agg,i^2)`` (:func:`difference_distribution`). Sign: test minus
   normal, so that ``u`` points from the normal codes towards the test code (the reader's summary of the paper
   writes normal minus test; under ReLU the sign decides which evidence is kept, under abs it does not matter).
3. A vector ``u`` ``[L]`` drawn from ``D`` per image (the paper draws one; it gives no seed):
   ``u = loc + scale * eps`` with ``eps`` row ``b`` of ``numpy.random.RandomState(seed).standard_normal([B, draws,
   L])`` (:func:`anomaly_noise`; :func:`attention_maps` draws for the whole set at once, so maps do not depend on
   ``batch_size``). ``draws = k > 1`` averages the rectified maps of ``k`` draws; ``draws = 0`` uses ``u = E[D]``
   (no sampling; the signed coarse map is linear in ``u``, so this is also the mean of the *signed* maps).
4. ``u`` is back-propagated as the gradient of the latent mean (Grad-CAM's one-hot class vector replaced by ``u``):
   ``G_b = sum_i u_bi d mu_i(x_b) / dA_b`` (a vector-Jacobian product; equivalently the gradient of
   ``S = sum_i u_i mu_i(x_b)`` with ``u`` held fixed: no gradient flows through ``u``). Then
   ``alpha_bk = mean_{p,q} G_bkpq``, ``L_b = sum_k alpha_bk A_bk``, and by default the paper's Grad-CAM form
   ``M_b = Up(ReLU(L_b))`` (ReLU at 7x7, then upsampling, as ``method="paper"``; ReLU keeps the evidence that moves
   the code *along* ``u``, i.e. away from the normal codes); ``rectify`` / ``upsample_first`` select the code map's
   ``|Up(L_b)|`` instead.

Every map is a function of one image only: no batch norm, no batch-wide statistics (unless ``batch_rms``; the
anomaly map's draws are fixed per row by the seed).

#### References
[1] Liu et al. Towards Visually Explaining Variational Autoencoders. CVPR 2020. arXiv:1911.07389.
[2] Selvaraju et al. Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization. ICCV 2017.
[3] Makhzani et al. Adversarial Autoencoders. ICLR 2016 workshop (the aggregated posterior ``q(z)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

METHODS = ("code", "paper", "anomaly")
RECTIFIERS = ("abs", "relu")
MINMAX_EPS = 1e-12  # guards a constant map (spec trap 6)


def minmax(maps: tf.Tensor) -> tf.Tensor:
    """Per-image min-max normalisation of ``[B, H, W]`` maps into [0, 1] (a constant map becomes all zeros)."""
    low = tf.reduce_min(maps, axis=[1, 2], keepdims=True)
    shifted = maps - low
    return shifted / (tf.reduce_max(shifted, axis=[1, 2], keepdims=True) + MINMAX_EPS)


def _rectify(maps: tf.Tensor, rectify: str) -> tf.Tensor:
    return tf.abs(maps) if rectify == "abs" else tf.nn.relu(maps)


def _upsample(maps: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Bilinear ``[B, h, w]`` -> ``[B, H, W]`` with half-pixel centres (PyTorch's ``align_corners=False``)."""
    return tf.image.resize(maps[..., None], size, method="bilinear")[..., 0]


def target_and_jacobian(model, x: tf.Tensor, per_dimension: bool) -> tuple[tf.Tensor, tf.Tensor]:
    """The target activations and the gradient of the latent means with respect to them.

    Args:
      model: an ``ExpVAE`` (anything with ``enc_a: x -> A`` and ``enc_b: A -> (mu, logvar)``).
      x: float32 ``[B, 784]`` images in [0, 1].
      per_dimension: ``False``: ``dS/dA`` with ``S = sum(mu)``, ``[B, h, w, K]``; ``True``: the per-example Jacobian
        ``d mu_i / dA``, ``[B, L, h, w, K]``.

    Returns:
      ``(A, grad)``: ``A`` ``[B, h, w, K]`` (pre-ReLU) and the gradient or Jacobian.
    """
    a = model.enc_a(tf.convert_to_tensor(x, tf.float32))  # [B, h, w, K]
    with tf.GradientTape() as tape:
        tape.watch(a)  # A is fed into enc_b from outside the tape (spec trap 18)
        mu, _ = model.enc_b(a)  # [B, L]
        score = mu if per_dimension else tf.reduce_sum(mu)
    grad = tape.batch_jacobian(score, a) if per_dimension else tape.gradient(score, a)
    return a, grad


@dataclass(frozen=True)
class AggregatePosterior:
    """The moment-matched Gaussian of the aggregate posterior of a set of images (module docstring, step 1).

    Attributes:
      mean: float32 ``[L]``, ``mu_agg = mean_n mu(x_n)``.
      var: float32 ``[L]``, ``sigma_agg^2 = mean_n (sigma^2(x_n) + mu(x_n)^2) - mu_agg^2``.
      n_images: ``N``, the number of images averaged over.
    """

    mean: np.ndarray
    var: np.ndarray
    n_images: int


def aggregate_posterior(model, x, batch_size: int = 1024) -> AggregatePosterior:
    """The aggregate posterior's mean and variance over images ``x``, encoded in batches.

    Args:
      model: anything with ``enc_a: x -> A`` and ``enc_b: A -> (mu, logvar)`` (an ``ExpVAE``).
      x: float32 ``[N, D]`` images, e.g. all normal (inlier) training images.
      batch_size: images per encoder call (the result does not depend on it beyond float rounding: the sums are
        accumulated in float64).

    Returns:
      :class:`AggregatePosterior` with ``mean = (1/N) sum_n mu_n`` and
      ``var = (1/N) sum_n (exp(logvar_n) + mu_n^2) - mean^2`` (the mixture's variance; clipped at 0 against rounding).

    Raises:
      ValueError: ``x`` is empty.
    """
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
    """The normal difference distribution ``D = z_test - z_agg`` per latent dimension (module docstring, step 2).

    Args:
      mu, logvar: float32 ``[B, L]``, the test images' posteriors ``N(mu, exp(logvar))``.
      aggregate: the normal training images' :class:`AggregatePosterior`.

    Returns:
      ``(loc, var)``, each float32 ``[B, L]``: ``loc = mu - mu_agg``, ``var = exp(logvar) + sigma_agg^2``.
    """
    loc = mu - tf.constant(aggregate.mean, tf.float32)
    return loc, tf.exp(logvar) + tf.constant(aggregate.var, tf.float32)


def anomaly_noise(n: int, draws: int, latent_dim: int, seed: int = 0) -> np.ndarray:
    """Standard-normal ``eps`` ``[n, draws, L]`` (float32) of the draws ``u = loc + scale * eps``: row ``b`` belongs
    to image ``b``, from ``numpy.random.RandomState(seed)``."""
    return np.random.RandomState(seed).standard_normal((n, draws, latent_dim)).astype(np.float32)


def anomaly_directions(mu: tf.Tensor, logvar: tf.Tensor, aggregate: AggregatePosterior,
                       noise: tf.Tensor | np.ndarray | None) -> tf.Tensor:
    """The latent vectors ``u`` ``[B, draws, L]`` back-propagated by the anomaly map (module docstring, step 3).

    Args:
      mu, logvar: float32 ``[B, L]`` test posteriors.
      aggregate: the normal training images' :class:`AggregatePosterior`.
      noise: standard normal ``[B, draws, L]``, or ``None`` for the difference distribution's mean (``draws = 1``).
    """
    loc, var = difference_distribution(mu, logvar, aggregate)
    if noise is None:
        return loc[:, None, :]
    return loc[:, None, :] + tf.sqrt(var)[:, None, :] * tf.convert_to_tensor(noise, tf.float32)


def anomaly_coarse_maps(model, x: tf.Tensor, aggregate: AggregatePosterior, draws: int = 1, seed: int = 0,
                        noise: tf.Tensor | np.ndarray | None = None) -> tf.Tensor:
    """Signed coarse anomaly maps ``L_bd = sum_k alpha_bdk A_bk``, one per draw (module docstring, step 4).

    ``alpha_bd = mean_{p,q} sum_i u_bdi d mu_i(x_b) / dA_b``: ``u_bd`` is fed as the output gradient of ``mu``
    (``tape.gradient(mu, A, output_gradients=u)``), held fixed.

    Args:
      model: an ``ExpVAE`` (``enc_a``/``enc_b`` split at the target layer).
      x: float32 ``[B, D]`` images.
      aggregate: the normal training images' :class:`AggregatePosterior`.
      draws: vectors drawn per image; 0: the difference distribution's mean, no sampling.
      seed: seed of :func:`anomaly_noise` when ``noise`` is not given.
      noise: optional standard normal ``[B, draws, L]`` (overrides ``draws`` and ``seed``).

    Returns:
      float32 ``[B, max(draws, 1), h, w]``.
    """
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
                  noise: tf.Tensor | np.ndarray | None = None) -> tf.Tensor:
    """Attention maps of a batch of images (see the module docstring for the formulas).

    Args:
      model: an ``ExpVAE`` (``enc_a``/``enc_b`` split at the target layer).
      x: float32 ``[B, 784]`` images in [0, 1].
      method: ``"code"`` (the original's computation), ``"paper"`` (per-latent-dimension formula) or ``"anomaly"``
        (the paper's anomaly attention, Eq. 4; needs ``aggregate``).
      normalize: per-image min-max into [0, 1] (as displayed by the original); ``False`` returns raw maps, e.g. for
        image-level scores.
      batch_rms: ``"code"`` only: divide the gradient by its batch-wide RMS + 1e-5, as the original does (couples
        the raw maps of a batch; a no-op after min-max up to rounding).
      rectify: ``"abs"`` or ``"relu"``; ``None``: ``"abs"`` for ``"code"`` (the original), ``"relu"`` for
        ``"anomaly"`` (the paper's Grad-CAM). The paper map always uses ReLU per dimension.
      upsample_first: rectify after (``True``) or before (``False``) upsampling; ``None``: ``True`` for ``"code"``
        (the original), ``False`` for ``"anomaly"`` (the paper's form). Ignored by ``"paper"``.
      aggregate: ``"anomaly"`` only: the normal training images' :func:`aggregate_posterior`.
      draws: ``"anomaly"`` only: vectors drawn from the difference distribution per image, rectified maps averaged;
        0: its mean (no sampling).
      seed: ``"anomaly"`` only: seed of the draws (row ``b`` of :func:`anomaly_noise` belongs to image ``b``).
      noise: ``"anomaly"`` only: explicit standard normal ``[B, draws, L]`` (overrides ``draws`` and ``seed``).

    Returns:
      float32 ``[B, 28, 28]`` maps, non-negative; in [0, 1] with ``normalize``.

    Raises:
      ValueError: unknown ``method`` or ``rectify``; ``"anomaly"`` without ``aggregate`` or with ``draws < 0``.
    """
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
    """:func:`attention_map` over ``x`` ``[N, 784]`` in batches (results do not depend on ``batch_size``: the anomaly
    map's noise is drawn for all ``N`` images at once, :func:`anomaly_noise`)."""
    if kwargs.get("method") == "anomaly" and kwargs.get("noise") is None and kwargs.get("draws", 1) > 0:
        latent_dim = int(np.shape(kwargs["aggregate"].mean)[-1]) if kwargs.get("aggregate") is not None else 0
        kwargs["noise"] = anomaly_noise(len(x), kwargs.pop("draws", 1), latent_dim, kwargs.pop("seed", 0))
    noise = kwargs.pop("noise", None)
    parts = [attention_map(model, x[start:start + batch_size],
                           noise=None if noise is None else noise[start:start + batch_size], **kwargs)
             for start in range(0, len(x), batch_size)]
    return tf.concat(parts, axis=0)  # [N, 28, 28]
