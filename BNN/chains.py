"""Parallel SG-HMC chains on ``tf.distribute``, with split R-hat and effective sample size of the predictive.

``python -m BNN.train --chains K`` runs K independent chains and pools their samples into one posterior of
``K * n_saves`` samples. Chain k is seeded ``seed + chain_offset + k`` (initial weights, minibatch order and sampler
draws: each chain owns its generators) and trains on the data split of ``--seed``, so it is the chain that
``python -m BNN.train --seed seed --chain-offset k`` runs alone ("sequential chains"): bit for bit when the parallel
run places one chain per replica (the single-chain computation), and up to the float rounding of batched matrix
products when a replica vectorises several (rounding the chaotic dynamics amplify over many steps).

Placement. The K chains are split into one *group* per replica of the ``tf.distribute`` strategy
(``--strategy default``: one device; ``mirrored``: every local GPU, or every logical CPU device when there is no
GPU; ``multiworker``: ``MultiWorkerMirroredStrategy`` over the cluster in ``TF_CONFIG``). Within a group the
chains are vectorised: parameters carry a leading chain axis, every chain takes its own minibatch, and one batched
forward/backward pass and one elementwise sampler update move them all (``BNN.sghmc`` with one seed per chain).
Each epoch is one ``strategy.run``: replica r moves its own group, which lives on its device (the chains are
independent, so there is no cross-replica reduction); per-chain outputs and, at the end, the weight samples are
collected with ``strategy.gather`` in chain order.

Checkpoints: every group has its own ``tf.train.CheckpointManager`` under ``ckpt/chains_<first>-<last>/``
(weights, sampler state, generators, sample buffer, epoch), so a run resumes where it stopped, chain by chain, with
the same ``--chains`` and the same number of replicas.

Diagnostics (``metrics.json``, keys ``diagnostics/...``): for every kept sample of every chain, the mean test
log-likelihood of that weight sample and the predictions on a fixed probe batch (the first test points: the
probability of the true class, or the predicted mean), summarised across chains with split R-hat
(``tfp.mcmc.potential_scale_reduction``) and the cross-chain effective sample size
(``tfp.mcmc.effective_sample_size``). R-hat above 1.1 is logged as a warning: the chains have not mixed and the
pooled posterior should not be trusted. With a single chain, split R-hat compares the first and second halves of
its samples: a check that the chain has settled, not that it mixed (which needs two chains or more); the warning
says so.

#### References
[1] Gelman, A., Rubin, D. B. "Inference from iterative simulation using multiple sequences." Statistical Science,
    1992 (the potential scale reduction).
[2] Vehtari, A., Gelman, A., Simpson, D., Carpenter, B., Bürkner, P.-C. "Rank-normalization, folding, and
    localization: an improved R-hat for assessing convergence of MCMC." Bayesian Analysis, 2021 (split chains).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

import data
from BNN.model import Architecture, forward, get_likelihood, init_params
from BNN.posterior import Posterior, SampleBuffer, evaluate
from BNN.sghmc import ScaleAdaptedSGHMC, SGHMCParams
from common.distribute import make_strategy
from common.distribute import replica_id as _replica_id
from common.errors import UserError
from common.training import DivergedError, TrainingInterrupted
from common.utils import MetricsCSV, save_json, save_npz

if TYPE_CHECKING:
    from BNN.train import Config

logger = logging.getLogger(__name__)

RHAT_WARNING = 1.1
N_PROBE = 16  # test points whose per-sample predictions enter the diagnostics


class ChainGroup(tf.Module):
    """``len(seeds)`` SG-HMC chains of one BNN, vectorised over a leading chain axis of every parameter.

    A group of one chain keeps unstacked parameters and runs exactly the single-chain computation (bit for bit the
    chain of ``BNN.train --chains 1``); a group of K > 1 chains runs batched matrix products over the chain axis,
    whose rounding differs from K separate products in the last bits (which the chaotic dynamics then amplify).

    Args:
      arch: the network.
      likelihood: ``"categorical"`` or ``"gaussian"``.
      seeds: one seed per chain; chain k starts from ``init_params(arch, seeds[k])`` and draws its minibatches and
        its sampler noise from generators seeded ``seeds[k]``.
      hparams: sampler hyper-parameters.
      n_saves: weight samples kept per chain.
      input_norm: optional ``(mean, std)`` input normalisation.
    """

    def __init__(self, arch: Architecture, likelihood: str, seeds: list[int], hparams: SGHMCParams, n_saves: int,
                 input_norm: tuple[float, float] | None = None):
        super().__init__(name="chain_group")
        self.arch, self.seeds = arch, [int(s) for s in seeds]
        self.stacked = len(self.seeds) > 1
        self.likelihood = get_likelihood(likelihood)
        self.input_norm = None if input_norm is None else (float(input_norm[0]), float(input_norm[1]))
        inits = [init_params(arch, s) for s in self.seeds]
        self.params = {name: tf.Variable(np.stack([p[name] for p in inits]) if self.stacked else inits[0][name],
                                         name=name.replace("/", "_")) for name in arch.param_shapes()}
        self.sampler = ScaleAdaptedSGHMC(self.variables_list, hparams,
                                         seed=self.seeds if self.stacked else self.seeds[0])
        self.data_rngs = [tf.random.Generator.from_seed(s).split(1)[0] for s in self.seeds]
        self.buffer = SampleBuffer(arch, n_saves, n_chains=len(self.seeds) if self.stacked else None)
        self.epoch = tf.Variable(0, dtype=tf.int64, name="epoch")

    @property
    def n_chains(self) -> int:
        return len(self.seeds)

    @property
    def variables_list(self) -> list[tf.Variable]:
        return [self.params[name] for name in self.arch.param_shapes()]

    def _outputs(self, x: tf.Tensor) -> tf.Tensor:
        if self.input_norm is not None:
            x = (x - self.input_norm[0]) / self.input_norm[1]
        return forward(self.arch, self.params, x)

    def _per_row(self, fn, out: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """``fn(out, y)`` of a likelihood (per row) for outputs `[K, B, out]` and targets `[K, B, ...]`, -> `[K, B]`;
        for one unstacked chain, `[B, out]` and `[B, ...]` -> `[1, B]`."""
        if not self.stacked:
            return fn(out, y)[None]
        flat_y = tf.reshape(y, tf.concat([[-1], tf.shape(y)[2:]], 0))
        return tf.reshape(fn(tf.reshape(out, [-1, out.shape[-1]]), flat_y), tf.shape(out)[:2])

    def train_epoch(self, x: tf.Tensor, y: tf.Tensor, batch_size: int, burn_in: tf.Tensor,
                    resample_momentum_every: int, resample_prior_every: int) -> tuple[tf.Tensor, tf.Tensor]:
        """One SG-HMC epoch of every chain (call inside a ``tf.function``); returns summed NLL and error, `[K]`.

        The loss is the mean minibatch NLL times N_train per chain (spec trap 11); momentum and prior precisions
        are resampled every ``resample_*_every`` iterations (spec 2.4).
        """
        n_train = int(x.shape[0])
        n_batches = math.ceil(n_train / batch_size)
        orders = [tf.argsort(rng.uniform([n_train])) for rng in self.data_rngs]  # a fresh permutation per chain
        order = tf.stack(orders) if self.stacked else orders[0]  # [K, N] or [N]
        nll_sum, err_sum = tf.zeros([self.n_chains]), tf.zeros([self.n_chains])
        for b in tf.range(n_batches):
            idx = order[..., b * batch_size:tf.minimum((b + 1) * batch_size, n_train)]  # [K, B] or [B]
            xb, yb = tf.gather(x, idx), tf.gather(y, idx)  # each chain its own minibatch
            with tf.GradientTape() as tape:
                out = self._outputs(xb)
                nll = self._per_row(self.likelihood.nll, out, yb)  # [K, B]
                loss = tf.reduce_sum(tf.reduce_mean(nll, axis=1)) * n_train
            grads = tape.gradient(loss, self.variables_list)
            it = self.sampler.iterations
            self.sampler.step(grads, burn_in, it % resample_momentum_every == 0, it % resample_prior_every == 0)
            nll_sum += tf.reduce_sum(nll, axis=1)
            err_sum += tf.reduce_sum(self._per_row(self.likelihood.error, out, yb), axis=1)
        return nll_sum, err_sum

    def test_metrics(self, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Mean test NLL and error of each chain's current weights, `[K]` each."""
        out = self._outputs(x)  # shared x: [K, N, out] or [N, out]
        if self.stacked:
            y = tf.broadcast_to(y, tf.concat([[self.n_chains], tf.shape(y)], 0))
        return (tf.reduce_mean(self._per_row(self.likelihood.nll, out, y), 1),
                tf.reduce_mean(self._per_row(self.likelihood.error, out, y), 1))

    def kept_samples(self, current: bool = False) -> dict[str, tf.Tensor]:
        """name -> `[K, n_kept, *shape]`, oldest first within each chain (``current``: the current weights as
        `[K, 1, *shape]` instead)."""
        if current:
            samples = {name: v.numpy()[None] for name, v in self.params.items()}  # [1, (K,) *shape]
        else:
            samples = self.buffer.samples()
        return {name: tf.constant(np.swapaxes(v, 0, 1) if self.stacked else v[None]) for name, v in samples.items()}


