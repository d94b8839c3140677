"""Trains a BNN with scale-adapted SG-HMC and exports its posterior samples (spec sections 2.2-2.5).

The chain follows the original's schedule (spec 2.4): burn-in adaptation during the first ``burn_in`` epochs of
every ``reburn_every``-epoch cycle; momentum resampled every ``resample_momentum_every`` iterations and prior
precisions every ``resample_prior_every`` iterations (both at iteration 0); after burn-in a weight sample is saved
at every epoch divisible by ``save_every`` and the last ``n_saves`` are kept. The loss is the mean minibatch NLL
times N_train (spec trap 11). Test metrics use all kept samples (``--drop-last-sample`` reproduces the original's
off-by-one).

Usage::

    python -m BNN.train --dataset lsat --preset paper --seed 0 --out runs/bnn_lsat_s0
    python -m BNN.train --dataset digits --preset tiny --out runs/bnn_tiny

Writes into ``--out``: ``config.json``, ``metrics.csv`` (one row per epoch), ``metrics.json``, ``posterior/``
(``samples.npz`` + ``config.json``, see ``BNN.posterior``) and ``ckpt/`` (resume state: weights, sampler state,
random generators, sample buffer). Rerunning the same command resumes from the latest checkpoint.

#### References
[1] Springenberg, J. T., Klein, A., Falkner, S., Hutter, F. "Bayesian optimization with robust Bayesian neural
    networks." NeurIPS 2016.
[2] Antorán, J., Bhatt, U., Adel, T., Weller, A., Hernández-Lobato, J. M. "Getting a CLUE: A method for explaining
    uncertainty estimates." ICLR 2021, appendix B.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

import data
from BNN.model import BNN, Architecture, get_likelihood
from BNN.posterior import Posterior, SampleBuffer, evaluate
from BNN.sghmc import ScaleAdaptedSGHMC, SGHMCParams
from common.config import option, parse_config
from common.utils import MetricsCSV, make_run_dir, save_json, set_seed, setup_logging

logger = logging.getLogger(__name__)


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
    save_every: int = option(20, "save a sample every k epochs (sim_steps)")
    n_saves: int = option(100, "keep the last N samples (N_saves)")
    resample_momentum_every: int = option(10, "iterations (resample_its)")
    resample_prior_every: int = option(50, "iterations (resample_prior_its)")
    reburn_every: int = option(10_000_000, "re-burn cycle in epochs")
    eval_every: int = option(10, "epochs between current-weight test evals")
    checkpoint_every: int = option(10, "epochs between resume checkpoints")
    drop_last_sample: bool = option(False, "evaluate without the last sample, as the original's off-by-one")
    progress: bool = option(True, "show a tqdm bar")
    deterministic: bool = option(False, "deterministic TF kernels")


PRESETS = {
    "paper": {},  # the reference schedule: Config's defaults
    # The companion MNIST schedule as the reference ran it (mnist-t10k-original.md).
    "mnist": {"dataset": "mnist_t10k", "width": 1200, "n_epochs": 60, "batch_size": 256, "burn_in": 10,
              "save_every": 2, "n_saves": 20, "resample_momentum_every": 50, "resample_prior_every": 15,
              "eval_every": 5, "checkpoint_every": 5},
    # Seconds on a CPU: small net, a few epochs, samples from epoch 2 on.
    "tiny": {"dataset": "digits", "width": 32, "n_epochs": 6, "batch_size": 128, "burn_in": 2, "save_every": 1,
             "n_saves": 3, "resample_momentum_every": 5, "resample_prior_every": 10, "eval_every": 2,
             "checkpoint_every": 2, "progress": False},
}


def build_model(config: Config, dataset: data.Dataset) -> tuple[BNN, ScaleAdaptedSGHMC]:
    """The BNN (PyTorch-default init) and its sampler, with the wrappers' likelihood-dependent clipping defaults."""
    likelihood = "categorical" if dataset.task == "classification" else "gaussian"
    target_dim = dataset.n_classes if likelihood == "categorical" else dataset.y_train.shape[1]
    arch = Architecture(config.arch, dataset.x_train.shape[1], get_likelihood(likelihood).n_outputs(target_dim),
                        config.width, config.depth, dataset.image_shape if config.arch == "cnn" else None)
    bnn = BNN(arch, likelihood, seed=config.seed, input_norm=dataset.pixel_norm)
    is_cat = likelihood == "categorical"
    hparams = SGHMCParams(
        lr=config.lr, base_c=config.base_c, prior_sigma=config.prior_sigma, alpha0=config.alpha0, beta0=config.beta0,
        grad_std_mul=config.grad_std_mul if config.grad_std_mul is not None else (30.0 if is_cat else 20.0),
        grad_buffer_len=config.grad_buffer_len if config.grad_buffer_len is not None else (1000 if is_cat else 100))
    return bnn, ScaleAdaptedSGHMC(bnn.variables_list, hparams, seed=config.seed)


