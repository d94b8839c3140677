"""δ-CLUE: diverse sets of K CLUEs per point, each inside a δ-ball around the point's latent code [1, 2].

For x0 with encoder mean z0, K codes z_1..z_K with ``||z_k - z0|| <= δ`` (L2 or L∞) minimize, per point,

    J_set(z_1..z_K) = (1/K) sum_k J(z_k) - w_div * D(z_1..z_K),

J being CLUE's objective (spec 5.3, latent-L2 term towards z0) and D the mean pairwise L2 distance of the decoded
inputs (``diversity_space="x"``) or codes (``"z"``). Each Adam step is followed by the Euclidean projection onto
the ball; CLUE's stopping rule (spec 5.5) applies to each point's J_set. With K = 1, δ = inf, ``init="center"``
and ``w_div = 0`` this is plain CLUE, step for step.

[1] Ley, Bhatt, Weller. "δ-CLUE: Diverse Sets of Explanations for Uncertainty Estimates." ICLR 2021 workshop on
    Security and Safety in Machine Learning Systems; arXiv:2104.06323.
[2] Antorán et al. "Getting a CLUE: A Method for Explaining Uncertainty Estimates." ICLR 2021.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from CLUE.config import CLUEConfig
from CLUE.explainer import CLUE, adam_step, freeze
from common.errors import UserError
from common.io import save_npz
from common.predictive import input_spec, uncertainties
from common.validation import check_inputs

NORMS = ("l2", "linf")
INITS = ("uniform", "normal", "center")
SPACES = ("x", "z")
_DIST_EPS = 1e-12  # inside the square root of the diversity term: finite gradient where two codes coincide


def check_options(n_explanations: int, delta: float | None, norm: str = "l2", diversity_weight: float = 0.0,
                  init: str = "uniform", diversity_space: str = "x", init_scale: float = 1.0) -> None:
    """Raises :class:`UserError` naming the flag (``--diverse``, ...) and the field for a bad δ-CLUE setting."""
    if isinstance(n_explanations, bool) or not isinstance(n_explanations, (int, np.integer)) or n_explanations < 1:
        raise UserError(f"--diverse (n_explanations) must be a whole number >= 1, the explanations per point; got "
                        f"{n_explanations!r}")
    if delta is not None and (not isinstance(delta, (int, float)) or math.isnan(delta) or delta <= 0):
        raise UserError(f"--delta (delta) must be > 0, the radius of the latent ball around z0 (inf or none: "
                        f"unconstrained); got {delta!r}")
    if norm not in NORMS:
        raise UserError(f"--delta-norm (norm) must be one of {', '.join(NORMS)}; got {norm!r}")
    if not isinstance(diversity_weight, (int, float)) or not diversity_weight >= 0 or math.isinf(diversity_weight):
        raise UserError(f"--diversity-weight (diversity_weight) must be a finite number >= 0; got "
                        f"{diversity_weight!r}")
    if init not in INITS:
        raise UserError(f"--diverse-init (init) must be one of {', '.join(INITS)}; got {init!r}")
    if diversity_space not in SPACES:
        raise UserError(f"diversity_space must be 'x' (decoded inputs) or 'z' (latents); got {diversity_space!r}")
    if not init_scale > 0 or math.isinf(init_scale):
        raise UserError(f"init_scale must be a finite number > 0; got {init_scale!r}")


@dataclass(frozen=True)
class DiverseConfig:
    """Settings of a δ-CLUE search; ``clue.batch_size`` counts points (each runs as K rows).

    ``delta`` None or inf: unconstrained (start radius ``init_scale``). ``init``: ``"uniform"`` over the ball of radius
    ``init_scale * delta``; ``"normal"``: N(0, s^2 I), ``s = init_scale * delta / sqrt(L)`` (L2) or ``/ 2`` (L∞),
    projected; ``"center"``: all K at z0. ``diversity_weight`` 0: K independent restarts inside the ball."""

    clue: CLUEConfig = field(default_factory=CLUEConfig)
    n_explanations: int = 10
    delta: float | None = 1.0
    norm: str = "l2"
    diversity_weight: float = 0.0
    diversity_space: str = "x"
    init: str = "uniform"
    init_scale: float = 1.0
    seed: int = 0

    def __post_init__(self):
        check_options(self.n_explanations, self.delta, self.norm, self.diversity_weight, self.init,
                      self.diversity_space, self.init_scale)

    @property
    def radius(self) -> float:
        """The ball's radius, ``inf`` when unconstrained."""
        return math.inf if self.delta is None else float(self.delta)


