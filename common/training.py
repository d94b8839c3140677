"""Resumable training with early stopping on a dev metric and best-checkpoint export (spec 4.8)."""

from __future__ import annotations

import csv
import logging
import math
import os
import re
import time
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import tensorflow as tf
from tqdm.auto import tqdm

from common.errors import UserError
from common.runs import MetricsCSV

logger = logging.getLogger(__name__)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C in a resumable training loop (a ``KeyboardInterrupt``): the 0-based ``epoch`` that was running,
    ``checkpointed`` epochs (where a rerun resumes) and ``run_dir``."""

    def __init__(self, epoch: int, checkpointed: int, run_dir: str | os.PathLike):
        self.epoch, self.checkpointed, self.run_dir = int(epoch), int(checkpointed), Path(run_dir)
        n = self.checkpointed
        saved = f"{n} epoch{'' if n == 1 else 's'} checkpointed in {self.run_dir}" if n else "nothing checkpointed yet"
        super().__init__(f"interrupted at epoch {self.epoch} ({saved}); run the same command again to resume")


def checkpoint_number(path: str | None) -> int:
    """The number of a ``tf.train.CheckpointManager`` checkpoint path (``.../ckpt-12`` -> 12; None -> 0)."""
    match = re.search(r"-(\d+)$", path or "")
    return int(match.group(1)) if match else 0


class DivergedError(UserError, FloatingPointError):
    """A training run's loss or dev value is not finite; the message names the setting to change."""


class RunState:
    """Checkpointed bookkeeping of a run (``run_dir/ckpt``, with ``trackables`` such as model, optimizer, RNG):
    ``epochs_done`` (int64, the next epoch), ``best_value`` (float64, -inf at first), ``best_epoch`` (int64, -1)."""

    def __init__(self, run_dir: str | os.PathLike, max_to_keep: int = 2, **trackables: Any):
        self.epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.best_value = tf.Variable(-math.inf, dtype=tf.float64, trainable=False)
        self.best_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False)
        self.checkpoint = tf.train.Checkpoint(epochs_done=self.epochs_done, best_value=self.best_value,
                                              best_epoch=self.best_epoch, **trackables)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(Path(run_dir) / "ckpt"), max_to_keep)

    def restore(self) -> int:
        """Restores the latest checkpoint if any; returns the epoch to start from."""
        if self.manager.latest_checkpoint:
            self.checkpoint.restore(self.manager.latest_checkpoint).expect_partial()
            logger.info("resumed from %s: %d epochs done, best %.5g at epoch %d", self.manager.latest_checkpoint,
                        int(self.epochs_done), float(self.best_value), int(self.best_epoch))
        return int(self.epochs_done)

    def stopped_early(self, early_stop: int | None) -> bool:
        """The original's rule, checked after epoch ``epochs_done - 1``: ``epoch - best_epoch > early_stop``."""
        done = int(self.epochs_done)
        return early_stop is not None and done > 0 and (done - 1) - int(self.best_epoch) > early_stop


def fit_with_early_stopping(state: RunState, *, max_epochs: int, early_stop: int | None,
                            train_epoch: Callable[[int], Mapping[str, float]],
                            evaluate: Callable[[], Mapping[str, float]], monitor: str,
                            export_best: Callable[[int], None], csv_path: str | os.PathLike,
                            progress: bool = True) -> dict[str, float]:
    """Runs (or resumes) the epoch loop, maximizing the dev value ``monitor`` of ``evaluate()`` (an ELBO);
    ``export_best(epoch)`` runs when it improves, before the checkpoint. Returns ``epochs_run``, ``best_epoch``,
    ``best/<monitor>``, ``seconds_per_epoch``. Raises DivergedError (non-finite dev value) or TrainingInterrupted."""
    start = state.restore()
    metrics_csv = MetricsCSV(csv_path, resume_epoch=start)
    if state.stopped_early(early_stop):
        logger.info("run had already stopped early at epoch %d", start - 1)
    else:
        bar = tqdm(range(start, max_epochs), initial=start, total=max_epochs, disable=not progress, desc="epochs")
        # per-epoch lines would break up the progress bar (which shows the monitored value)
        epoch_level = logging.DEBUG if progress else logging.INFO
        epoch = start
        try:
            for epoch in bar:
                t0 = time.perf_counter()
                row = {"epoch": epoch, **train_epoch(epoch)}
                row.update(evaluate())
                value = float(row[monitor])
                if not math.isfinite(value):
                    raise DivergedError(f"{monitor} = {value} at epoch {epoch}: the run diverged; lower the "
                                        "learning rate (--lr) or check the data")
                if value > float(state.best_value):
                    export_best(epoch)
                    state.best_value.assign(value)
                    state.best_epoch.assign(epoch)
                state.epochs_done.assign(epoch + 1)
                state.manager.save(checkpoint_number=epoch + 1)
                row["seconds"] = time.perf_counter() - t0
                metrics_csv.append(row)
                bar.set_postfix({monitor: f"{value:.4f}", "best": f"{float(state.best_value):.4f}"})
                logger.log(epoch_level, "epoch %d: %s", epoch,
                           ", ".join(f"{k}={float(v):.5g}" for k, v in row.items() if k != "epoch"))
                if state.stopped_early(early_stop):
                    logger.info("early stop at epoch %d (best epoch %d)", epoch, int(state.best_epoch))
                    break
        except KeyboardInterrupt as err:
            if isinstance(err, TrainingInterrupted):
                raise
            raise TrainingInterrupted(epoch, checkpoint_number(state.manager.latest_checkpoint),
                                      Path(csv_path).parent) from err
        finally:
            bar.close()  # the interrupted bar keeps its line; what is printed next starts on a new one
    with open(csv_path, newline="") as f:
        seconds = [float(r["seconds"]) for r in csv.DictReader(f)]
    return {"epochs_run": int(state.epochs_done), "best_epoch": int(state.best_epoch),
            f"best/{monitor}": float(state.best_value),
            "seconds_per_epoch": sum(seconds) / len(seconds) if seconds else float("nan")}