@dataclasses.dataclass
class ParallelChains:
    """K chains split into one :class:`ChainGroup` per replica of ``strategy`` (module docstring)."""

    strategy: tf.distribute.Strategy
    groups: dict[int, ChainGroup]  # global replica id -> the group that replica moves (local replicas only)
    devices: dict[int, str | None]  # global replica id -> its device (None: the default strategy's placement)
    n_chains: int

    @classmethod
    def build(cls, strategy: tf.distribute.Strategy, arch: Architecture, likelihood: str, seed: int,
              n_chains: int, hparams: SGHMCParams, n_saves: int,
              input_norm: tuple[float, float] | None = None) -> ParallelChains:
        """Chain k (of replica k // (n_chains / n_replicas)) is seeded ``seed + k``."""
        n_replicas = strategy.num_replicas_in_sync
        if n_chains < 1 or n_chains % n_replicas:
            raise UserError(f"--chains {n_chains} must be a positive multiple of the {n_replicas} replicas of the "
                             f"{type(strategy).__name__}, e.g. --chains {n_replicas}")
        per = n_chains // n_replicas
        ids = [int(v) for v in strategy.experimental_local_results(
            strategy.run(lambda: tf.distribute.get_replica_context().replica_id_in_sync_group))]
        devices = _local_devices(strategy)
        groups = {}
        for replica, device in zip(ids, devices):
            with tf.device(device):
                seeds = [seed + replica * per + i for i in range(per)]
                groups[replica] = ChainGroup(arch, likelihood, seeds, hparams, n_saves, input_norm)
        return cls(strategy, groups, dict(zip(ids, devices)), n_chains)

    def _group(self) -> ChainGroup:
        return self.groups[_replica_id()]

    def run(self, fn, *args):
        """``strategy.run(fn(group, *args))`` for every replica's group, gathered along axis 0 in chain order."""
        per_replica = self.strategy.run(lambda: fn(self._group(), *args))
        return tf.nest.map_structure(lambda v: self.strategy.gather(v, axis=0), per_replica)

    def _placed(self, *arrays: np.ndarray) -> dict[int, list[tf.Tensor]]:
        """Each replica's copy of ``arrays``, on its device."""
        placed = {}
        for replica in self.groups:
            with tf.device(self.devices[replica]):
                placed[replica] = [tf.constant(a) for a in arrays]
        return placed

    def epoch_function(self, x: np.ndarray, y: np.ndarray, batch_size: int, resample_momentum_every: int,
                       resample_prior_every: int):
        """``epoch(burn_in: bool tensor) -> (summed NLL [K], summed error [K])``: one SG-HMC epoch of every chain,
        one ``strategy.run``, as a ``tf.function``."""
        data = self._placed(x, y)

        @tf.function(input_signature=[tf.TensorSpec([], tf.bool)])
        def epoch(burn_in):
            return self.run(lambda g: g.train_epoch(*data[_replica_id()], batch_size, burn_in,
                                                    resample_momentum_every, resample_prior_every))

        return epoch

    def metrics_function(self, x: np.ndarray, y: np.ndarray):
        """``metrics() -> (mean NLL [K], mean error [K])`` of every chain's current weights on ``(x, y)``."""
        data = self._placed(x, y)
        return tf.function(lambda: self.run(lambda g: g.test_metrics(*data[_replica_id()])))

    def gather_samples(self, current: bool = False) -> dict[str, np.ndarray]:
        """name -> `[K, n_kept, *shape]` of all chains (across replicas and workers), in chain order."""
        values = self.strategy.experimental_distribute_values_from_function(
            lambda ctx: self.groups[ctx.replica_id_in_sync_group].kept_samples(current))
        # One gather per tensor (a nested structure in one call kept only one replica's values in eager mode); each
        # shape retraces the collective, which TF warns about: silenced, it happens once per export.
        with _tf_log_level(logging.ERROR):
            return {name: self.strategy.gather(v, axis=0).numpy() for name, v in values.items()}