def project(z: tf.Tensor, center: tf.Tensor, delta: float, norm: str = "l2") -> tf.Tensor:
    """Euclidean projection of each row of ``z [N, L]`` onto the ``norm`` ball of radius ``delta`` around ``center``."""
    if math.isinf(delta):
        return z
    d = z - center
    if norm == "linf":
        return center + tf.clip_by_value(d, -delta, delta)
    length = tf.norm(d, axis=1, keepdims=True)  # [N, 1]
    return center + d * tf.minimum(1.0, delta / tf.maximum(length, 1e-12))


def ball_distance(z: np.ndarray, center: np.ndarray, norm: str = "l2") -> np.ndarray:
    """``||z - center||`` along the last axis, in the ball's norm."""
    d = np.asarray(z, np.float64) - np.asarray(center, np.float64)
    return np.abs(d).max(axis=-1) if norm == "linf" else np.sqrt((d ** 2).sum(axis=-1))


def initial_latents(z0: np.ndarray, config: DiverseConfig, rng: np.random.Generator) -> np.ndarray:
    """K starting codes per point, float32 ``[n * K, L]`` (point-major: rows ``i * K .. i * K + K - 1``)."""
    k, dim = config.n_explanations, z0.shape[1]
    center = np.repeat(np.asarray(z0, np.float64), k, axis=0)  # [n * K, L]
    if config.init == "center":
        return center.astype(np.float32)
    delta = config.radius
    r = config.init_scale * (1.0 if math.isinf(delta) else delta)
    if config.init == "uniform" and config.norm == "linf":
        d = rng.uniform(-r, r, size=center.shape)
    elif config.init == "uniform":  # uniform in the L2 ball: uniform direction, radius r * U^(1/L)
        g = rng.standard_normal(center.shape)
        d = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        d *= r * rng.uniform(size=(len(center), 1)) ** (1.0 / dim)
    else:
        d = rng.standard_normal(center.shape) * (r / math.sqrt(dim) if config.norm == "l2" else r / 2)
    z = project(tf.constant(center + d), tf.constant(center), delta, config.norm).numpy()
    return z.astype(np.float32)


def pairwise_diversity(v: tf.Tensor) -> tf.Tensor:
    """Mean pairwise L2 distance within each set of ``v`` ``[n, K, F]``: ``[n]`` (0 for K = 1)."""
    k = v.shape[1]
    if k == 1:
        return tf.zeros(tf.shape(v)[:1], v.dtype)
    sq = tf.reduce_sum(tf.square(v), axis=-1)  # [n, K]
    gram = tf.matmul(v, v, transpose_b=True)  # [n, K, K]
    d2 = tf.maximum(sq[:, :, None] + sq[:, None, :] - 2.0 * gram, 0.0)
    off = 1.0 - tf.eye(k, dtype=v.dtype)  # the diagonal (a code and itself) is left out
    return tf.reduce_sum(tf.sqrt(d2 + _DIST_EPS) * off, axis=[1, 2]) / (k * (k - 1))


def _pairwise_numpy(v: np.ndarray) -> np.ndarray:
    """Exact mean pairwise L2 distance within each set of ``v`` ``[n, K, F]`` (reported metric)."""
    k = v.shape[1]
    if k == 1:
        return np.zeros(len(v))
    d = np.sqrt(((v[:, :, None].astype(np.float64) - v[:, None]) ** 2).sum(-1))  # [n, K, K]
    return d.sum(axis=(1, 2)) / (k * (k - 1))