def shuffled_batches(generator: tf.random.Generator, n: int, batch_size: int) -> tf.Tensor:
    """A fresh permutation of ``range(n)`` as ``[n_batches, batch_size]``, the last batch padded with -1."""
    perm = tf.argsort(generator.uniform([n]))
    n_batches = -(-n // batch_size)
    padded = tf.concat([perm, -tf.ones([n_batches * batch_size - n], perm.dtype)], axis=0)
    return tf.reshape(padded, [n_batches, batch_size])


def make_train_epoch(train_step: Callable[[tf.Tensor], tf.Tensor], x_train, generator: tf.random.Generator,
                     batch_size: int, key: str = "train/elbo",
                     jit_compile: bool = False) -> Callable[[int], dict[str, float]]:
    """One epoch of ``train_step`` (``x_batch -> mean ELBO``) over shuffled batches of ``x_train``, one ``tf.function``;
    ``jit_compile``: XLA (repeatable, other random numbers). Returns ``epoch -> {key: batch-size-weighted mean}``."""
    x_all = tf.constant(x_train)
    n = int(x_all.shape[0])
    if jit_compile:
        train_step = tf.function(train_step, jit_compile=True)

    @tf.function
    def run(batches):  # [n_batches, batch_size] int, -1 padded
        total, count = tf.constant(0.0), tf.constant(0.0)
        for i in tf.range(tf.shape(batches)[0]):
            xb = tf.gather(x_all, tf.boolean_mask(batches[i], batches[i] >= 0))  # [b, D]
            vlb = train_step(xb)
            size = tf.cast(tf.shape(xb)[0], tf.float32)
            total, count = total + vlb * size, count + size
        return total / count

    def train_epoch(epoch: int) -> dict[str, float]:
        return {key: float(run(shuffled_batches(generator, n, batch_size)))}

    return train_epoch


_TRACED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def traced(model: Any, method: str) -> Callable:
    """``tf.function(getattr(model, method))``, traced once per model and method (not again every epoch)."""
    per_model = _TRACED.setdefault(model, {})
    if method not in per_model:
        per_model[method] = tf.function(getattr(model, method), reduce_retracing=True)
    return per_model[method]


def optimizer_step(model: Any, optimizer: Any, loss_fn: Callable[[], tuple[tf.Tensor, tf.Tensor]]) -> tf.Tensor:
    """One gradient step on ``model.trainable_variables`` for ``loss_fn() -> (loss, report)``; returns ``report``."""
    with tf.GradientTape() as tape:
        loss, report = loss_fn()
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return report


def mean_terms(step: Callable[[tf.Tensor], Mapping[str, tf.Tensor]], x, keys: tuple[str, ...],
               batch_size: int) -> dict[str, float]:
    """Per-row means of ``step``'s ``keys`` terms over ``x``, ``batch_size`` rows at a time (eval-mode ELBOs)."""
    sums = dict.fromkeys(keys, 0.0)
    for start in range(0, len(x), batch_size):
        terms = step(tf.constant(x[start:start + batch_size]))
        for key in keys:
            sums[key] += float(tf.reduce_sum(terms[key]))
    return {key: value / len(x) for key, value in sums.items()}
