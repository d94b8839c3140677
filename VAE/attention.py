"""Gradient-based attention maps from a VAE's latent space (Liu et al. [1]), as the original code computes them.

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

Both maps are functions of one image only: no batch norm, no batch-wide statistics (unless ``batch_rms``).

#### References
[1] Liu et al. Towards Visually Explaining Variational Autoencoders. CVPR 2020. arXiv:1911.07389.
[2] Selvaraju et al. Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization. ICCV 2017.
"""

from __future__ import annotations

import tensorflow as tf

METHODS = ("code", "paper")
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


def attention_map(model, x: tf.Tensor, method: str = "code", normalize: bool = True, batch_rms: bool = False,
                  rectify: str = "abs", upsample_first: bool = True) -> tf.Tensor:
    """Attention maps of a batch of images (see the module docstring for the formulas).

    Args:
      model: an ``ExpVAE`` (``enc_a``/``enc_b`` split at the target layer).
      x: float32 ``[B, 784]`` images in [0, 1].
      method: ``"code"`` (the original's computation) or ``"paper"`` (per-latent-dimension formula).
      normalize: per-image min-max into [0, 1] (as displayed by the original); ``False`` returns raw maps, e.g. for
        image-level scores.
      batch_rms: ``"code"`` only: divide the gradient by its batch-wide RMS + 1e-5, as the original does (couples
        the raw maps of a batch; a no-op after min-max up to rounding).
      rectify: ablation of the code map: ``"abs"`` (the original) or ``"relu"`` (standard Grad-CAM). The paper map
        always uses ReLU per dimension.
      upsample_first: ablation of the code map: ``True`` (the original) rectifies after upsampling, ``False`` before.

    Returns:
      float32 ``[B, 28, 28]`` maps, non-negative; in [0, 1] with ``normalize``.

    Raises:
      ValueError: unknown ``method`` or ``rectify``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown attention method {method!r}; choose one of {METHODS}")
    if rectify not in RECTIFIERS:
        raise ValueError(f"unknown rectifier {rectify!r}; choose one of {RECTIFIERS}")
    x = tf.convert_to_tensor(x, tf.float32)
    side = int(round(int(x.shape[-1]) ** 0.5))
    size = (side, side)
    a, grad = target_and_jacobian(model, x, per_dimension=(method == "paper"))
    if method == "code":
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
    """:func:`attention_map` over ``x`` ``[N, 784]`` in batches (results do not depend on ``batch_size``)."""
    parts = [attention_map(model, x[start:start + batch_size], **kwargs) for start in range(0, len(x), batch_size)]
    return tf.concat(parts, axis=0)  # [N, 28, 28]