@dataclass
class DiverseResult:
    """δ-CLUE sets of ``n`` points, K explanations each.

    ``x [n, K, D]``, ``z [n, K, L]``, ``x0 [n, D]``, ``z0 [n, L]`` (the centers); ``uncertainty``, ``l1_distance``
    (to x0) and ``latent_distance`` (ball norm) ``[n, K]``; ``diversity_x`` / ``diversity_z`` ``[n]``; ``cost [T, n]``
    (set objective, frozen); ``predicted_class [n, K]`` and ``original_class [n]`` (classification, else None)."""

    x: np.ndarray
    z: np.ndarray
    x0: np.ndarray
    z0: np.ndarray
    uncertainty: np.ndarray
    uncertainty_before: np.ndarray
    l1_distance: np.ndarray
    latent_distance: np.ndarray
    diversity_x: np.ndarray
    diversity_z: np.ndarray
    cost: np.ndarray
    stop_step: np.ndarray
    freeze_index: np.ndarray
    predicted_class: np.ndarray | None = None
    original_class: np.ndarray | None = None
    delta: float = math.inf
    norm: str = "l2"
    seconds: float = 0.0

    @property
    def n_classes_reached(self) -> np.ndarray | None:
        """``[n]`` distinct predicted classes among each point's K explanations (classification)."""
        if self.predicted_class is None:
            return None
        return np.array([len(np.unique(row)) for row in self.predicted_class])

    @property
    def fraction_changed(self) -> np.ndarray | None:
        """``[n]`` fraction of each point's K explanations predicted differently from x0 (classification)."""
        if self.predicted_class is None:
            return None
        return (self.predicted_class != self.original_class[:, None]).mean(axis=1)

    @property
    def best(self) -> np.ndarray:
        """``[n]`` index of each set's least uncertain explanation."""
        return np.argmin(self.uncertainty, axis=1)

    def summary(self) -> dict[str, float]:
        """Means over the points of the set metrics (``uncertainty_best``: the least uncertain of each set)."""
        rows = np.arange(len(self.x))
        out = {"n_explained": int(len(self.x)), "n_explanations": int(self.x.shape[1]),
               "delta": None if math.isinf(self.delta) else float(self.delta), "norm": self.norm,
               "uncertainty_before": float(self.uncertainty_before.mean()),
               "uncertainty_after": float(self.uncertainty.mean()),
               "uncertainty_best": float(self.uncertainty[rows, self.best].mean()),
               "fraction_reduced": float(np.mean(self.uncertainty < self.uncertainty_before[:, None])),
               "l1_distance": float(self.l1_distance.mean()), "diversity_x": float(self.diversity_x.mean()),
               "diversity_z": float(self.diversity_z.mean()),
               "max_latent_distance": float(self.latent_distance.max()), "seconds": float(self.seconds)}
        if self.predicted_class is not None:
            out["n_classes_reached"] = float(self.n_classes_reached.mean())
            out["fraction_changed"] = float(self.fraction_changed.mean())
        return out

    def save(self, path, **extra: np.ndarray) -> None:
        """Writes every array (and ``extra`` ones) to an ``.npz`` atomically."""
        arrays = {k: v for k, v in dataclasses.asdict(self).items() if isinstance(v, np.ndarray)}
        save_npz(path, compressed=True, **arrays, **extra, delta=np.float64(self.delta),
                 seconds=np.float64(self.seconds))


