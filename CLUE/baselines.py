"""The paper's baselines for explaining uncertainty: U-FIDO and input-gradient sensitivity (spec 6.1, 6.2).

* **U-FIDO** [2] (FIDO [1] for uncertainty): per-feature keep probabilities; dropped features are in-filled by a
  VAEAC (prior mean, no gradient). Straight-through Gumbel-sigmoid mask [3] (temperature 0.1), Adam (lr 0.05,
  x0.8 every 5 iterations), 30 iterations on ``sum_batch [a H_ale + e H_epi + (L1w / D) sum_j mask_j] / n_samples``.
* **Global sensitivity**: the dataset mean of ``|d(a U_ale + e U_epi)/dx|``, a per-feature importance.
* **Localized sensitivity**: ``x' = x + step * grad_x(a U_ale + e U_epi)`` (optionally normalized gradient).

[1] Chang et al. "Explaining Image Classifiers by Counterfactual Generation." ICLR 2019.
[2] Antorán et al. "Getting a CLUE: A Method for Explaining Uncertainty Estimates." ICLR 2021, section 5.
[3] Jang, Gu, Poole. "Categorical Reparameterization with Gumbel-Softmax." ICLR 2017.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from CLUE.config import ADAM_BETAS, ADAM_EPS
from common.predictive import input_spec, uncertainties
from common.seeding import philox
from common.validation import check_inputs
from data.datasets import MNIST_NORM

logger = logging.getLogger(__name__)

_GUMBEL_EPS = 1e-20


@dataclass(frozen=True)
class UFIDOConfig:
    """U-FIDO settings (spec 6.1 defaults): mask penalty ``l1_weight / D`` per masked feature, uncertainty weights a, e;
    ``mask_samples`` per iteration (``late_mask_samples`` from ``late_from``); ``lr`` with StepLR (``decay_period``,
    ``gamma``); ``mnist_norm_quirk``: the original ``fit_cat``'s MNIST normalization (spec trap 27)."""

    l1_weight: float = 1.0
    aleatoric: float = 1.0
    epistemic: float = 1.0
    n_iterations: int = 30
    mask_samples: int = 20
    late_mask_samples: int = 10
    late_from: int = 11
    lr: float = 0.05
    decay_period: int = 5
    gamma: float = 0.8
    temperature: float = 0.1
    init_p: float = 0.5
    mnist_norm_quirk: bool = False


@dataclass
class UFIDOResult:
    """U-FIDO explanations of ``n`` points: ``x [n, D]`` (replaced features in-filled by the VAEAC), ``mask [n, D]``
    (1 where replaced, ``1 - round(P)``), ``mask_probs`` (``1 - P``); ``loss``, ``aleatoric``, ``epistemic`` per
    iteration."""

    x: np.ndarray
    mask: np.ndarray
    mask_probs: np.ndarray
    loss: np.ndarray
    aleatoric: np.ndarray
    epistemic: np.ndarray


def _gumbel_sigmoid_keep(p: tf.Tensor, u: tf.Tensor, temperature: float) -> tf.Tensor:
    """Straight-through relaxed Bernoulli(p) sample: forward ``round(s)``, backward ``ds/dp`` [3]."""
    log = lambda t: tf.math.log(tf.maximum(t, _GUMBEL_EPS))  # noqa: E731
    logits = log(p) - log(1.0 - p) + log(u) - log(1.0 - u)
    soft = tf.sigmoid(logits / temperature)
    return soft + tf.stop_gradient(tf.round(soft) - soft)


def _blend_and_score(bnn, vaeac, x, replace, config: UFIDOConfig):
    """In-fills the replaced features (no gradient) and returns (aleatoric [B], epistemic [B]) of the blend."""
    infill = tf.stop_gradient(vaeac.inpaint(x * (1.0 - replace), tf.stop_gradient(replace), n_samples=1,
                                            z_mean=True)[0])
    blended = infill * replace + x * (1.0 - replace)  # the gradient reaches the mask only through this blend
    if config.mnist_norm_quirk:
        blended = (blended - MNIST_NORM[0]) / MNIST_NORM[1]
    _, aleatoric, epistemic, _ = uncertainties(bnn, blended)
    return aleatoric, epistemic, blended


class _MaskStep:
    """U-FIDO's objective and mask gradient for one problem shape, traced once and reused across a sweep's calls;
    cached per (BNN, VAEAC, shape, temperature, normalization), its variables reset by every call."""

    def __init__(self, bnn, vaeac, n: int, d: int, temperature: float, mnist_norm_quirk: bool):
        self.keep_p = tf.Variable(tf.zeros([n, d]), name="keep_p")
        self.x = tf.Variable(tf.zeros([n, d]), trainable=False, name="x")
        self.rng = philox(0)
        static = UFIDOConfig(temperature=temperature, mnist_norm_quirk=mnist_norm_quirk)

        @tf.function
        def loss_and_grad(n_samples, l1, a, e):
            keep_p, x = self.keep_p, self.x.read_value()
            grad = tf.zeros_like(keep_p)
            loss = ale_sum = epi_sum = tf.constant(0.0)
            for _ in tf.range(n_samples):
                with tf.GradientTape() as tape:
                    replace = 1.0 - _gumbel_sigmoid_keep(keep_p, self.rng.uniform([n, d]), temperature)
                    aleatoric, epistemic, _ = _blend_and_score(bnn, vaeac, x, replace, static)
                    obj = tf.reduce_sum(a * aleatoric + e * epistemic
                                        + l1 * tf.reduce_sum(replace, axis=1)) / tf.cast(n_samples, tf.float32)
                grad += tape.gradient(obj, keep_p)
                loss += obj
                ale_sum += tf.reduce_mean(aleatoric)
                epi_sum += tf.reduce_mean(epistemic)
            k = tf.cast(n_samples, tf.float32)
            return loss / n, ale_sum / k, epi_sum / k, grad

        self.loss_and_grad = loss_and_grad


