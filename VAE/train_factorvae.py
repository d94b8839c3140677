"""Trains FactorVAE (Kim & Mnih [1]) or AD-FactorVAE (Liu et al. [2]) on dSprites, by iterations, resumably.

Each iteration draws two batches (with replacement): one trains the VAE (ELBO + ``gamma`` * TC [+ ``ad_weight`` *
L_AD]), the other, permuted per dimension, the discriminator (``VAE.factorvae``). Defaults: batch 64, latent 10, Adam
1e-4 (0.9, 0.999) and 1e-4 (0.5, 0.9), gamma 40, lambda 40, 300k iterations. The factor score (``VAE.disentanglement``)
is logged every ``score_every`` iterations.

References: [1] Kim & Mnih. Disentangling by Factorising. ICML 2018. [2] Liu et al. Towards Visually Explaining VAEs.
CVPR 2020."""

from __future__ import annotations

import common.cli  # isort: skip  (first: quiets TensorFlow's start-up, see common.cli)
import csv
import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from common.config import option
from common.errors import UserError
from common.io import atomic_path, save_json
from common.runs import make_run_dir
from common.seeding import philox, set_seed
from common.training import DivergedError, RunState, TrainingInterrupted, checkpoint_number
from data import dsprites
from VAE.disentanglement import PRESETS as SCORE_PRESETS
from VAE.disentanglement import DSpritesFactors, factor_score, preset
from VAE.factorvae import MAP_FORMS, REDUCTIONS, FactorVAE, discriminator, make_train_step, save_factorvae

logger = logging.getLogger(__name__)

MODELS = ("factorvae", "ad_factorvae")
ADAM_EPSILON = 1e-8  # PyTorch's default, as both reproductions
LOSS_KEYS = ("recon", "kl", "tc", "ad", "vae_loss", "disc_loss", "disc_accuracy")