def make_train_epoch(bnn: BNN, sampler: ScaleAdaptedSGHMC, x: np.ndarray, y: np.ndarray, batch_size: int,
                     resample_momentum_every: int, resample_prior_every: int, data_rng: tf.random.Generator):
    """One epoch of SG-HMC as a single ``tf.function`` (no per-step Python overhead).

    Returns:
      ``train_epoch(burn_in: bool tensor) -> (summed NLL, summed error)`` over the epoch, where the error is the
      number of misclassifications or the summed squared error of the mean (normalised units).
    """
    x, y = tf.constant(x), tf.constant(y)
    n_train = int(x.shape[0])
    n_batches = math.ceil(n_train / batch_size)
    variables = bnn.variables_list

    @tf.function(input_signature=[tf.TensorSpec([], tf.bool)])
    def train_epoch(burn_in):
        order = tf.argsort(data_rng.uniform([n_train]))  # a fresh random permutation
        nll_sum, err_sum = tf.constant(0.0), tf.constant(0.0)
        for b in tf.range(n_batches):
            idx = order[b * batch_size:tf.minimum((b + 1) * batch_size, n_train)]
            xb, yb = tf.gather(x, idx), tf.gather(y, idx)
            with tf.GradientTape() as tape:
                out = bnn(xb)
                nll = bnn.likelihood.nll(out, yb)  # [B]
                loss = tf.reduce_mean(nll) * n_train  # minibatch estimate of the full-data NLL (spec trap 11)
            grads = tape.gradient(loss, variables)
            it = sampler.iterations
            sampler.step(grads, burn_in, it % resample_momentum_every == 0, it % resample_prior_every == 0)
            nll_sum += tf.reduce_sum(nll)
            err_sum += tf.reduce_sum(bnn.likelihood.error(out, yb))
        return nll_sum, err_sum

    return train_epoch


def current_weights_metrics(bnn: BNN, dataset: data.Dataset, evaluate_now: bool = True) -> dict[str, float]:
    """Test NLL and accuracy/RMSE of the current single weight set (the original's during-training dev eval).

    With ``evaluate_now=False`` the same keys are returned with NaN values (metrics.csv has a fixed header).
    """
    is_cat = dataset.task == "classification"
    nll = err = float("nan")
    if evaluate_now:
        out = bnn(dataset.x_test)
        nll = float(tf.reduce_mean(bnn.likelihood.nll(out, dataset.y_test)))
        err = float(tf.reduce_mean(bnn.likelihood.error(out, dataset.y_test)))
    if is_cat:
        return {"test_current/nll": nll, "test_current/accuracy": 1.0 - err}
    return {"test_current/nll": nll, "test_current/rmse": math.sqrt(err) * float(dataset.y_std[0])}