_STEPS: dict[tuple, _MaskStep] = {}  # the last few problems' traced steps (each holds its models alive)
_MAX_STEPS = 4


def _mask_step(bnn, vaeac, n: int, d: int, config: UFIDOConfig) -> _MaskStep:
    key = (id(bnn), id(vaeac), n, d, config.temperature, config.mnist_norm_quirk)
    if key not in _STEPS:
        while len(_STEPS) >= _MAX_STEPS:
            _STEPS.pop(next(iter(_STEPS)))
        _STEPS[key] = _MaskStep(bnn, vaeac, n, d, config.temperature, config.mnist_norm_quirk)
    return _STEPS[key]


def u_fido(bnn, vaeac, x, config: UFIDOConfig | None = None, seed: int = 0) -> UFIDOResult:
    """Learns U-FIDO masks for every row of ``x [n, D]`` in one batch (spec 6.1 ``train_mask``); ``vaeac`` needs
    ``inpaint(x, mask, n_samples, z_mean)`` (mask 1 = missing). UserError if ``x`` does not fit the models."""
    config = config or UFIDOConfig()
    x = tf.constant(check_inputs(x, name="x", **input_spec(bnn, vaeac)))
    n, d = x.shape
    step = _mask_step(bnn, vaeac, n, d, config)
    keep_p = step.keep_p
    keep_p.assign(tf.fill([n, d], config.init_p))
    step.x.assign(x)
    step.rng.reset(philox(seed).state)
    weights = [tf.constant(w, tf.float32) for w in (config.l1_weight / d, config.aleatoric, config.epistemic)]
    m = tf.zeros_like(keep_p)
    v = tf.zeros_like(keep_p)

    losses, ales, epis = [], [], []
    b1, b2 = ADAM_BETAS
    for it in range(config.n_iterations):
        n_samples = config.mask_samples if it < config.late_from else config.late_mask_samples
        loss, ale, epi, grad = step.loss_and_grad(tf.constant(n_samples), *weights)
        lr = config.lr * config.gamma ** (it // config.decay_period)  # StepLR(decay_period, gamma)
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * tf.square(grad)
        t = it + 1
        step_size = (lr / (1 - b1**t)) * m / (tf.sqrt(v) / np.sqrt(1 - b2**t) + ADAM_EPS)
        keep_p.assign(tf.clip_by_value(keep_p - step_size, 0.0, 1.0))
        losses.append(float(loss))
        ales.append(float(ale))
        epis.append(float(epi))
    replace = 1.0 - tf.round(keep_p)
    infill = vaeac.inpaint(x * (1.0 - replace), replace, n_samples=1, z_mean=True)[0]
    explanation = infill * replace + x * (1.0 - replace)
    return UFIDOResult(explanation.numpy(), replace.numpy(), (1.0 - keep_p).numpy(), np.array(losses, np.float32),
                       np.array(ales, np.float32), np.array(epis, np.float32))


def _uncertainty_gradient(bnn, x: tf.Tensor, aleatoric: float, epistemic: float) -> tf.Tensor:
    """``d/dx (a sum U_ale + e sum U_epi)`` ``[B, D]``."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        _, ale, epi, _ = uncertainties(bnn, x)
        obj = aleatoric * tf.reduce_sum(ale) + epistemic * tf.reduce_sum(epi)
    return tape.gradient(obj, x)


def global_sensitivity(bnn, x, aleatoric: float = 1.0, epistemic: float = 1.0, batch_size: int = 1024) -> np.ndarray:
    """Mean absolute input-gradient of the uncertainty over ``x``: a ``[D]`` feature importance (spec 6.2)."""
    x = check_inputs(x, name="x", **input_spec(bnn))
    total = np.zeros(x.shape[1], np.float64)
    for i in range(0, len(x), batch_size):
        grad = _uncertainty_gradient(bnn, tf.constant(x[i:i + batch_size]), aleatoric, epistemic)
        total += np.abs(grad.numpy()).sum(axis=0)
    return (total / len(x)).astype(np.float32)


def localized_sensitivity(bnn, x, step: float, aleatoric: float = 1.0, epistemic: float = 1.0,
                          normalize_grad: bool = False, batch_size: int = 1024) -> np.ndarray:
    """One input-gradient step per row, ``[n, D]`` (spec 6.2 ``input_uncertainty_step``); ``step < 0`` descends."""
    x = check_inputs(x, name="x", **input_spec(bnn))
    out = np.empty_like(x)
    for i in range(0, len(x), batch_size):
        xb = tf.constant(x[i:i + batch_size])
        grad = _uncertainty_gradient(bnn, xb, aleatoric, epistemic)
        if normalize_grad:
            grad = grad / (tf.reduce_mean(tf.abs(grad), axis=1, keepdims=True) + 1e-12)
        out[i:i + batch_size] = (xb + step * grad).numpy()
    return out