@contextlib.contextmanager
def _tf_log_level(level: int):
    previous = tf.get_logger().level
    tf.get_logger().setLevel(level)
    try:
        yield
    finally:
        tf.get_logger().setLevel(previous)


def _local_devices(strategy: tf.distribute.Strategy) -> list[str | None]:
    try:
        return list(strategy.extended.worker_devices)
    except (RuntimeError, NotImplementedError, AttributeError):  # the default strategy: wherever TF places ops
        return [None]


# ------------------------------------------------------------------------------------------------- diagnostics
def predictive_traces(samples: dict[str, np.ndarray], arch: Architecture, likelihood: str,
                      input_norm: tuple[float, float] | None, x: np.ndarray, y: np.ndarray,
                      n_probe: int = N_PROBE) -> dict[str, np.ndarray]:
    """Per-sample predictive summaries of K chains, shaped `[n_kept, K, ...]` as ``tfp.mcmc`` diagnostics expect.

    Args:
      samples: name -> `[K, n_kept, *shape]` weight samples.
      x, y: test inputs and targets (normalised targets for regression).

    Returns:
      ``test_loglik`` `[n_kept, K]`: mean over the test set of log p(y | x, theta) of each weight sample;
      ``probe`` `[n_kept, K, P]`: on the first P test points, p(true class) or the predicted mean.
    """
    k, s = next(iter(samples.values())).shape[:2]
    pooled = Posterior(arch, likelihood, {n: v.reshape(k * s, *v.shape[2:]) for n, v in samples.items()}, input_norm)
    loglik = []
    probe = None
    for lo in range(0, len(x), 1000):
        out = pooled.forward(x[lo:lo + 1000])  # [K*S, B, out]
        yb = y[lo:lo + 1000]
        if likelihood == "categorical":
            log_p = tf.nn.log_softmax(out, -1)
            labels = tf.broadcast_to(tf.cast(np.reshape(yb, [-1]), tf.int32), tf.shape(out)[:2])
            ll = tf.gather(log_p, labels, batch_dims=2)  # [K*S, B]
            pred = tf.exp(ll)
        else:
            ll = -pooled.likelihood.nll(out, yb)  # the unfloored-sigma difference is irrelevant to the diagnostics
            pred = pooled.likelihood.params(out)[0][..., 0]
        loglik.append(tf.reduce_sum(ll, axis=1).numpy())
        if probe is None:
            probe = pred[:, :n_probe].numpy()
    test_loglik = np.sum(loglik, axis=0) / len(x)
    return {"test_loglik": test_loglik.reshape(k, s).T, "probe": np.swapaxes(probe.reshape(k, s, -1), 0, 1)}


