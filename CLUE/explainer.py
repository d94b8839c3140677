"""CLUE: Counterfactual Latent Uncertainty Explanations [1] (spec sections 5.1-5.8).

For an uncertain ``x0``, CLUE searches a generative model's latent space for a nearby input the BNN is confident
about, minimizing per example (Eq. 3 of [1], spec 5.3), with Adam [2] from ``z_init`` (the encoder mean of ``x0``),

    J(z) = w_u H_total(x) + w_a H_ale(x) + w_e H_epi(x) + w_d d(x, x0)
           + w_p log N(z; 0, I) + w_l ||z - z_init||^2 + w_y d_y(p(y|x), y_desired),     x = regenerate(z).

Stopping rule (spec 5.5): the first t > min_steps with ``|J[t - n] - J[t]| < max(0.01 J[0], 1e-3)`` freezes the
explanation at step ``t - n + 1``. Deviations from the original: DEVIATIONS.md.

[1] Antorán et al. "Getting a CLUE: A Method for Explaining Uncertainty Estimates." ICLR 2021.
[2] Kingma, Ba. "Adam: A Method for Stochastic Optimization." ICLR 2015 (Algorithm 1, in PyTorch's form).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from CLUE.config import ADAM_BETAS, ADAM_EPS, CLUEConfig, CLUEResult, CLUEWeights  # noqa: F401 (re-exported)
from common.errors import UserError
from common.predictive import input_spec, uncertainties
from common.validation import check_inputs

logger = logging.getLogger(__name__)


def early_stop_steps(cost: np.ndarray, min_steps: int = 3, n_early_stop: int = 3) -> np.ndarray:
    """The original's ``update_stopvec`` (spec 5.5): per row of ``cost [T, n]``, the first ``t > min_steps`` with
    ``|cost[t - n] - cost[t]|`` below ``0.01 * cost[0]`` or ``1e-3`` (in float64), else 0."""
    cost = np.asarray(cost, dtype=np.float64)
    stop = np.zeros(cost.shape[1], dtype=np.int64)
    if n_early_stop <= 0:
        return stop
    for t in range(min_steps + 1, cost.shape[0]):
        delta = np.abs(cost[t - n_early_stop] - cost[t])
        hit = (delta < 0.01 * cost[0]) | (delta < 1e-3)
        stop[(stop == 0) & hit] = t
    return stop


def freeze(arr: np.ndarray, stop_step: np.ndarray, n_early_stop: int) -> np.ndarray:
    """The original's ``apply_stopvec``: rows that stopped at t hold their value at ``t - n + 1`` from then on."""
    arr = np.array(arr, copy=True)
    for i in np.flatnonzero(stop_step > 0):
        k = int(stop_step[i]) - n_early_stop + 1
        if n_early_stop > 0 and k > 0:
            arr[k:, i] = arr[k, i]
    return arr