@dataclass(frozen=True)
class Config:
    """Every setting of a (AD-)FactorVAE run; the defaults are the paper settings."""

    model: str = option("factorvae", "factorvae | ad_factorvae (adds the attention disentanglement loss)")
    data_source: str = option("npz", "npz (the original dSprites file, user-supplied) | render (procedural)")
    npz: str | None = option(None, "path of the dSprites npz (None: searched in --data-dir, $CLUE_DATA_DIR, cache)")
    data_dir: str | None = option(None, "folder searched first for dsprites/<npz name>")
    latent_dim: int = option(10, "latent size (Kim & Mnih and FACT: 10; Brongers: 32)")
    encoder_fc_relu: bool = option(True, "ReLU after the encoder's Dense(128) (our reading of Kim & Mnih; "
                                         "Brongers: none)")
    disc_width: int = option(1000, "discriminator hidden width")
    disc_depth: int = option(6, "discriminator layers (depth - 1 hidden + the 2-logit head)")
    gamma: float = option(40.0, "weight of the total-correlation estimate")
    ad_weight: float = option(40.0, "ad_factorvae only: lambda, weight of L_AD (Brongers 40, FACT 1)")
    ad_layer: int = option(1, "ad_factorvae only: encoder conv layer (1-4) of the Grad-CAM maps (Brongers: 1)")
    ad_second_order: bool = option(False, "ad_factorvae only: true: the exact gradient of L_AD, through the Grad-CAM "
                                          "weights too (gradients of gradients); false: Brongers' first-order "
                                          "gradient, through the target activations only")
    ad_reduction: str = option("pooled", "ad_factorvae only: pooled (Brongers, in which lambda = 40 was set: the "
                                         "batch-pooled ratio / batch size) | mean (the per-image ratio, averaged)")
    ad_map: str = option("gradcam", "ad_factorvae only: gradcam (ReLU of the channel sum, of the latent mean, as the "
                                    "spec) | brongers (Brongers' gradcam.py: channels rectified one by one, of the "
                                    "sampled z; the form his lambda = 40 was set with)")
    batch_size: int = option(64, "images per batch (two batches per iteration)")
    lr: float = option(1e-4, "VAE Adam learning rate")
    beta1: float = option(0.9, "VAE Adam beta_1")
    beta2: float = option(0.999, "VAE Adam beta_2")
    disc_lr: float = option(1e-4, "discriminator Adam learning rate")
    disc_beta1: float = option(0.5, "discriminator Adam beta_1")
    disc_beta2: float = option(0.9, "discriminator Adam beta_2")
    max_iters: int = option(300000, "training iterations (may be raised when resuming)")
    checkpoint_every: int = option(1000, "iterations between checkpoints (a multiple of log_every)")
    log_every: int = option(100, "iterations per metrics.csv row (window means)")
    score_every: int = option(10000, "iterations between factor scores (a multiple of log_every; 0: only at the end)")
    score_preset: str = option("reproductions", "factor-score preset during training: reproductions | "
                                                "disentanglement_lib")
    score_votes: int | None = option(None, "override the preset's training votes (quick runs)")
    score_batch: int | None = option(None, "override the preset's images per vote L (quick runs)")
    score_variance_samples: int | None = option(None, "override the preset's images for the per-dimension scales")
    final_score_preset: str = option("none", "extra factor score at the end: none | reproductions | "
                                             "disentanglement_lib")
    seed: int = option(0, "seeds Python, NumPy and TF, and the training generator (batches, noise, permutations)")
    deterministic: bool = option(False, "enable TF op determinism (bitwise-repeatable runs, slower)")
    out: str = option("runs/factorvae", "run folder; an existing run there is resumed")
    progress: bool = option(True, "show a tqdm progress bar")

    def __post_init__(self):
        checks = [
            (self.model in MODELS, f"unknown --model {self.model!r}; choose one of {', '.join(MODELS)}"),
            (self.data_source in dsprites.SOURCES, f"unknown --data-source {self.data_source!r}; choose npz or render"),
            (self.ad_reduction in REDUCTIONS, f"unknown --ad-reduction {self.ad_reduction!r}; choose mean or pooled"),
            (self.ad_map in MAP_FORMS, f"unknown --ad-map {self.ad_map!r}; choose gradcam or brongers"),
            (1 <= self.ad_layer <= 4, f"--ad-layer must be 1-4, got {self.ad_layer}"),
            (self.latent_dim >= 2, f"--latent-dim must be >= 2 (L_AD needs two dimensions), got {self.latent_dim}"),
            (self.batch_size >= 2, f"--batch-size must be >= 2, got {self.batch_size}"),
            (self.max_iters >= 1 and self.log_every >= 1, "--max-iters and --log-every must be >= 1"),
            (self.checkpoint_every >= 1 and self.checkpoint_every % self.log_every == 0,
             f"--checkpoint-every ({self.checkpoint_every}) must be a positive multiple of --log-every "
             f"({self.log_every})"),
            (self.score_every >= 0 and self.score_every % self.log_every == 0,
             f"--score-every ({self.score_every}) must be 0 or a multiple of --log-every ({self.log_every})"),
            (self.score_preset in SCORE_PRESETS, f"unknown --score-preset {self.score_preset!r}"),
            (self.final_score_preset in ("none", *SCORE_PRESETS),
             f"unknown --final-score-preset {self.final_score_preset!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    @property
    def effective_ad_weight(self) -> float:
        """``ad_weight`` for AD-FactorVAE, 0 for FactorVAE."""
        return self.ad_weight if self.model == "ad_factorvae" else 0.0


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "brongers": {"latent_dim": 32, "encoder_fc_relu": False, "ad_map": "brongers"},
    "tiny": {"data_source": "render", "batch_size": 8, "disc_width": 64, "disc_depth": 3, "max_iters": 4,
             "checkpoint_every": 2, "log_every": 1, "score_every": 0, "score_votes": 10, "score_batch": 8,
             "score_variance_samples": 64, "progress": False},
}
PRESET_HELP = {
    "paper": "Kim & Mnih's settings (the defaults): batch 64, latent 10, gamma 40, 300k iterations",
    "brongers": "the settings of Brongers' reproduction, whose curves are the anchors: latent 32, no ReLU after the "
                "encoder's Dense(128), his form of the L_AD maps (lambda 40, pooled, first order: as the defaults)",
    "tiny": "seconds, for tests: rendered images, batch 8, a small discriminator, 4 iterations, a 10-vote score",
}


class IterationsInterrupted(TrainingInterrupted):
    """Ctrl-C in the iteration loop; says the iteration and what the latest checkpoint holds."""

    def __init__(self, iteration: int, checkpointed: int, run_dir: str | os.PathLike):
        super().__init__(iteration, checkpointed, run_dir)
        saved = f"{checkpointed} iterations checkpointed in {run_dir}" if checkpointed else "nothing checkpointed yet"
        self.args = (f"interrupted at iteration {iteration} ({saved}); run the same command again to resume",)


class IterationCSV:
    """``metrics.csv``, one row per logging window keyed by ``iteration``; rows past a resumed checkpoint are
    dropped."""

    def __init__(self, path: Path, fieldnames: list[str], resume_iteration: int):
        self.path, self.fieldnames = path, fieldnames
        rows = []
        if path.exists():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(float(r.get("iteration") or 0)) <= resume_iteration]
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fieldnames, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fieldnames, extrasaction="ignore").writerow(row)

    def rows(self) -> list[dict[str, str]]:
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))


