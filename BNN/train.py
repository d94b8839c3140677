"""Trains a BNN with scale-adapted SG-HMC and exports its posterior samples (spec sections 2.2-2.5).

The original's schedule (spec 2.4): burn-in adaptation in the first ``burn_in`` epochs of every ``reburn_every``-epoch
cycle; momentum and prior precisions resampled every ``resample_momentum_every`` / ``resample_prior_every`` iterations;
after burn-in a sample every ``save_every`` epochs, the last ``n_saves`` kept. Loss: mean minibatch NLL * N_train (spec
trap 11). ``--chains K`` pools K chains (:mod:`BNN.chains`, :mod:`BNN.diagnostics`).

Usage: ``python -m BNN.train --dataset lsat --preset paper --seed 0 --out runs/bnn_lsat_s0``. Writes ``config.json``,
``metrics.csv``, ``metrics.json``, ``posterior/``, ``diagnostics.npz`` and ``ckpt/chains_*/``; the same command resumes.

References: [1] Springenberg et al. Bayesian optimization with robust Bayesian neural networks. NeurIPS 2016.
[2] Antorán et al. Getting a CLUE. ICLR 2021, appendix B."""

from __future__ import annotations

import common.cli  # isort: skip  (first: quiets TensorFlow's start-up, see common.cli)
import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

import data
from BNN import diagnostics
from BNN.chains import ChainCheckpoints, ParallelChains, tf_log_level
from BNN.model import KINDS, Architecture, get_likelihood
from BNN.posterior import Posterior, evaluate
from BNN.sghmc import SGHMCParams
from common.config import option
from common.distribute import STRATEGIES, make_strategy
from common.errors import UserError
from common.io import save_json, save_npz
from common.runs import MetricsCSV, make_run_dir
from common.seeding import set_seed
from common.training import DivergedError, TrainingInterrupted