class CLUE:
    """Generates CLUEs with a BNN posterior and a generative model.

    ``bnn.predict_samples(x)``: ``[S, B, C]`` probabilities or ``([S, B], [S, B])`` Gaussian means and scales,
    differentiable in ``x``. ``generator``: ``regenerate(z, straight_through=...)`` (flat ``[B, D]``) and
    ``encode(x) -> (loc, scale)``; a VAE, or a VAEAC for conditional CLUE. ``strategy``: optional
    ``tf.distribute`` strategy, one shard of each batch per replica."""

    def __init__(self, bnn, generator, config: CLUEConfig | None = None,
                 strategy: tf.distribute.Strategy | None = None):
        self.bnn, self.generator = bnn, generator
        self.config = config or CLUEConfig()
        self.strategy = strategy
        self._step = tf.function(self._step_impl, reduce_retracing=True)
        self._optimise = tf.function(self._optimise_impl, reduce_retracing=True)
        if strategy is not None:
            self._distributed_step = tf.function(lambda *args: strategy.run(self._step_impl, args=args),
                                                 reduce_retracing=True)
        self._uncertainty = tf.function(lambda x: uncertainties(self.bnn, x)[::3], reduce_retracing=True)

    # ---------------------------------------------------------------------------------------------- objective
    def objective(self, z: tf.Tensor, x0: tf.Tensor, z_init: tf.Tensor, cond_mask: tf.Tensor | None = None,
                  desired_preds: tf.Tensor | None = None, straight_through: bool = True) -> dict[str, tf.Tensor]:
        """Per-example terms of J(z) (spec 5.3) at ``z [B, L]``: ``[B]`` ``cost``, ``uncertainty``, ``aleatoric``,
        ``epistemic``, ``distance_term`` (weighted), and ``x [B, D]``, the regenerated input (x0 outside the mask)."""
        w = self.config.weights
        x = self.generator.regenerate(z, straight_through=straight_through)
        if cond_mask is not None:  # conditional CLUE: only features with mask 1 may change (spec 5.8)
            x = x * cond_mask + x0 * (1.0 - cond_mask)
        total, aleatoric, epistemic, preds = uncertainties(self.bnn, x)
        diff = x - x0
        if self.config.distance_metric == "l1":
            dist = tf.reduce_sum(tf.abs(diff), axis=1)
        else:
            dist = tf.sqrt(tf.reduce_sum(tf.square(diff), axis=1))
        dist = w.distance * dist
        cost = w.uncertainty * total + w.aleatoric * aleatoric + w.epistemic * epistemic + dist
        if w.prior:
            cost += w.prior * tf.reduce_sum(-0.5 * tf.square(z) - 0.5 * np.log(2 * np.pi), axis=1)
        if w.latent_l2:
            cost += w.latent_l2 * tf.reduce_sum(tf.square(z - z_init), axis=1)
        if w.prediction_similarity and desired_preds is not None:
            cost += w.prediction_similarity * _prediction_distance(preds, desired_preds)
        return {"cost": cost, "uncertainty": total, "aleatoric": aleatoric, "epistemic": epistemic,
                "distance_term": dist, "x": x}

    def _step_impl(self, z, m, v, t, x0, z_init, cond_mask, desired):
        """One Adam step on every row: returns the new (z, m, v), the terms at the old z, and dJ/dz."""
        with tf.GradientTape() as tape:
            tape.watch(z)
            terms = self.objective(z, x0, z_init, cond_mask, desired)
            total = tf.reduce_sum(terms["cost"])  # each row's gradient is that of its own cost
        grad = tape.gradient(total, z)
        z_new, m, v = adam_step(z, m, v, grad, t, self.config.lr)
        return z_new, m, v, terms, grad

    # ---------------------------------------------------------------------------------------------- explain
    def explain(self, x0, z_init=None, cond_mask=None, desired_preds=None, record_trajectory: bool = False,
                progress: bool = False, z_start=None) -> CLUEResult:
        """CLUEs for every row of ``x0``, processed ``config.batch_size`` rows at a time.

        Args:
          x0: float32 ``[n, D]`` inputs in the model-input space.
          z_init: float32 ``[n, L]`` start of the search; default the generator's encoder mean of ``x0``.
          cond_mask: optional float ``[n, D]`` (or ``[D]``), 1 where a feature may change (conditional CLUE).
          desired_preds: prediction-term targets: ``[n]`` class indices, ``[n, C]`` soft labels or ``[n]`` values.
          record_trajectory: also return the x and z of every step.
          z_start: ``[n, L]`` where Adam starts, if not at ``z_init`` (used by :meth:`explain_many`).

        Returns a :class:`CLUEResult`; raises UserError if ``x0`` is empty, not ``[n, D]`` of the models' width, holds
        NaN or inf, or ``z_init``, ``z_start`` or ``cond_mask`` do not fit it.
        """
        x0 = self._check_x(x0, "x0")
        if z_init is None:
            z_init = self._encode(x0)
        z_init = np.asarray(z_init, dtype=np.float32)
        if z_init.ndim != 2 or z_init.shape[0] != x0.shape[0]:
            raise UserError(f"z_init has shape {z_init.shape}: it needs one latent row per input, "
                            f"[{x0.shape[0]}, L] for {x0.shape[0]} inputs")
        z_start = z_init if z_start is None else np.asarray(z_start, dtype=np.float32)
        if z_start.shape != z_init.shape:
            raise UserError(f"z_start {z_start.shape} and z_init {z_init.shape} differ in shape")
        if cond_mask is not None:
            try:
                cond_mask = np.broadcast_to(np.asarray(cond_mask, np.float32), x0.shape)
            except ValueError as err:
                raise UserError(f"cond_mask of shape {np.shape(cond_mask)} does not fit x0 {x0.shape}: pass [n, D] "
                                f"or [D] = [{x0.shape[1]}], 1 where a feature may change") from err
        start = time.perf_counter()
        parts = []
        batches = range(0, len(x0), self.config.batch_size)
        for lo in tqdm(batches, desc="CLUE", unit="batch", disable=not progress):
            sl = slice(lo, lo + self.config.batch_size)
            explain_batch = self._explain_batch if self.strategy is None else self._explain_batch_stepwise
            parts.append(explain_batch(
                x0[sl], z_init[sl], z_start[sl], None if cond_mask is None else cond_mask[sl],
                None if desired_preds is None else np.asarray(desired_preds)[sl], record_trajectory))
        merged = {k: np.concatenate([p[k] for p in parts], axis=0 if k in _ROW_FIRST else 1)
                  for k in parts[0] if parts[0][k] is not None}
        x_final = merged.pop("x_final")
        (u0, pred0), (u1, pred1) = self._predictive_of(x0), self._predictive_of(x_final)
        result = CLUEResult(
            x=x_final, z=merged.pop("z_final"), x0=x0, z_init=z_init, stop_step=merged.pop("stop_step"),
            freeze_index=merged.pop("freeze_index"), uncertainty_before=u0, uncertainty_after=u1,
            prediction_before=pred0, prediction_after=pred1, seconds=time.perf_counter() - start, **merged)
        return result

    def explain_many(self, x0, n_explanations: int, init_std: float = 0.15, seed: int = 0, z_init=None,
                     **kwargs) -> list[CLUEResult]:
        """``n_explanations`` CLUEResults from starts ``z_init + init_std * eps`` (spec 5.7), each with a fresh Adam."""
        x0 = self._check_x(x0, "x0")
        z_init = self._encode(x0) if z_init is None else np.asarray(z_init, np.float32)
        rng = np.random.default_rng(seed)
        return [self.explain(x0, z_init=z_init, z_start=z_init + init_std * rng.standard_normal(z_init.shape,
                                                                                                 np.float32), **kwargs)
                for _ in range(n_explanations)]

    def encode(self, x: np.ndarray) -> np.ndarray:
        """The generator's encoder mean of ``x`` (the paper's z_init), in batches (``x`` checked as in explain)."""
        return self._encode(self._check_x(x))

    def uncertainty(self, x: np.ndarray) -> np.ndarray:
        """Total BNN uncertainty ``[n]`` of inputs ``x``, in batches (``x`` checked as in explain)."""
        return self._uncertainty_of(self._check_x(x))

    def _check_x(self, x, name: str = "x") -> np.ndarray:
        """``x`` as float32 ``[n, D]``, or a UserError saying what is wrong."""
        return check_inputs(x, name=name, **input_spec(self.bnn, self.generator))

    def _encode(self, x: np.ndarray) -> np.ndarray:
        locs = [self.generator.encode(tf.constant(x[i:i + 4096]))[0].numpy() for i in range(0, len(x), 4096)]
        return np.concatenate(locs, axis=0)

    def _predictive_of(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Total uncertainty ``[n]`` and predictive mean of ``x``, in batches."""
        parts = [self._uncertainty(tf.constant(x[i:i + 4096])) for i in range(0, len(x), 4096)]
        return tuple(np.concatenate([p[k].numpy() for p in parts]) for k in (0, 1))

    def _uncertainty_of(self, x: np.ndarray) -> np.ndarray:
        return self._predictive_of(x)[0]

    def _explain_batch(self, x0, z_init, z_start, cond_mask, desired, record_trajectory) -> dict[str, np.ndarray]:
        """Optimizes one batch in one compiled graph (:meth:`_optimise_impl`); same result as the stepwise path."""
        n, T = len(x0), self.config.max_steps
        const = lambda a: None if a is None else tf.constant(a)  # noqa: E731
        out = self._optimise(tf.constant(x0), tf.constant(z_init), tf.constant(z_start), const(cond_mask),
                             const(desired))
        rows, sizes = out["rows"].numpy(), out["sizes"].numpy()
        steps = np.repeat(np.arange(len(sizes)), sizes)  # the step of each recorded (row, value)
        names = ("uncertainty", "aleatoric", "epistemic", "distance_term", "cost")
        raw = {k: np.zeros((T, n), np.float32) for k in names}
        for k in names:
            raw[k][steps, rows] = out[k].numpy()
        x_hist = np.zeros((T + 1, n, x0.shape[1]), np.float32)
        z_hist = np.zeros((T + 1, n, z_init.shape[1]), np.float32)
        x_hist[steps, rows] = out["x"].numpy()
        z_hist[0], z_hist[steps + 1, rows] = z_start, out["z"].numpy()
        x_hist[T, out["active"].numpy()] = out["x_last"].numpy()
        return self._finish(raw, x_hist, z_hist, out["stop"].numpy(), record_trajectory)

    def _optimise_impl(self, x0, z_init, z_start, cond_mask, desired):
        """One batch's whole optimization as a ``tf.while_loop``: Adam step, record, stopping rule (float64), drop rows.

        Returns per recorded (step, row), in step order: ``rows [K]``, the five terms, ``x [K, D]``, the updated
        ``z [K, L]``; ``sizes [t_end]``; ``stop [n]``; the rows still ``active`` with ``x_last``, their hard decode."""
        cfg = self.config
        T, n_stop = cfg.max_steps, cfg.n_early_stop
        names = ("uncertainty", "aleatoric", "epistemic", "distance_term", "cost")
        n = tf.shape(x0)[0]
        gather = lambda a, idx: None if a is None else tf.gather(a, idx)  # noqa: E731
        def record(dtype, shape):  # one element per step run (the loop may end before T)
            return tf.TensorArray(dtype, size=0, dynamic_size=True, infer_shape=False, element_shape=shape)

        arrays = {k: record(tf.float32, [None]) for k in names}
        arrays.update(x=record(tf.float32, [None, x0.shape[1]]), z=record(tf.float32, [None, z_init.shape[1]]),
                      rows=record(tf.int32, [None]), sizes=record(tf.int32, []))
        cost_hist = tf.zeros([T, n], tf.float64)
        stop = tf.zeros([n], tf.int64)
        active = tf.range(n)
        z = z_start
        m = v = tf.zeros_like(z_start)

        def body(t, active, z, m, v, cost_hist, stop, arrays):
            z_new, m, v, terms, _ = self._step_impl(z, m, v, t + 1, gather(x0, active), gather(z_init, active),
                                                    gather(cond_mask, active), gather(desired, active))
            arrays = {**arrays, "x": arrays["x"].write(t, terms["x"]), "z": arrays["z"].write(t, z_new),
                      "rows": arrays["rows"].write(t, active), "sizes": arrays["sizes"].write(t, tf.size(active)),
                      **{k: arrays[k].write(t, terms[k]) for k in names}}
            at = tf.stack([tf.fill(tf.shape(active), t), active], axis=1)
            cost_hist = tf.tensor_scatter_nd_update(cost_hist, at, tf.cast(terms["cost"], tf.float64))
            keep = tf.ones_like(active, tf.bool)
            if n_stop > 0:
                back = tf.gather(cost_hist, tf.maximum(t - n_stop, 0))  # read only where t > min_steps >= n - 1
                delta = tf.abs(tf.gather(back, active) - tf.gather(cost_hist[t], active))
                hit = (delta < 0.01 * tf.gather(cost_hist[0], active)) | (delta < 1e-3)
                hit = hit & (t > cfg.min_steps)
                stopped = tf.boolean_mask(active, hit)
                stop = tf.tensor_scatter_nd_update(stop, stopped[:, None],
                                                   tf.fill(tf.shape(stopped), tf.cast(t, tf.int64)))
                keep = ~hit
            return (t + 1, tf.boolean_mask(active, keep), tf.boolean_mask(z_new, keep), tf.boolean_mask(m, keep),
                    tf.boolean_mask(v, keep), cost_hist, stop, arrays)

        state = tf.TensorShape([None, z_init.shape[1]])
        shapes = (tf.TensorShape([]), tf.TensorShape([None]), state, state, state, cost_hist.shape, stop.shape,
                  {k: tf.TensorShape(None) for k in arrays})
        t, active, z, m, v, cost_hist, stop, arrays = tf.while_loop(
            lambda t, active, *_: (t < T) & (tf.size(active) > 0), body,
            (tf.constant(0), active, z, m, v, cost_hist, stop, arrays), shape_invariants=shapes)
        # rows still running at max_steps end at their hard decode (none left: skip it; conv decoders fail on 0 rows)
        x_last = tf.cond(tf.size(active) > 0, lambda: self.generator.regenerate(z, straight_through=False),
                         lambda: tf.zeros([0, x0.shape[1]], x0.dtype))
        if cond_mask is not None:
            x_last = x_last * tf.gather(cond_mask, active) + tf.gather(x0, active) * (1.0 - tf.gather(cond_mask,
                                                                                                    active))
        out = {k: arrays[k].concat() for k in (*names, "x", "z", "rows")}
        return {**out, "sizes": arrays["sizes"].stack(), "stop": stop, "active": active,
                "x_last": x_last}

    def _finish(self, raw, x_hist, z_hist, stop, record_trajectory) -> dict[str, np.ndarray]:
        """The original's freezing of the recorded values and the final explanation of each row (spec 5.5)."""
        n_stop, T, n = self.config.n_early_stop, self.config.max_steps, len(stop)
        out = {k: freeze(v, stop, n_stop) for k, v in raw.items()}
        final = np.where(stop > 0, stop - n_stop + 1, T) if n_stop > 0 else np.full(n, T)
        rows = np.arange(n)
        out["x_final"], out["z_final"], out["stop_step"] = x_hist[final, rows], z_hist[final, rows], stop
        out["freeze_index"] = final.astype(np.int64)
        if record_trajectory:
            out["x_trajectory"] = freeze(x_hist, stop, n_stop)
            out["z_trajectory"] = freeze(z_hist, stop, n_stop)
        return out

    def _explain_batch_stepwise(self, x0, z_init, z_start, cond_mask, desired,
                                record_trajectory) -> dict[str, np.ndarray]:
        """Optimizes one batch step by step from Python; with R replicas, one contiguous shard per replica."""
        cfg = self.config
        n, T, n_stop = len(x0), cfg.max_steps, cfg.n_early_stop
        names = ("uncertainty", "aleatoric", "epistemic", "distance_term", "cost")
        raw = {k: np.zeros((T, n), np.float32) for k in names}
        x_hist = np.zeros((T + 1, n, x0.shape[1]), np.float32)  # only the steps a row may freeze at are read back
        z_hist = np.zeros((T + 1, n, z_init.shape[1]), np.float32)
        z_hist[0] = z_start
        stop = np.zeros(n, np.int64)
        const = lambda a, rows: None if a is None else tf.constant(a[rows])  # noqa: E731
        shards = []  # per replica: its active rows and their optimization state
        for rows in np.array_split(np.arange(n), self._n_replicas):
            z = const(z_start, rows)
            shards.append({"active": rows, "z": z, "m": tf.zeros_like(z), "v": tf.zeros_like(z),
                           "x0": const(x0, rows), "z_init": const(z_init, rows), "mask": const(cond_mask, rows),
                           "desired": const(desired, rows)})
        for t in range(T):
            outs = self._run_step(shards, t + 1)
            for sh, (z, m, v, terms) in zip(shards, outs):
                active = sh["active"]
                sh["z"], sh["m"], sh["v"] = z, m, v
                for k in names:
                    raw[k][t, active] = terms[k].numpy()
                x_hist[t, active] = terms["x"].numpy()
                z_hist[t + 1, active] = z.numpy()
                if n_stop > 0 and t > cfg.min_steps and len(active):
                    delta = np.abs(raw["cost"][t - n_stop, active].astype(np.float64)
                                   - raw["cost"][t, active].astype(np.float64))
                    hit = (delta < 0.01 * raw["cost"][0, active].astype(np.float64)) | (delta < 1e-3)
                    if hit.any():
                        stop[active[hit]] = t
                        idx = tf.constant(np.flatnonzero(~hit))
                        sh["active"] = active[~hit]
                        for key in ("z", "m", "v", "x0", "z_init", "mask", "desired"):
                            sh[key] = None if sh[key] is None else tf.gather(sh[key], idx)
            if all(len(sh["active"]) == 0 for sh in shards):
                break
        # Rows still running after max_steps end at the hard decode of their last z (spec 5.4).
        for sh in shards:
            if len(sh["active"]):
                x_last = self.generator.regenerate(sh["z"], straight_through=False)
                if sh["mask"] is not None:
                    x_last = x_last * sh["mask"] + sh["x0"] * (1.0 - sh["mask"])
                x_hist[T, sh["active"]] = x_last.numpy()
        return self._finish(raw, x_hist, z_hist, stop, record_trajectory)

    @property
    def _n_replicas(self) -> int:
        return 1 if self.strategy is None else self.strategy.num_replicas_in_sync

    def _run_step(self, shards: list[dict], t: int) -> list[tuple]:
        """One Adam step on every shard: ``[(z, m, v, terms)]``, on one device or one shard per replica."""
        keys = ("z", "m", "v", "x0", "z_init", "mask", "desired")
        if self.strategy is None:
            sh = shards[0]
            z, m, v, terms, _ = self._step(*(sh[k] for k in keys[:3]), tf.constant(t), *(sh[k] for k in keys[3:]))
            return [(z, m, v, terms)]
        args = [None if shards[0][k] is None else self.strategy.experimental_distribute_values_from_function(
            lambda ctx, k=k: shards[ctx.replica_id_in_sync_group][k]) for k in keys]
        per_replica = self._distributed_step(*args[:3], tf.constant(t), *args[3:])
        results = [self.strategy.experimental_local_results(v) for v in tf.nest.flatten(per_replica)]
        return [tf.nest.pack_sequence_as(per_replica, [r[i] for r in results])[:4] for i in range(len(shards))]

_ROW_FIRST = ("x_final", "z_final", "stop_step", "freeze_index")


def adam_step(z, m, v, grad, t, lr: float):
    """One torch.optim.Adam update of ``z`` at step ``t`` (1-based), returning ``(z, m, v)``; as torch (parity kit 5.2),
    eps is added after bias-correcting sqrt(v) and the bias corrections are computed in float64."""
    b1, b2 = ADAM_BETAS
    m = m + (1.0 - b1) * (grad - m)
    v = b2 * v + (1.0 - b2) * tf.square(grad)
    step = tf.cast(t, tf.float64)
    step_size = tf.cast(lr / (1.0 - b1 ** step), tf.float32)
    bias_correction2_sqrt = tf.cast(tf.sqrt(1.0 - b2 ** step), tf.float32)
    denom = tf.sqrt(v) / bias_correction2_sqrt + ADAM_EPS
    return z - step_size * m / denom, m, v


def _prediction_distance(preds: tf.Tensor, desired: tf.Tensor) -> tf.Tensor:
    """Prediction-similarity term per example (spec 5.3; trap 17): squared error (regression), ``-p_bar[target]`` for
    class indices (the original's ``nll_loss`` on probabilities), or ``-sum_c t_c log p_bar_c`` for soft labels."""
    if preds.shape.rank == 1:
        return tf.square(preds - tf.cast(desired, preds.dtype))
    if desired.shape.rank == 1:
        return -tf.gather(preds, tf.cast(desired, tf.int32), axis=1, batch_dims=1)
    return -tf.reduce_sum(tf.cast(desired, preds.dtype) * tf.math.log(preds + 1e-10), axis=1)