def score_config(config: Config, name: str):
    """The factor-score settings of preset ``name`` with the run's overrides (votes, L, variance samples)."""
    overrides = {k: v for k, v in (("num_train", config.score_votes), ("batch_size", config.score_batch),
                                   ("num_variance_estimate", config.score_variance_samples)) if v is not None}
    if name == "disentanglement_lib" and config.score_votes is not None:
        overrides["num_eval"] = max(1, config.score_votes // 2)
    return preset(name, **overrides)


def encoder_means(model: FactorVAE):
    """The representation of the factor score: uint8 images ``[n, H, W]`` -> ``(mu, logvar)`` NumPy ``[n, L]``."""
    size = model.image_size

    @tf.function(input_signature=[tf.TensorSpec([None, size, size], tf.uint8)])
    def encode(images):
        return model.encode(tf.cast(images, tf.float32)[..., None])

    return lambda images: tuple(t.numpy() for t in encode(tf.constant(images)))


def _window_row(iteration: int, sums: dict[str, float], count: int, seconds: float, cpu: float) -> dict[str, Any]:
    row: dict[str, Any] = {"iteration": iteration, **{f"train/{k}": v / count for k, v in sums.items()}}
    row.update({"seconds": seconds, "cpu_seconds": cpu})
    for key in ("train/vae_loss", "train/disc_loss"):
        if not math.isfinite(row[key]):
            raise DivergedError(f"{key} = {row[key]} at iteration {iteration}: the run diverged; lower the learning "
                                "rates (--lr, --disc-lr) or gamma")
    return row


def main(config: Config) -> dict[str, Any]:
    """Trains (or resumes) a FactorVAE / AD-FactorVAE run and returns its metrics (also in ``metrics.json``)."""
    set_seed(config.seed, deterministic=config.deterministic)
    data = dsprites.load(config.data_source, path=config.npz, data_dir=config.data_dir)
    run_dir = make_run_dir(config.out, dataclasses.asdict(config), kind="VAE.train_factorvae",
                           resume_safe={"max_iters", "checkpoint_every", "score_every", "final_score_preset",
                                        "npz"})
    logger.info("%s on dSprites (%s, %d images), %d iterations", config.model, data.source, len(data),
                config.max_iters)
    model = FactorVAE(config.latent_dim, data.image_size, encoder_fc_relu=config.encoder_fc_relu)
    disc = discriminator(config.latent_dim, config.disc_width, config.disc_depth)
    vae_opt = tf.keras.optimizers.Adam(config.lr, config.beta1, config.beta2, epsilon=ADAM_EPSILON)
    disc_opt = tf.keras.optimizers.Adam(config.disc_lr, config.disc_beta1, config.disc_beta2, epsilon=ADAM_EPSILON)
    vae_opt.build(model.trainable_variables)
    disc_opt.build(disc.trainable_variables)
    generator = philox(config.seed)
    state = RunState(run_dir, model=model, discriminator=disc, vae_optimizer=vae_opt, disc_optimizer=disc_opt,
                     generator=generator)
    start = state.restore()  # epochs_done counts iterations here
    step = make_train_step(model, disc, vae_opt, disc_opt, generator, config.gamma, config.effective_ad_weight,
                           config.ad_layer, config.ad_second_order, config.ad_reduction,
                           config.ad_map)
    sampler = DSpritesFactors(data)
    represent = encoder_means(model)

    def score(iteration: int, name: str) -> float:
        t0 = time.perf_counter()
        result = factor_score(represent, sampler, score_config(config, name), np.random.default_rng([config.seed,
                                                                                                     iteration]))
        logger.info("iteration %d: factor score (%s) %.4f, %d active dims (%.1f s)", iteration, name,
                    result["score"], result["num_active_dims"], time.perf_counter() - t0)
        return result["score"]

    fields = ["iteration", *[f"train/{k}" for k in LOSS_KEYS], "eval/factor_score", "seconds", "cpu_seconds"]
    table = IterationCSV(run_dir / "metrics.csv", fields, start)
    sums = dict.fromkeys(LOSS_KEYS, 0.0)
    count, window_wall, window_cpu = 0, 0.0, 0.0
    step_times: list[float] = []
    bar = tqdm(total=config.max_iters, initial=start, disable=not config.progress, desc="iterations")
    iteration = start
    try:
        while iteration < config.max_iters:
            t0, c0 = time.perf_counter(), time.process_time()
            rows = generator.uniform([2, config.batch_size], 0, len(data), dtype=tf.int64).numpy()
            x1, x2 = (tf.constant(data.images(r).astype(np.float32)[..., None]) for r in rows)
            out = step(x1, x2)
            for k in LOSS_KEYS:
                sums[k] += float(out[k])
            iteration += 1
            count += 1
            elapsed = time.perf_counter() - t0
            step_times.append(elapsed)
            window_wall += elapsed
            window_cpu += time.process_time() - c0
            bar.update(1)
            if iteration % config.log_every == 0 or iteration == config.max_iters:
                row = _window_row(iteration, sums, count, window_wall, window_cpu)
                if (config.score_every and iteration % config.score_every == 0) or iteration == config.max_iters:
                    row["eval/factor_score"] = score(iteration, config.score_preset)
                if iteration % config.checkpoint_every == 0 or iteration == config.max_iters:
                    state.epochs_done.assign(iteration)
                    state.manager.save(checkpoint_number=iteration)
                table.append(row)
                bar.set_postfix({"recon": f"{row['train/recon']:.1f}", "tc": f"{row['train/tc']:.3f}"})
                sums = dict.fromkeys(LOSS_KEYS, 0.0)
                count, window_wall, window_cpu = 0, 0.0, 0.0
    except KeyboardInterrupt as err:
        raise IterationsInterrupted(iteration, checkpoint_number(state.manager.latest_checkpoint), run_dir) from err
    finally:
        bar.close()
    return _finish(config, run_dir, model, table, step_times, data.source, score)


def _finish(config: Config, run_dir: Path, model: FactorVAE, table: IterationCSV, step_times: list[float],
            source: str, score) -> dict[str, Any]:
    """``metrics.json`` from the last logged row and timings, the optional final score, and the model export."""
    rows = table.rows()
    if not rows:
        raise UserError(f"{run_dir} holds no logged iteration; run with --max-iters >= 1")
    last = rows[-1]
    iterations = int(last["iteration"])
    metrics: dict[str, Any] = {k: float(last[k]) for k in last if k.startswith("train/")}
    scored = [r for r in rows if r.get("eval/factor_score")]
    if scored:
        metrics["eval/factor_score"] = float(scored[-1]["eval/factor_score"])
        metrics["eval/factor_score_iteration"] = int(scored[-1]["iteration"])
    if config.final_score_preset != "none":
        metrics[f"eval/factor_score_{config.final_score_preset}"] = score(iterations, config.final_score_preset)
    wall = sum(float(r["seconds"]) for r in rows)
    cpu = sum(float(r["cpu_seconds"]) for r in rows)
    steady = step_times[1:]  # the first iteration of an invocation traces the step
    metrics.update({"iterations": iterations, "data/source": source,
                    "seconds_per_iteration": sum(steady) / len(steady) if steady else wall / iterations,
                    "seconds_first_iteration": step_times[0] if step_times else float("nan"),
                    "seconds_total": wall, "cpu_seconds_per_iteration": cpu / iterations})
    save_factorvae(model, run_dir / "model", {"dataset": "dsprites", "iterations": iterations,
                                              "data_source": source, "train_config": dataclasses.asdict(config)})
    save_json(run_dir / "metrics.json", metrics)
    logger.info("done: %d iterations, %.3f s/iteration, factor score %s", iterations,
                metrics["seconds_per_iteration"], metrics.get("eval/factor_score"))
    return metrics


if __name__ == "__main__":
    common.cli.run_script(main, Config, PRESETS, prog="python -m VAE.train_factorvae",
                          description=__doc__.split("\n\n")[0], preset_help=PRESET_HELP, resumable=True)