def convergence(traces: dict[str, np.ndarray]) -> dict[str, float]:
    """Split R-hat and cross-chain effective sample size of each trace (`[n_samples, n_chains, ...]`).

    Returns ``diagnostics/rhat/<name>`` and ``diagnostics/ess/<name>`` (for traces with trailing dimensions: the
    ``_max`` and ``_median`` R-hat and the ``_min`` ESS over them).
    """
    import tensorflow_probability as tfp  # imported here: loading it takes seconds

    out = {}
    for name, trace in traces.items():
        trace = np.asarray(trace, np.float64)
        if trace.shape[0] < 4:
            raise ValueError(f"{name}: split R-hat needs at least 4 samples per chain, got {trace.shape[0]}")
        rhat = tfp.mcmc.potential_scale_reduction(trace, independent_chain_ndims=1, split_chains=True).numpy()
        with _tf_log_level(logging.ERROR):  # the FFT autocorrelation casts complex to real: a spurious warning
            if trace.shape[1] > 1:
                ess = tfp.mcmc.effective_sample_size(trace, cross_chain_dims=1).numpy()
            else:  # one chain: its own ESS (cross-chain estimation needs two)
                ess = tfp.mcmc.effective_sample_size(trace[:, 0]).numpy()
        if trace.ndim == 2:
            out[f"diagnostics/rhat/{name}"], out[f"diagnostics/ess/{name}"] = float(rhat), float(ess)
        else:
            # A constant probe prediction (e.g. a saturated p = 1) has no variance: R-hat is NaN there; skip it.
            finite = rhat[np.isfinite(rhat)]
            out[f"diagnostics/rhat/{name}_max"] = float(finite.max()) if finite.size else float("nan")
            out[f"diagnostics/rhat/{name}_median"] = float(np.median(finite)) if finite.size else float("nan")
            out[f"diagnostics/ess/{name}_min"] = float(np.nanmin(ess))
    return out


