"""Scale-adapted stochastic-gradient HMC (the original's ``H_SA_SGHMC``, spec sections 2.2-2.3), as explicit state.

Samples p(theta | D) ~ exp(-U), U = N * mean NLL + prior energy, each tensor with a prior N(0, 1/lambda). One step,
given the clipped ``grad = d(N * mean NLL)/d theta``, per tensor of n elements:
1. (``resample_prior``) ``lambda ~ Gamma(alpha0 + n/2, rate = beta0 + sum(theta^2)/2)``; ``d = grad + lambda * theta``.
2. Burn-in only, scale adaptation [1, Sec. 4.2] with adaptive tau [2]:
   ``tau <- tau - tau * g^2 / (V + eps) + 1;  r = 1 / (tau + eps);  g <- (1 - r) g + r d;  V <- (1 - r) V + r d^2``.
3. ``M^-1 = 1 / (sqrt(V) + eps)``; (``resample_momentum``) ``v ~ N(0, lr^2 M^-1)``.
4. [3, Sec. 3.3]: ``v <- v - lr^2 M^-1 d - C v + N(0, max(2 lr^2 M^-1 C - lr^4, 1e-16));  theta <- theta + v``
   (``BNN/README.md``, "Sampler bias").
All state is in ``tf.Variable``s (checkpoints resume the exact chain); one seed per chain vectorizes K chains over a
leading axis.

References: [1] Springenberg et al. Bayesian optimization with robust Bayesian neural networks. NeurIPS 2016.
[2] Schaul, Zhang & LeCun. No more pesky learning rates. ICML 2013. [3] Chen, Fox & Guestrin. Stochastic gradient
Hamiltonian Monte Carlo. ICML 2014."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from common.seeding import philox

EPS = 1e-6  # epsilon of the original sampler, used in every division and in the preconditioner


@dataclasses.dataclass(frozen=True)
class SGHMCParams:
    """Sampler hyper-parameters (the original wrappers'): ``lr``, friction ``base_c``, initial ``prior_sigma``, Gamma
    hyper-prior ``alpha0``, ``beta0``, clipping (:class:`GradientClipper`) and the ``- lr^4`` ``noise_correction``."""

    lr: float = 1e-2
    base_c: float = 0.05
    prior_sigma: float = 0.1
    alpha0: float = 10.0
    beta0: float = 10.0
    grad_std_mul: float = 30.0
    grad_buffer_len: int = 1000
    noise_correction: bool = True


class GradientClipper(tf.Module):
    """The wrappers' adaptive global-norm clipping (spec 2.3); ``n_chains``: per-chain state.

    Once more than ``buffer_len`` norms are buffered, ``max_norm = mean + std_mul * std`` (initially 1e20); gradients
    are scaled by ``min(1, max_norm / (norm + 1e-6))``; norms below ``max_norm`` are buffered."""

    def __init__(self, std_mul: float, buffer_len: int, n_chains: int | None = None):
        super().__init__(name="gradient_clipper")
        self.std_mul = float(std_mul)
        self.capacity = int(buffer_len) + 1
        self.n_chains = n_chains
        batch = [] if n_chains is None else [int(n_chains)]
        self.norms = tf.Variable(tf.zeros(batch + [self.capacity]), trainable=False, name="norms")  # ring buffer
        self.head = tf.Variable(tf.zeros(batch, tf.int32), trainable=False, name="head")  # index of the oldest norm
        self.count = tf.Variable(tf.zeros(batch, tf.int32), trainable=False, name="count")
        self.max_norm = tf.Variable(tf.fill(batch, 1e20), trainable=False, name="max_norm")
        self.n_clipped = tf.Variable(tf.zeros(batch, tf.int64), trainable=False, name="n_clipped")

    def global_norm(self, grads: Sequence[tf.Tensor]) -> tf.Tensor:
        """The global gradient norm, `[]`, or per chain `[K]`."""
        if self.n_chains is None:
            return tf.linalg.global_norm(grads)
        return tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(tf.reshape(g, [self.n_chains, -1])), 1) for g in grads]))

    def __call__(self, grads: Sequence[tf.Tensor]) -> tuple[list[tf.Tensor], tf.Tensor]:
        """Returns (clipped gradients, pre-clip global norm) and updates the buffer."""
        full = self.count == self.capacity  # "more than buffer_len entries": the buffer is full
        self.max_norm.assign(tf.where(full, tf.reduce_mean(self.norms, -1)
                                      + self.std_mul * tf.math.reduce_std(self.norms, -1), self.max_norm))
        self.head.assign(tf.where(full, (self.head + 1) % self.capacity, self.head))
        self.count.assign(tf.where(full, self.count - 1, self.count))
        norm = self.global_norm(grads)
        scale = tf.minimum(1.0, self.max_norm / (norm + 1e-6))
        accept = norm < self.max_norm
        slot = tf.one_hot((self.head + self.count) % self.capacity, self.capacity, on_value=True, off_value=False)
        self.norms.assign(tf.where(slot & accept[..., None], norm[..., None], self.norms))
        self.count.assign_add(tf.cast(accept, tf.int32))
        self.n_clipped.assign_add(tf.cast(~accept, tf.int64))
        return [g * _per_chain(scale, g) for g in grads], norm


def _when(flag, update, *args) -> None:
    """Runs ``update(*args)`` if ``flag``: a Python bool in Python, a tensor through ``tf.cond`` (not AutoGraph)."""
    if not tf.is_tensor(flag):
        if bool(flag):
            update(*args)
        return

    def run():
        update(*args)
        return tf.constant(True)

    tf.cond(flag, run, lambda: tf.constant(False))


def _per_chain(value: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """A scalar, or a per-chain vector `[K]` reshaped to broadcast against `like` `[K, ...]`."""
    if value.shape.rank == 0:
        return value
    return tf.reshape(value, [-1] + [1] * (like.shape.rank - 1))


class ScaleAdaptedSGHMC(tf.Module):
    """Scale-adapted SG-HMC over the ``tf.Variable``s ``params`` (moved in place); ``seed``: one, or one per chain."""

    def __init__(self, params: Sequence[tf.Variable], hparams: SGHMCParams = SGHMCParams(),
                 seed: int | Sequence[int] = 0):
        super().__init__(name="sghmc")
        self.hparams = hparams
        self.params = list(params)
        self.n_chains = None if isinstance(seed, (int, np.integer)) else len(seed)
        if self.n_chains is not None:
            bad = [p.name for p in self.params if p.shape.rank < 1 or p.shape[0] != self.n_chains]
            if self.n_chains < 1 or bad:
                raise ValueError(f"{self.n_chains} chain seeds need parameters with a leading axis of that size; "
                                 f"these do not have one: {bad}")
        like = lambda value, name: [tf.Variable(tf.fill(tf.shape(p), value), trainable=False, name=f"{name}_{i}")
                                    for i, p in enumerate(self.params)]
        self.tau = like(1.0, "tau")
        self.g = like(1.0, "g")
        self.v_hat = like(1.0, "v_hat")
        self.momentum = like(0.0, "momentum")
        batch = [] if self.n_chains is None else [self.n_chains]
        self.prior_precision = [tf.Variable(tf.fill(batch, 1.0 / hparams.prior_sigma**2), trainable=False,
                                            name=f"prior_precision_{i}") for i in range(len(self.params))]
        if self.n_chains is None:
            self.rng = philox(seed)
        else:
            self.rngs = [philox(int(s)) for s in seed]
        self.clipper = GradientClipper(hparams.grad_std_mul, hparams.grad_buffer_len, self.n_chains)
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")

    def _normal(self, theta: tf.Variable) -> tf.Tensor:
        """Standard normal draws of a parameter's shape, each chain's slice from its own generator."""
        if self.n_chains is None:
            return self.rng.normal(tf.shape(theta))
        return tf.stack([rng.normal(theta.shape[1:].as_list()) for rng in self.rngs])

    def _resample_prior_precision(self, i: int, theta: tf.Variable) -> None:
        """Step 1: lambda ~ Gamma(alpha0 + n/2, rate beta0 + sum(theta^2)/2), per chain."""
        if self.n_chains is None:
            alpha = self.hparams.alpha0 + 0.5 * float(theta.shape.num_elements())
            beta = self.hparams.beta0 + 0.5 * tf.reduce_sum(tf.square(theta))
            seed = self.rng.make_seeds(1)[:, 0]
            self.prior_precision[i].assign(tf.random.stateless_gamma([], seed, alpha=alpha) / beta)
            return
        alpha = self.hparams.alpha0 + 0.5 * float(theta.shape[1:].num_elements())
        beta = self.hparams.beta0 + 0.5 * tf.reduce_sum(tf.square(tf.reshape(theta, [self.n_chains, -1])), 1)
        gammas = tf.stack([tf.random.stateless_gamma([], rng.make_seeds(1)[:, 0], alpha=alpha) for rng in self.rngs])
        self.prior_precision[i].assign(gammas / beta)

    def _adapt(self, i: int, d: tf.Tensor) -> None:
        """Step 3: the tau, g and V updates of parameter i (tau from the old g and V)."""
        tau, g, v_hat = self.tau[i], self.g[i], self.v_hat[i]
        tau.assign(tau - tau * tf.square(g) / (v_hat + EPS) + 1.0)
        r = 1.0 / (tau + EPS)  # pysgmcmc, the reference code of [1], uses 1 / (tau + 1) of the old tau
        g.assign(g - r * g + r * d)
        v_hat.assign(v_hat - r * v_hat + r * tf.square(d))

    def _resample_momentum(self, i: int, m_inv: tf.Tensor) -> None:
        """Step 5: v ~ N(0, lr^2 M^-1) for parameter i."""
        self.momentum[i].assign(self.hparams.lr * tf.sqrt(m_inv) * self._normal(self.params[i]))

    def apply(self, grads: Sequence[tf.Tensor], burn_in, resample_momentum, resample_prior) -> None:
        """One SG-HMC step given likelihood ``grads``; the flags are bool scalars (Python or tensor)."""
        lr, c = self.hparams.lr, self.hparams.base_c
        for i, (theta, grad) in enumerate(zip(self.params, grads)):
            _when(resample_prior, self._resample_prior_precision, i, theta)
            d = grad + _per_chain(self.prior_precision[i], theta) * theta
            _when(burn_in, self._adapt, i, d)
            m_inv = 1.0 / (tf.sqrt(self.v_hat[i]) + EPS)
            v = self.momentum[i]
            _when(resample_momentum, self._resample_momentum, i, m_inv)
            correction = lr**4 if self.hparams.noise_correction else 0.0
            noise_var = tf.maximum(2.0 * lr**2 * m_inv * c - correction, 1e-16)
            noise = tf.sqrt(noise_var) * self._normal(theta)
            v.assign(v - lr**2 * m_inv * d - c * v + noise)
            theta.assign_add(v)
        self.iterations.assign_add(1)

    def step(self, grads: Sequence[tf.Tensor], burn_in, resample_momentum, resample_prior) -> tf.Tensor:
        """Clips the likelihood gradients (spec 2.3), then ``apply``; returns the pre-clip global norm."""
        clipped, norm = self.clipper(grads)
        self.apply(clipped, burn_in, resample_momentum, resample_prior)
        return norm