def main(config: Config) -> dict[str, float]:
    """Trains, checkpoints, exports the posterior and returns the final test metrics (see module docstring)."""
    set_seed(config.seed, config.deterministic)
    run_dir = make_run_dir(config.out, dataclasses.asdict(config))
    dataset = data.load(config.dataset, data_dir=config.data_dir, seed=config.seed)
    bnn, sampler = build_model(config, dataset)
    buffer = SampleBuffer(bnn.arch, config.n_saves)
    data_rng = tf.random.Generator.from_seed(config.seed).split(1)[0]  # shuffling stream, apart from the sampler's
    epoch = tf.Variable(0, dtype=tf.int64, name="epoch")
    train_seconds = tf.Variable(0.0, dtype=tf.float64, name="train_seconds")
    ckpt = tf.train.Checkpoint(bnn=bnn, sampler=sampler, buffer=buffer, data_rng=data_rng, epoch=epoch,
                               train_seconds=train_seconds)
    manager = tf.train.CheckpointManager(ckpt, str(run_dir / "ckpt"), max_to_keep=2)
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        logger.info("resumed from %s at epoch %d", manager.latest_checkpoint, int(epoch))
    start = int(epoch)
    train_epoch = make_train_epoch(bnn, sampler, dataset.x_train, dataset.y_train, config.batch_size,
                                   config.resample_momentum_every, config.resample_prior_every, data_rng)
    metrics_csv = MetricsCSV(run_dir / "metrics.csv", resume_epoch=start)
    n_train = len(dataset.x_train)
    bar = tqdm(range(start, config.n_epochs), initial=start, total=config.n_epochs, desc="SG-HMC",
               disable=not config.progress)
    for i in bar:
        t0 = time.perf_counter()
        cycle_epoch = i % config.reburn_every
        nll_sum, err_sum = train_epoch(tf.constant(cycle_epoch < config.burn_in))
        if not np.isfinite(float(nll_sum)):
            raise FloatingPointError(f"non-finite training NLL at epoch {i}: lower --lr or check the data")
        if cycle_epoch >= config.burn_in and i % config.save_every == 0:
            buffer.add(bnn.params)
        row = {"epoch": i, "train/nll": float(nll_sum) / n_train, "n_samples": buffer.n_kept}
        row["train/accuracy" if dataset.task == "classification" else "train/rmse"] = (
            1.0 - float(err_sum) / n_train if dataset.task == "classification" else math.sqrt(float(err_sum) / n_train))
        evaluated = (i + 1) % config.eval_every == 0 or i + 1 == config.n_epochs
        row.update(current_weights_metrics(bnn, dataset, evaluate_now=evaluated))
        train_seconds.assign_add(time.perf_counter() - t0)
        row["seconds"] = time.perf_counter() - t0
        metrics_csv.append(row)
        epoch.assign(i + 1)
        if evaluated:
            logger.info("epoch %d %s", i, {k: round(v, 4) for k, v in row.items() if isinstance(v, float)})
            bar.set_postfix(nll=row["train/nll"], samples=buffer.n_kept)
        if (i + 1) % config.checkpoint_every == 0 or i + 1 == config.n_epochs:
            manager.save(checkpoint_number=i + 1)
    return export(config, run_dir, bnn, buffer, dataset, float(train_seconds) / max(int(epoch), 1))


def export(config: Config, run_dir: Path, bnn: BNN, buffer: SampleBuffer, dataset: data.Dataset,
           seconds_per_epoch: float) -> dict[str, float]:
    """Evaluates the posterior predictive on the test set, writes ``posterior/`` and ``metrics.json``."""
    if buffer.n_kept == 0:
        logger.warning("no weight sample was saved (n_epochs <= burn_in?): exporting the current weights as S = 1")
        samples = {k: v.numpy()[None] for k, v in bnn.params.items()}
    else:
        samples = buffer.samples()
    posterior = Posterior(bnn.arch, bnn.likelihood.name, samples, bnn.input_norm)
    if config.drop_last_sample and posterior.n_samples > 1:
        posterior = posterior[:-1]
    test = evaluate(posterior, dataset.x_test, dataset.y_test, y_std=float(dataset.y_std[0]))
    posterior.save(run_dir / "posterior")
    metrics = {f"test/{k}": v for k, v in test.items()}
    metrics.update({"seconds_per_epoch": seconds_per_epoch, "n_samples": posterior.n_samples})
    save_json(run_dir / "metrics.json", metrics)
    logger.info("final %s", metrics)
    return metrics


if __name__ == "__main__":
    setup_logging()
    logging.getLogger("absl").setLevel(logging.WARNING)  # checkpoint writes log an INFO line each
    main(parse_config(Config, PRESETS, sys.argv[1:], description=__doc__.split("\n")[0]))