# ------------------------------------------------------------------------------------------------- training
def _common_checkpoint(managers: list[tf.train.CheckpointManager]) -> int | None:
    """The latest checkpoint number every group has (groups are saved one after the other: a run killed between
    two saves resumes all groups from the older, common one)."""
    numbers = [{int(re.search(r"-(\d+)$", p).group(1)) for p in m.checkpoints} for m in managers]
    common = set.intersection(*numbers) if numbers else set()
    return max(common) if common else None


def train(config: Config, run_dir: Path, dataset: data.Dataset, arch: Architecture, likelihood: str,
          hparams: SGHMCParams) -> dict[str, float]:
    """``BNN.train`` with ``--chains`` and ``--strategy`` (module docstring); returns the final metrics."""
    strategy = make_strategy(config.strategy)
    first = config.seed + config.chain_offset
    chains = ParallelChains.build(strategy, arch, likelihood, first, config.chains, hparams, config.n_saves,
                                  dataset.pixel_norm)
    ckpt_dir = run_dir / "ckpt"
    layouts = {f"chains_{g.seeds[0] - first:03d}-{g.seeds[-1] - first:03d}": g for g in chains.groups.values()}
    stale = sorted(p.name for p in ckpt_dir.glob("chains_*") if p.name not in layouts) if ckpt_dir.exists() else []
    if stale:
        raise UserError(f"{ckpt_dir} holds checkpoints of another chain layout ({stale}); resume with the "
                         f"--chains and number of replicas that wrote them, or use a new --out")
    train_seconds = tf.Variable(0.0, dtype=tf.float64, name="train_seconds")
    managers = []
    for name, group in layouts.items():
        ckpt = tf.train.Checkpoint(group=group, train_seconds=train_seconds)
        managers.append((tf.train.CheckpointManager(ckpt, str(ckpt_dir / name), max_to_keep=2), ckpt))
    number = _common_checkpoint([m for m, _ in managers])
    if number is not None:
        for manager, ckpt in managers:
            path = next(p for p in manager.checkpoints if p.endswith(f"-{number}"))
            ckpt.restore(path).assert_existing_objects_matched()
        logger.info("resumed from %s at epoch %d (%d chains)", ckpt_dir, number, config.chains)
    start = int(next(iter(chains.groups.values())).epoch)

    train_epoch = chains.epoch_function(dataset.x_train, dataset.y_train, config.batch_size,
                                        config.resample_momentum_every, config.resample_prior_every)
    test_metrics = chains.metrics_function(dataset.x_test, dataset.y_test)

    is_cat = dataset.task == "classification"
    n_train = len(dataset.x_train)
    metrics_csv = MetricsCSV(run_dir / "metrics.csv", resume_epoch=start)
    bar = tqdm(range(start, config.n_epochs), initial=start, total=config.n_epochs,
               desc=f"SG-HMC x{config.chains}", disable=not config.progress)
    epoch_level = logging.DEBUG if config.progress else logging.INFO  # a bar shows the progress itself
    checkpointed = i = start  # epochs in the latest checkpoint; the epoch running
    try:
        for i in bar:
            t0 = time.perf_counter()
            cycle_epoch = i % config.reburn_every
            nll_sum, err_sum = (v.numpy() for v in train_epoch(tf.constant(cycle_epoch < config.burn_in)))
            if not np.all(np.isfinite(nll_sum)):
                bad = np.flatnonzero(~np.isfinite(nll_sum)).tolist()
                raise DivergedError(f"non-finite training NLL at epoch {i} in chains {bad}: the run diverged; "
                                    "lower --lr")
            if cycle_epoch >= config.burn_in and i % config.save_every == 0:
                for group in chains.groups.values():
                    group.buffer.add(group.params)
            for group in chains.groups.values():
                group.epoch.assign(i + 1)
            row = {"epoch": i, "train/nll": float(nll_sum.mean()) / n_train,
                   "n_samples": min(int(next(iter(chains.groups.values())).buffer.n_added), config.n_saves)}
            err = err_sum.astype(np.float64) / n_train
            row["train/accuracy" if is_cat else "train/rmse"] = float(np.mean(1.0 - err if is_cat else np.sqrt(err)))
            evaluated = (i + 1) % config.eval_every == 0 or i + 1 == config.n_epochs
            nll_c = err_c = np.full(config.chains, np.nan)
            if evaluated:
                nll_c, err_c = (v.numpy() for v in test_metrics())
            row["test_current/nll"] = float(np.mean(nll_c))
            if is_cat:
                row["test_current/accuracy"] = float(np.mean(1.0 - err_c))
            else:
                row["test_current/rmse"] = float(np.mean(np.sqrt(err_c))) * float(dataset.y_std[0])
            for c in range(config.chains if config.chains > 1 else 0):
                row[f"train/nll/chain_{c}"] = float(nll_sum[c]) / n_train
            train_seconds.assign_add(time.perf_counter() - t0)
            row["seconds"] = time.perf_counter() - t0
            metrics_csv.append(row)
            if evaluated:
                bar.set_postfix(nll=row["train/nll"], samples=row["n_samples"])
                logger.log(epoch_level, "epoch %d %s", i, {k: round(v, 4) for k, v in row.items()
                                                           if isinstance(v, float) and "chain_" not in k})
            if (i + 1) % config.checkpoint_every == 0 or i + 1 == config.n_epochs:
                for manager, _ in managers:
                    manager.save(checkpoint_number=i + 1)
                checkpointed = i + 1
    except KeyboardInterrupt as err:
        raise TrainingInterrupted(i, checkpointed, run_dir) from err
    finally:
        bar.close()
    epochs = max(int(next(iter(chains.groups.values())).epoch), 1)
    return export(config, run_dir, chains, arch, likelihood, dataset, float(train_seconds) / epochs)