class DeltaCLUE:
    """Diverse sets of CLUEs inside δ-balls for any model with CLUE's ``predict_samples`` contract and a generator."""

    def __init__(self, bnn, generator, config: DiverseConfig | None = None):
        self.bnn, self.generator = bnn, generator
        self.config = config or DiverseConfig()
        self.clue = CLUE(bnn, generator, self.config.clue)  # its objective, encoder and uncertainty
        self._step = tf.function(self._step_impl, reduce_retracing=True)

    def _step_impl(self, z, m, v, t, x0, z0, cond_mask, desired):
        """One projected Adam step on every row: the new (z, m, v), each point's J_set ``[n]`` and the terms."""
        cfg, k = self.config, self.config.n_explanations
        with tf.GradientTape() as tape:
            tape.watch(z)
            terms = self.clue.objective(z, x0, z0, cond_mask, desired)
            set_cost = tf.reduce_mean(tf.reshape(terms["cost"], [-1, k]), axis=1)  # [n]
            if cfg.diversity_weight:
                v_set = terms["x"] if cfg.diversity_space == "x" else z
                set_cost -= cfg.diversity_weight * pairwise_diversity(tf.reshape(v_set, [-1, k, v_set.shape[-1]]))
            total = tf.reduce_sum(set_cost)
        z_new, m, v = adam_step(z, m, v, tape.gradient(total, z), t, cfg.clue.lr)  # CLUE's optimizer, then the ball
        return project(z_new, z0, cfg.radius, cfg.norm), m, v, set_cost, terms

    def explain(self, x0, z_init=None, cond_mask=None, desired_preds=None, progress: bool = False) -> DiverseResult:
        """K explanations for every row of ``x0 [n, D]``, ``config.clue.batch_size`` points at a time. ``z_init``
        ``[n, L]``: the ball centers (default: encoder mean); ``cond_mask``, ``desired_preds``: as ``CLUE.explain``."""
        cfg, k = self.config, self.config.n_explanations
        x0 = check_inputs(x0, name="x0", **input_spec(self.bnn, self.generator))
        z0 = self.clue.encode(x0) if z_init is None else np.asarray(z_init, np.float32)
        if z0.ndim != 2 or len(z0) != len(x0):
            raise UserError(f"z_init has shape {z0.shape}: it needs one latent row per input, [{len(x0)}, L]")
        if cond_mask is not None:
            cond_mask = np.broadcast_to(np.asarray(cond_mask, np.float32), x0.shape)
        desired = None if desired_preds is None else np.asarray(desired_preds)
        start = time.perf_counter()
        z_start = initial_latents(z0, cfg, np.random.default_rng(cfg.seed))  # all points: batch-size independent
        parts, size = [], cfg.clue.batch_size
        for lo in tqdm(range(0, len(x0), size), desc="δ-CLUE", unit="batch", disable=not progress):
            sl = slice(lo, lo + size)
            parts.append(self._explain_batch(x0[sl], z0[sl], z_start[lo * k:(lo + size) * k],
                                             None if cond_mask is None else cond_mask[sl],
                                             None if desired is None else desired[sl]))
        out = {key: np.concatenate([p[key] for p in parts], axis=1 if key == "cost" else 0) for key in parts[0]}
        n = len(x0)
        x, z = out["x"].reshape(n, k, -1), out["z"].reshape(n, k, -1)
        seconds = time.perf_counter() - start
        u_after, preds_after = self._predict(x.reshape(n * k, -1))
        u_before, preds_before = self._predict(x0)
        classes = preds_after.ndim == 2
        return DiverseResult(
            x=x, z=z, x0=x0, z0=z0, uncertainty=u_after.reshape(n, k), uncertainty_before=u_before,
            l1_distance=np.abs(x - x0[:, None]).sum(-1), latent_distance=ball_distance(z, z0[:, None], cfg.norm),
            diversity_x=_pairwise_numpy(x), diversity_z=_pairwise_numpy(z), cost=out["cost"],
            stop_step=out["stop_step"], freeze_index=out["freeze_index"],
            predicted_class=preds_after.argmax(-1).reshape(n, k) if classes else None,
            original_class=preds_before.argmax(-1) if classes else None, delta=cfg.radius, norm=cfg.norm,
            seconds=seconds)

    def _predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Total uncertainty ``[n]`` and mean prediction (``[n, C]`` or ``[n]``) of ``x``, in chunks."""
        parts = [uncertainties(self.bnn, tf.constant(x[i:i + 4096])) for i in range(0, len(x), 4096)]
        return (np.concatenate([p[0].numpy() for p in parts]), np.concatenate([p[3].numpy() for p in parts]))

    def _explain_batch(self, x0, z0, z_start, cond_mask, desired) -> dict[str, np.ndarray]:
        """Projected Adam on the ``n * K`` rows of ``n`` points; points leave the batch once they have stopped."""
        cfg, k = self.config, self.config.n_explanations
        n, T, n_stop = len(x0), cfg.clue.max_steps, cfg.clue.n_early_stop
        rep = lambda a: None if a is None else tf.constant(np.repeat(a, k, axis=0))  # noqa: E731  [n * K, ...]
        cost = np.zeros((T, n), np.float32)
        x_hist = np.zeros((T + 1, n * k, x0.shape[1]), np.float32)
        z_hist = np.zeros((T + 1, n * k, z0.shape[1]), np.float32)
        z_hist[0] = z_start
        stop = np.zeros(n, np.int64)
        active = np.arange(n)
        z = tf.constant(z_start)
        state = {"m": tf.zeros_like(z), "v": tf.zeros_like(z), "x0": rep(x0), "z0": rep(z0),
                 "mask": rep(cond_mask), "desired": rep(desired)}
        for t in range(T):
            z, state["m"], state["v"], set_cost, terms = self._step(
                z, state["m"], state["v"], tf.constant(t + 1), state["x0"], state["z0"], state["mask"],
                state["desired"])
            rows = (active[:, None] * k + np.arange(k)).reshape(-1)
            cost[t, active] = set_cost.numpy()
            x_hist[t, rows] = terms["x"].numpy()
            z_hist[t + 1, rows] = z.numpy()
            if n_stop > 0 and t > cfg.clue.min_steps:  # CLUE's rule (spec 5.5) on each point's set cost
                delta = np.abs(cost[t - n_stop, active].astype(np.float64) - cost[t, active].astype(np.float64))
                hit = (delta < 0.01 * cost[0, active].astype(np.float64)) | (delta < 1e-3)
                if hit.any():
                    stop[active[hit]] = t
                    active = active[~hit]
                    idx = tf.constant(np.flatnonzero(np.repeat(~hit, k)))
                    z = tf.gather(z, idx)
                    state = {key: None if val is None else tf.gather(val, idx) for key, val in state.items()}
            if len(active) == 0:
                break
        if len(active):  # still running after max_steps: the hard decode of the last z (spec 5.4)
            x_last = self.generator.regenerate(z, straight_through=False)
            if state["mask"] is not None:
                x_last = x_last * state["mask"] + state["x0"] * (1.0 - state["mask"])
            x_hist[T, (active[:, None] * k + np.arange(k)).reshape(-1)] = x_last.numpy()
        final = np.where(stop > 0, stop - n_stop + 1, T) if n_stop > 0 else np.full(n, T)
        row_final, rows = np.repeat(final, k), np.arange(n * k)
        return {"x": x_hist[row_final, rows], "z": z_hist[row_final, rows], "cost": freeze(cost, stop, n_stop),
                "stop_step": stop, "freeze_index": final.astype(np.int64)}