logger = logging.getLogger("BNN.train")  # the same name under `python -m BNN.train` (__main__)


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of a BNN run; defaults are the reference schedule (shared/reference/README.md)."""

    dataset: str = option("lsat", "data.load name, e.g. lsat, compas, digits")
    seed: int = option(0, "seeds init, sampler and shuffling")
    out: str = option("runs/bnn", "run folder (resumed if it exists)")
    data_dir: str | None = option(None, "folder of raw data files")
    arch: str = option("mlp", "mlp, or cnn (the fixed MNIST small CNN)")
    width: int = option(200, "hidden units (paper tabular BNN: 200)")
    depth: int = option(2, "hidden layers (paper tabular BNN: 2)")
    n_epochs: int = option(1200, "epoch cap (reference run: 1200)")
    batch_size: int = option(512, "minibatch size (notebooks: 512)")
    lr: float = option(1e-2, "SG-HMC step size")
    base_c: float = option(0.05, "SG-HMC friction C")
    prior_sigma: float = option(0.1, "initial prior std (gauss_sig)")
    alpha0: float = option(10.0, "Gamma hyper-prior shape")
    beta0: float = option(10.0, "Gamma hyper-prior rate")
    grad_std_mul: float | None = option(None, "clip at mean + this * std of recent grad norms (None: 30 cat, 20 gauss)")
    grad_buffer_len: int | None = option(None, "grad-norm buffer length (None: 1000 cat, 100 gauss)")
    burn_in: int = option(120, "burn-in epochs per re-burn cycle")
    adapt_while_sampling: bool = option(False, "keep the burn-in scale adaptation on after burn-in (DEVIATIONS.md)")
    save_every: int = option(20, "save a sample every k epochs (sim_steps)")
    n_saves: int = option(100, "keep the last N samples (N_saves)")
    resample_momentum_every: int = option(10, "iterations (resample_its)")
    resample_prior_every: int = option(50, "iterations (resample_prior_its)")
    reburn_every: int = option(10_000_000, "re-burn cycle in epochs")
    eval_every: int = option(10, "epochs between current-weight test evals")
    checkpoint_every: int = option(10, "epochs between resume checkpoints")
    drop_last_sample: bool = option(False, "evaluate without the last sample, as the original's off-by-one")
    chains: int = option(1, "independent SG-HMC chains, pooled (chain k is seeded seed + chain_offset + k)")
    chain_offset: int = option(0, "seed offset of the first chain: --chains 1 --chain-offset k reruns chain k alone")
    strategy: str = option("default", "tf.distribute strategy for the chains: default | mirrored | multiworker")
    progress: bool = option(True, "show a tqdm bar")
    deterministic: bool = option(False, "deterministic TF kernels")


PRESETS = {
    "paper": {},  # the reference schedule: Config's defaults
    # The companion MNIST schedule as the reference ran it (mnist-t10k-original.md).
    "mnist": {"dataset": "mnist_t10k", "width": 1200, "n_epochs": 60, "batch_size": 256, "burn_in": 10,
              "save_every": 2, "n_saves": 20, "resample_momentum_every": 50, "resample_prior_every": 15,
              "eval_every": 5, "checkpoint_every": 5},
    # The companion MNIST script's schedule (spec 2.4) on the official 60,000 / 10,000 split.
    "mnist_paper": {"dataset": "mnist", "width": 1200, "n_epochs": 250, "batch_size": 256, "burn_in": 20,
                    "save_every": 2, "n_saves": 100, "resample_momentum_every": 50, "resample_prior_every": 15,
                    "grad_std_mul": 20.0, "eval_every": 5, "checkpoint_every": 10,  # a checkpoint holds ~1 GB
                    "adapt_while_sampling": True},  # the original's frozen adaptation diverges here: DEVIATIONS.md
    # Seconds on a CPU: small net, a few epochs, samples from epoch 2 on.
    "tiny": {"dataset": "digits", "width": 32, "n_epochs": 6, "batch_size": 128, "burn_in": 2, "save_every": 1,
             "n_saves": 3, "resample_momentum_every": 5, "resample_prior_every": 10, "eval_every": 2,
             "checkpoint_every": 2, "progress": False},
}
PRESET_HELP = {
    "paper": "the reference schedule: 1200 epochs, 100 samples (the defaults)",
    "mnist": "the companion MNIST schedule: mnist_t10k, width 1200, 60 epochs, 20 samples",
    "mnist_paper": "the companion MNIST script on the official split: mnist, width 1200, 250 epochs, 100 samples; "
                   "the adaptation stays on while sampling (--adapt-while-sampling false: the original; diverges)",
    "tiny": "seconds, for tests: digits, width 32, 6 epochs, 3 samples, no progress bar",
}


def model_spec(config: Config, dataset: data.Dataset) -> tuple[Architecture, str, SGHMCParams]:
    """Architecture, likelihood name and sampler settings (the wrappers' likelihood-dependent clipping defaults)."""
    likelihood = "categorical" if dataset.task == "classification" else "gaussian"
    target_dim = dataset.n_classes if likelihood == "categorical" else dataset.y_train.shape[1]
    arch = Architecture(config.arch, dataset.x_train.shape[1], get_likelihood(likelihood).n_outputs(target_dim),
                        config.width, config.depth, dataset.image_shape if config.arch == "cnn" else None)
    is_cat = likelihood == "categorical"
    hparams = SGHMCParams(
        lr=config.lr, base_c=config.base_c, prior_sigma=config.prior_sigma, alpha0=config.alpha0, beta0=config.beta0,
        grad_std_mul=config.grad_std_mul if config.grad_std_mul is not None else (30.0 if is_cat else 20.0),
        grad_buffer_len=config.grad_buffer_len if config.grad_buffer_len is not None else (1000 if is_cat else 100))
    return arch, likelihood, hparams


def check(config: Config, dataset: data.Dataset) -> None:
    """The settings' mistakes that can be told before training (raises :class:`UserError`)."""
    if config.arch not in KINDS:
        raise UserError(f"unknown --arch {config.arch!r}; choose one of {', '.join(KINDS)}")
    if config.arch == "cnn" and dataset.image_shape is None:
        raise UserError(f"--arch cnn needs an image dataset (digits, mnist, mnist_t10k); {dataset.name} is tabular: "
                        f"use --arch mlp")
    for name in ("n_epochs", "batch_size", "save_every", "n_saves", "chains", "eval_every", "checkpoint_every",
                 "resample_momentum_every", "resample_prior_every", "reburn_every"):
        if getattr(config, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The training loop's settings (spec 2.4); :class:`Config` holds them under the same names."""

    n_epochs: int
    batch_size: int
    burn_in: int
    save_every: int
    n_saves: int
    resample_momentum_every: int
    resample_prior_every: int
    reburn_every: int
    eval_every: int
    checkpoint_every: int
    drop_last_sample: bool = False
    progress: bool = True
    adapt_while_sampling: bool = False

    @classmethod
    def from_config(cls, config: Config) -> Schedule:
        return cls(**{field.name: getattr(config, field.name) for field in dataclasses.fields(cls)})


def train(dataset: data.Dataset, arch: Architecture, likelihood: str, hparams: SGHMCParams, schedule: Schedule,
          run_dir: str | Path, *, seed: int = 0, n_chains: int = 1, strategy: str = "default") -> dict[str, float]:
    """Runs (or resumes) SG-HMC on ``dataset``, exports the pooled posterior into ``run_dir`` and returns the metrics.

    ``seed``: chain 0's (chain k: ``seed + k``); ``n_chains``: a multiple of the ``strategy``'s replicas. Raises
    ``TrainingInterrupted`` on Ctrl-C (the same call resumes) and ``DivergedError`` on a non-finite NLL."""
    run_dir = Path(run_dir)
    chains = ParallelChains.build(make_strategy(strategy), arch, likelihood, seed, n_chains, hparams,
                                  schedule.n_saves, dataset.pixel_norm)
    train_seconds = tf.Variable(0.0, dtype=tf.float64, name="train_seconds")
    checkpoints = ChainCheckpoints(chains, run_dir / "ckpt", train_seconds=train_seconds)
    checkpoints.restore()
    start = chains.epoch

    train_epoch = chains.epoch_function(dataset.x_train, dataset.y_train, schedule.batch_size,
                                        schedule.resample_momentum_every, schedule.resample_prior_every)
    test_metrics = chains.metrics_function(dataset.x_test, dataset.y_test)

    is_cat = dataset.task == "classification"
    n_train = len(dataset.x_train)
    metrics_csv = MetricsCSV(run_dir / "metrics.csv", resume_epoch=start)
    bar = tqdm(range(start, schedule.n_epochs), initial=start, total=schedule.n_epochs, desc=f"SG-HMC x{n_chains}",
               disable=not schedule.progress)
    epoch_level = logging.DEBUG if schedule.progress else logging.INFO  # a bar shows the progress itself
    checkpointed = i = start  # epochs in the latest checkpoint; the epoch running
    try:
        for i in bar:
            t0 = time.perf_counter()
            cycle_epoch = i % schedule.reburn_every
            nll_sum, err_sum = (v.numpy() for v in train_epoch(tf.constant(cycle_epoch < schedule.burn_in
                                                                         or schedule.adapt_while_sampling)))
            if not np.all(np.isfinite(nll_sum)):
                bad = np.flatnonzero(~np.isfinite(nll_sum)).tolist()
                raise DivergedError(f"non-finite training NLL at epoch {i} in chains {bad}: the run diverged; "
                                    "lower --lr")
            if cycle_epoch >= schedule.burn_in and i % schedule.save_every == 0:
                chains.keep_samples()
            chains.set_epoch(i + 1)
            row = {"epoch": i, "train/nll": float(nll_sum.mean()) / n_train,
                   "n_samples": min(chains.n_added, schedule.n_saves)}
            err = err_sum.astype(np.float64) / n_train
            row["train/accuracy" if is_cat else "train/rmse"] = float(np.mean(1.0 - err if is_cat else np.sqrt(err)))
            evaluated = (i + 1) % schedule.eval_every == 0 or i + 1 == schedule.n_epochs
            nll_c = err_c = np.full(n_chains, np.nan)
            if evaluated:
                nll_c, err_c = (v.numpy() for v in test_metrics())
            row["test_current/nll"] = float(np.mean(nll_c))
            if is_cat:
                row["test_current/accuracy"] = float(np.mean(1.0 - err_c))
            else:
                row["test_current/rmse"] = float(np.mean(np.sqrt(err_c))) * float(dataset.y_std[0])
            for c in range(n_chains if n_chains > 1 else 0):
                row[f"train/nll/chain_{c}"] = float(nll_sum[c]) / n_train
            train_seconds.assign_add(time.perf_counter() - t0)
            row["seconds"] = time.perf_counter() - t0
            metrics_csv.append(row)
            if evaluated:
                bar.set_postfix(nll=row["train/nll"], samples=row["n_samples"])
                logger.log(epoch_level, "epoch %d %s", i, {k: round(v, 4) for k, v in row.items()
                                                           if isinstance(v, float) and "chain_" not in k})
            if (i + 1) % schedule.checkpoint_every == 0 or i + 1 == schedule.n_epochs:
                checkpoints.save(i + 1)
                checkpointed = i + 1
    except KeyboardInterrupt as err:
        raise TrainingInterrupted(i, checkpointed, run_dir) from err
    finally:
        bar.close()
    return export(chains, dataset, run_dir, float(train_seconds) / max(chains.epoch, 1), schedule.drop_last_sample)


def export(chains: ParallelChains, dataset: data.Dataset, run_dir: str | Path, seconds_per_epoch: float,
           drop_last_sample: bool = False) -> dict[str, float]:
    """Pools the samples, evaluates and writes ``posterior/``, ``metrics.json``, ``diagnostics.npz`` (chief only)."""
    run_dir = Path(run_dir)
    group = next(iter(chains.groups.values()))
    arch, likelihood = group.arch, group.likelihood.name
    samples = chains.gather_samples()  # [K, n_kept, ...]
    k, s = next(iter(samples.values())).shape[:2]
    if s == 0:
        logger.warning("no weight sample was saved (n_epochs <= burn_in?): exporting the current weights, S = 1 "
                       "per chain")
        samples = chains.gather_samples(current=True)
        s = 1
    if drop_last_sample and s > 1:
        samples, s = {n: v[:, :-1] for n, v in samples.items()}, s - 1
    y_std = float(dataset.y_std[0])
    posterior = Posterior(arch, likelihood, {n: v.reshape(k * s, *v.shape[2:]) for n, v in samples.items()},
                          dataset.pixel_norm)
    metrics = {f"test/{m}": v for m, v in evaluate(posterior, dataset.x_test, dataset.y_test, y_std=y_std).items()}
    metrics.update({"seconds_per_epoch": seconds_per_epoch, "n_samples": posterior.n_samples})
    if k > 1:
        metrics.update({"n_chains": k, "n_replicas": chains.strategy.num_replicas_in_sync})
    with tf_log_level(logging.ERROR):  # one traced forward per chain's posterior: TF warns about the retracing
        for c in range(k if k > 1 else 0):
            per_chain = evaluate(posterior[c * s:(c + 1) * s], dataset.x_test, dataset.y_test, y_std=y_std)
            metrics.update({f"chains/{c}/test/{m}": v for m, v in per_chain.items()})
        traces = diagnostics.predictive_traces(samples, arch, likelihood, dataset.pixel_norm, dataset.x_test,
                                               dataset.y_test)
    metrics.update(diagnostics.diagnose(traces))
    if chains.is_chief:
        posterior.save(run_dir / "posterior")
        save_npz(run_dir / "diagnostics.npz", **traces)
        save_json(run_dir / "metrics.json", metrics)
    logger.info("final %s", {m: v for m, v in metrics.items() if not m.startswith("chains/")})
    return metrics


def main(config: Config, dataset: data.Dataset | None = None) -> dict[str, float]:
    """Trains, exports the posterior and returns the test metrics; ``dataset`` replaces ``data.load``."""
    if config.strategy not in STRATEGIES:
        raise UserError(f"unknown --strategy {config.strategy!r}; choose one of {', '.join(STRATEGIES)}")
    data.check_named(dataset, config.dataset)
    set_seed(config.seed, config.deterministic)
    if dataset is None:
        dataset = data.load(config.dataset, data_dir=config.data_dir, seed=config.seed)
    check(config, dataset)
    spec = model_spec(config, dataset)
    run_dir = make_run_dir(config.out, dataclasses.asdict(config), kind="BNN.train",
                           resume_safe={"n_epochs", "eval_every", "checkpoint_every"})
    return train(dataset, *spec, Schedule.from_config(config), run_dir, seed=config.seed + config.chain_offset,
                 n_chains=config.chains, strategy=config.strategy)


if __name__ == "__main__":
    common.cli.run_script(main, Config, PRESETS, prog="python -m BNN.train", description=__doc__.split("\n")[0],
                          preset_help=PRESET_HELP, resumable=True)