def export(config: Config, run_dir: Path, chains: ParallelChains, arch: Architecture, likelihood: str,
           dataset: data.Dataset, seconds_per_epoch: float) -> dict[str, float]:
    """Pools the chains' samples, evaluates, computes the diagnostics, writes ``posterior/``, ``metrics.json`` and
    ``diagnostics.npz`` (the traces); in a multi-worker cluster only the chief writes."""
    samples = chains.gather_samples()  # [K, n_kept, ...]
    k, s = next(iter(samples.values())).shape[:2]
    if s == 0:
        logger.warning("no weight sample was saved (n_epochs <= burn_in?): exporting the current weights, S = 1 "
                       "per chain")
        samples = chains.gather_samples(current=True)
        s = 1
    if config.drop_last_sample and s > 1:
        samples, s = {n: v[:, :-1] for n, v in samples.items()}, s - 1
    y_std = float(dataset.y_std[0])
    posterior = Posterior(arch, likelihood, {n: v.reshape(k * s, *v.shape[2:]) for n, v in samples.items()},
                          dataset.pixel_norm)
    metrics = {f"test/{m}": v for m, v in evaluate(posterior, dataset.x_test, dataset.y_test, y_std=y_std).items()}
    metrics.update({"seconds_per_epoch": seconds_per_epoch, "n_samples": posterior.n_samples})
    if k > 1:
        metrics.update({"n_chains": k, "n_replicas": chains.strategy.num_replicas_in_sync})
    with _tf_log_level(logging.ERROR):  # one traced forward per chain's posterior: TF warns about the retracing
        for c in range(k if k > 1 else 0):
            per_chain = evaluate(posterior[c * s:(c + 1) * s], dataset.x_test, dataset.y_test, y_std=y_std)
            metrics.update({f"chains/{c}/test/{m}": v for m, v in per_chain.items()})
        traces = predictive_traces(samples, arch, likelihood, dataset.pixel_norm, dataset.x_test, dataset.y_test)
    if s >= 4:
        metrics.update(convergence(traces))
        rhats = {m: v for m, v in metrics.items() if m.startswith("diagnostics/rhat/") and np.isfinite(v)}
        if rhats:
            name = max(rhats, key=rhats.get)
            worst, what = rhats[name], name.removeprefix("diagnostics/rhat/")
            if worst > RHAT_WARNING and k > 1:
                logger.warning("split R-hat %.3f (%s) > %.1f: the %d chains disagree (not mixed); run longer or "
                               "check the step size before trusting the pooled posterior", worst, what,
                               RHAT_WARNING, k)
            elif worst > RHAT_WARNING:
                # One chain: split R-hat compares its first and second half of samples, which checks that the
                # chain settled (stationarity), not that it mixed across modes; that needs --chains 2 or more.
                logger.warning("split R-hat %.3f (%s) > %.1f: the first and second halves of the single chain's "
                               "samples disagree (it is still drifting); run longer, or --chains 4 to compare "
                               "independent chains", worst, what, RHAT_WARNING)
    else:
        logger.warning("only %d samples per chain: R-hat and ESS need at least 4; diagnostics skipped", s)
    if _is_chief(chains.strategy):
        posterior.save(run_dir / "posterior")
        save_npz(run_dir / "diagnostics.npz", **traces)
        save_json(run_dir / "metrics.json", metrics)
    logger.info("final %s", {m: v for m, v in metrics.items() if not m.startswith("chains/")})
    return metrics


def _is_chief(strategy: tf.distribute.Strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type in ("chief", None) or (resolver.task_type == "worker" and resolver.task_id == 0
                                                     and "chief" not in resolver.cluster_spec().as_dict())
