"""Placement of parallel SG-HMC chains on ``tf.distribute``, and their checkpoints.

``python -m BNN.train --chains K`` runs K independent chains, chain k seeded ``seed + chain_offset + k`` on the data
split of ``--seed``, and pools their samples into one posterior of ``K * n_saves`` samples. The chains are split into
one group per replica of the strategy (``default``, ``mirrored`` or ``multiworker``); within a group they are vectorized
over a leading chain axis (``BNN.sghmc`` with one seed per chain), each on its own minibatch. Each epoch is one
``strategy.run`` (no cross-replica reduction); per-chain outputs and samples are collected with ``strategy.gather`` in
chain order. A group of one chain is bit for bit the single-chain run (``--chain-offset k``); larger groups match it up
to the rounding of batched matmuls. Each group checkpoints under ``ckpt/chains_<first>-<last>/``
(:class:`ChainCheckpoints`)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
from pathlib import Path

import numpy as np
import tensorflow as tf

from BNN.model import Architecture, forward, get_likelihood, init_params
from BNN.posterior import SampleBuffer
from BNN.sghmc import ScaleAdaptedSGHMC, SGHMCParams
from common.distribute import replica_id as _replica_id
from common.errors import UserError
from common.seeding import philox

logger = logging.getLogger(__name__)


class ChainGroup(tf.Module):
    """``len(seeds)`` SG-HMC chains of one BNN vectorized over a leading chain axis; chain k is seeded ``seeds[k]``."""

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
        self.data_rngs = [philox(s).split(1)[0] for s in self.seeds]
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
        """A likelihood's per-row ``fn(out, y)`` for outputs ``[K, B, out]`` -> ``[K, B]`` (unstacked: ``[1, B]``)."""
        if not self.stacked:
            return fn(out, y)[None]
        flat_y = tf.reshape(y, tf.concat([[-1], tf.shape(y)[2:]], 0))
        return tf.reshape(fn(tf.reshape(out, [-1, out.shape[-1]]), flat_y), tf.shape(out)[:2])

    def train_epoch(self, x: tf.Tensor, y: tf.Tensor, batch_size: int, burn_in: tf.Tensor,
                    resample_momentum_every: int, resample_prior_every: int) -> tuple[tf.Tensor, tf.Tensor]:
        """One SG-HMC epoch of every chain; returns summed NLL and error ``[K]`` (loss: mean NLL * N_train, spec trap
        11)."""
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
        """name -> ``[K, n_kept, *shape]``, oldest first (``current``: the current weights, ``[K, 1, *shape]``)."""
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
    seed: int = 0  # of chain 0; chain k is seeded seed + k

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
        return cls(strategy, groups, dict(zip(ids, devices)), n_chains, seed)

    def _group(self) -> ChainGroup:
        return self.groups[_replica_id()]

    @property
    def epoch(self) -> int:
        """Epochs done (every group has the same count)."""
        return int(next(iter(self.groups.values())).epoch)

    def set_epoch(self, epoch: int) -> None:
        for group in self.groups.values():
            group.epoch.assign(epoch)

    @property
    def n_added(self) -> int:
        """Weight samples added to each chain's buffer so far."""
        return int(next(iter(self.groups.values())).buffer.n_added)

    def keep_samples(self) -> None:
        """Adds every chain's current weights to its sample buffer."""
        for group in self.groups.values():
            group.buffer.add(group.params)

    @property
    def is_chief(self) -> bool:
        """Whether this process writes the exports (the chief, or worker 0 of a cluster without one)."""
        resolver = getattr(self.strategy, "cluster_resolver", None)
        if resolver is None or not resolver.cluster_spec().as_dict():
            return True
        return resolver.task_type in ("chief", None) or (resolver.task_type == "worker" and resolver.task_id == 0
                                                         and "chief" not in resolver.cluster_spec().as_dict())

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
        """``epoch(burn_in) -> (summed NLL [K], summed error [K])`` of every chain, as a ``tf.function``."""
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
        # One gather per tensor (a nested structure kept only one replica's values in eager mode); the retracing
        # warnings this causes once per export are silenced.
        with tf_log_level(logging.ERROR):
            return {name: self.strategy.gather(v, axis=0).numpy() for name, v in values.items()}


@contextlib.contextmanager
def tf_log_level(level: int):
    """TensorFlow's Python logger at ``level`` inside the block (to silence its warnings about retracing)."""
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


# ------------------------------------------------------------------------------------------------- checkpoints
class ChainCheckpoints:
    """One ``CheckpointManager`` per local group under ``ckpt_dir/chains_<first>-<last>/``; ``UserError`` for another
    layout."""

    def __init__(self, chains: ParallelChains, ckpt_dir: str | Path, **extra: tf.Module | tf.Variable):
        self.ckpt_dir, self.n_chains = Path(ckpt_dir), chains.n_chains
        first = chains.seed
        layouts = {f"chains_{g.seeds[0] - first:03d}-{g.seeds[-1] - first:03d}": g for g in chains.groups.values()}
        stale = sorted(p.name for p in self.ckpt_dir.glob("chains_*") if p.name not in layouts) \
            if self.ckpt_dir.exists() else []
        if stale:
            raise UserError(f"{self.ckpt_dir} holds checkpoints of another chain layout ({stale}); resume with the "
                             f"--chains and number of replicas that wrote them, or use a new --out")
        self.managers = []
        for name, group in layouts.items():
            ckpt = tf.train.Checkpoint(group=group, **extra)
            self.managers.append((tf.train.CheckpointManager(ckpt, str(self.ckpt_dir / name), max_to_keep=2), ckpt))

    def latest(self) -> int | None:
        """The latest checkpoint number that every group has (None if none)."""
        numbers = [{int(re.search(r"-(\d+)$", p).group(1)) for p in m.checkpoints} for m, _ in self.managers]
        common = set.intersection(*numbers) if numbers else set()
        return max(common) if common else None

    def restore(self) -> int | None:
        """Restores every group (and the extras) from :meth:`latest`, if any; returns its number."""
        number = self.latest()
        if number is not None:
            for manager, ckpt in self.managers:
                path = next(p for p in manager.checkpoints if p.endswith(f"-{number}"))
                ckpt.restore(path).assert_existing_objects_matched()
            logger.info("resumed from %s at epoch %d (%d chains)", self.ckpt_dir, number, self.n_chains)
        return number

    def save(self, number: int) -> None:
        """Saves every group as checkpoint ``number`` (the epochs done)."""
        for manager, _ in self.managers:
            manager.save(checkpoint_number=number)
