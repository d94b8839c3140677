"""Anomaly localization with VAE attention maps (Liu et al. [1]) on MVTec AD [2] or UCSD Ped1 [3]: trains the ResNet-18
VAE (``VAE.resnet_vae``) on the normal training images, then scores the test images.

``--root`` is your copy of the dataset (``data/anomaly_images.py``), e.g.
``python -m VAE.localise --dataset mvtec --root PATH --category bottle --out runs/localise/bottle``. Training is
resumable; the exported model (``best/``) is the epoch with the best ELBO (``z = mu``) on a seeded ``--val-fraction`` of
the normal training images (spec trap 14). Per pixel, the raw ``attention`` map and the ``reconstruction_error``
``mean_c |x - sigmoid(decode(mu(x)))|`` are scored by pooled pixel AUROC, raw and per-image min-max (spec trap 6), on at
most ``--max-auroc-pixels`` sampled pixels; image AUROC of the loss and of each map's max and mean. Defaults: the public
reproduction's (reference-spec-expvae.md P2.5).

References: [1] Liu et al. Towards Visually Explaining VAEs. CVPR 2020. [2] Bergmann et al. MVTec AD. CVPR 2019.
[3] Mahadevan et al. Anomaly Detection in Crowded Scenes. CVPR 2010. [4] He et al. Deep Residual Learning. CVPR 2016."""

from __future__ import annotations

import common.cli  # isort: skip  (first: quiets TensorFlow's start-up, see common.cli)
import csv
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from common.config import option
from common.errors import UserError
from common.export import KERAS_WEIGHTS
from common.io import atomic_path, save_json, save_npz
from common.runs import make_run_dir
from common.seeding import philox, set_seed
from common.training import RunState, fit_with_early_stopping, mean_terms, optimizer_step, shuffled_batches, traced
from common.validation import load_weights_h5
from data import anomaly_images
from data.anomaly_images import AnomalyImages
from VAE import resnet_vae
from VAE.resnet_vae import DEFAULT_TARGET, METHODS, ResNetVAE, attention_maps, check_config

logger = logging.getLogger(__name__)

ADAM_EPSILON = 1e-8  # PyTorch's default
MAPS = ("attention", "reconstruction_error")
# Settings that only change the scoring, or where things are: a finished run may be re-scored with other values.
RESUME_SAFE = {"epochs", "graph", "root", "attention", "target_layer", "max_auroc_pixels", "save_maps",
               "unmasked_as_normal"}


@dataclass(frozen=True)
class Config:
    """Every setting of a localization run; defaults = ``--preset paper``."""

    dataset: str = option("mvtec", "mvtec | ucsd_ped1")
    root: str | None = option(None, "folder of your copy of the dataset, in its standard layout (required)")
    category: str = option("bottle", "MVTec AD category (mvtec only)")
    image_size: int = option(256, "side S of the resized square images (a multiple of 32 for --stem resnet, 16 for "
                                  "light)")
    latent_dim: int = option(32, "latent size L")
    width: int = option(64, "channels of the first ResNet stage (ResNet-18: 64, stages 64-128-256-512)")
    stem: str = option("resnet", "resnet (7x7 conv + max-pool, He et al.) | light (3x3 stride-2 conv, no max-pool)")
    likelihood: str = option("bernoulli", "bernoulli (BCE, the official code) | gaussian (squared error)")
    target_layer: str = option(DEFAULT_TARGET, "encoder layer of the attention map: conv1, maxpool, layerS.B, "
                                               "layerS.B.conv1, ...")
    attention: str = option("code", "code (|Up(sum_k alpha_k A_k)|) | paper (mean_i ReLU, per latent dimension) | "
                                    "channel_abs (mean_k |alpha_k A_k|, the reproduction's)")
    lr: float = option(1e-4, "Adam learning rate")
    batch_size: int = option(32, "training batch size")
    epochs: int = option(100, "training epochs")
    val_fraction: float = option(0.1, "fraction of the normal training images held out for model selection "
                                      "(0: select on the training ELBO)")
    max_train_images: int | None = option(None, "use only the first N training images (quick runs)")
    unmasked_as_normal: bool = option(False, "ucsd_ped1: also score the 26 test clips without masks, counted as "
                                             "all-normal (they are not; for comparison with reproductions only)")
    train_stride: int = option(1, "ucsd_ped1: keep every k-th frame of each training clip")
    eval_batch_size: int = option(16, "batch size of validation and scoring (no effect on results)")
    graph: bool = option(True, "run the training step and the loss evaluation as TF graphs (seconds of tracing, then "
                               "less overhead per step); false: eager, quicker for tiny runs")
    max_auroc_pixels: int | None = option(2 ** 24, "pooled pixel AUROC on a seeded subsample of this many pixels "
                                                   "when there are more (None: all)")
    save_maps: bool = option(False, "write the test maps and masks to maps.npz (float16)")
    seed: int = option(0, "seeds Python, NumPy and TF: the validation split, initialisation, noise, shuffling")
    deterministic: bool = option(False, "enable TF op determinism (bitwise-repeatable runs, slower)")
    out: str = option("runs/localise", "run folder; an existing run there is resumed")
    progress: bool = option(True, "show tqdm progress bars")

    def validate(self) -> Config:
        """Checks the settings that need no data (raises ``UserError``); returns ``self``."""
        if self.dataset not in anomaly_images.DATASETS:
            raise UserError(f"unknown --dataset {self.dataset!r}; choose one of {', '.join(anomaly_images.DATASETS)}")
        if self.root is None:
            anomaly_images.load(self.dataset, None)  # raises: says where to get it and the layout
        check_config((self.image_size, self.image_size, 1), self.latent_dim, self.stem, self.likelihood, self.width)
        if self.attention not in METHODS:
            raise UserError(f"unknown --attention {self.attention!r}; choose one of {', '.join(METHODS)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UserError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.epochs < 0:
            raise UserError(f"--epochs must be >= 0, got {self.epochs}")
        return self


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "tiny": {"image_size": 64, "latent_dim": 8, "width": 16, "lr": 1e-3, "batch_size": 4, "epochs": 1,
             "max_train_images": 10, "val_fraction": 0.2, "eval_batch_size": 8, "graph": False},
}
PRESET_HELP = {
    "paper": "the public reproduction's settings: 256 px, latent 32, layer2.1.conv1, Adam 1e-4, batch 32, 100 "
             "epochs (the defaults)",
    "tiny": "seconds, for tests: 64 px, latent 8, a quarter-width ResNet-18, 10 training images, 1 epoch of 2 "
            "steps, eager",
}


# ---------------------------------------------------------------------------------------------------------- data
def load_data(config: Config) -> AnomalyImages:
    """The configured image set (``data.anomaly_images``)."""
    options: dict[str, Any] = {"max_train": config.max_train_images, "progress": config.progress}
    if config.dataset == "ucsd_ped1":
        options.update(unmasked_as_normal=config.unmasked_as_normal, train_stride=config.train_stride)
    return anomaly_images.load(config.dataset, config.root, config.category, config.image_size, **options)


def split_validation(x: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded hold-out of ``round(fraction * N)`` images (at least 1 if ``fraction > 0``): ``(train, val)``."""
    n_val = max(1, int(round(fraction * len(x)))) if fraction > 0 else 0
    if len(x) - n_val < 1:
        raise UserError(f"{len(x)} training images cannot be split with --val-fraction {fraction}: lower it")
    perm = np.random.RandomState(seed).permutation(len(x))
    return x[np.sort(perm[n_val:])], x[np.sort(perm[:n_val])]


# ------------------------------------------------------------------------------------------------------ training
def loss_function(model: ResNetVAE, graph: bool):
    """``model.loss_terms`` (eval mode), as a ``tf.function`` traced once per model if ``graph``."""
    return traced(model, "loss_terms") if graph else model.loss_terms


def evaluate_loss(model: ResNetVAE, x: np.ndarray, batch_size: int, graph: bool = True) -> dict[str, float]:
    """Eval-mode (``z = mu``, BatchNorm's moving statistics) mean ELBO terms per image: ``elbo``, ``rec``, ``kl``."""
    means = mean_terms(loss_function(model, graph), x, ("rec", "kl"), batch_size)
    rec, kl = means["rec"], means["kl"]
    return {"elbo": -(rec + kl), "rec": rec, "kl": kl}


def make_step(model: ResNetVAE, optimizer, generator: tf.random.Generator, graph: bool = True):
    """One optimization step on ``[b, S, S, C]``; returns the batch-mean ELBO (a ``tf.function`` if ``graph``)."""
    def step(xb):
        eps = generator.normal([tf.shape(xb)[0], model.latent_dim])
        return optimizer_step(model, optimizer, lambda: model.training_loss(xb, eps))

    if not graph:
        return step
    return tf.function(step, input_signature=[tf.TensorSpec([None, *model.image_shape], tf.float32)])


def make_epoch(step, x_train: np.ndarray, generator: tf.random.Generator, batch_size: int, progress: bool):
    """``epoch -> {"train/elbo": mean}``: one pass over batches shuffled by the checkpointed ``generator``."""
    def train_epoch(epoch: int) -> dict[str, float]:
        batches = shuffled_batches(generator, len(x_train), batch_size).numpy()
        total, count = 0.0, 0
        for index in tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=not progress):
            index = index[index >= 0]
            total += float(step(tf.constant(x_train[index]))) * len(index)
            count += len(index)
        return {"train/elbo": total / count}

    return train_epoch


def build_model(config: Config, data: AnomalyImages) -> ResNetVAE:
    """The untrained ResNet-18 VAE for ``data``'s images (checks the target layer)."""
    model = ResNetVAE(data.image_shape, config.latent_dim, config.stem, config.likelihood, config.width)
    model.probe(config.target_layer)
    return model


def train(config: Config, data: AnomalyImages, model: ResNetVAE, run_dir: Path) -> dict[str, float]:
    """Trains (or resumes) ``model`` in ``run_dir``, loads the best epoch's weights, returns the summary."""
    x_train, x_val = split_validation(data.x_train, config.val_fraction, config.seed)
    logger.info("%s: %d training, %d validation images of %s", data.name, len(x_train), len(x_val),
                "x".join(map(str, data.image_shape)))
    optimizer = tf.keras.optimizers.Adam(learning_rate=config.lr, epsilon=ADAM_EPSILON)
    optimizer.build(model.trainable_variables)
    generator = philox(config.seed)
    state = RunState(run_dir, model=model, optimizer=optimizer, generator=generator)
    split = "val" if len(x_val) else "train"

    def evaluate() -> dict[str, float]:
        if not len(x_val):
            return {}
        return {f"val/{k}": v for k, v in evaluate_loss(model, x_val, config.eval_batch_size, config.graph).items()}

    def export_best(epoch: int) -> None:
        resnet_vae.save_resnet_vae(model, run_dir / "best", {"dataset": data.name, "epoch": epoch,
                                                             "train_config": dataclasses.asdict(config)})

    summary = fit_with_early_stopping(
        state, max_epochs=config.epochs, early_stop=None, evaluate=evaluate, monitor=f"{split}/elbo",
        train_epoch=make_epoch(make_step(model, optimizer, generator, config.graph), x_train, generator,
                               config.batch_size, config.progress),
        export_best=export_best, csv_path=run_dir / "metrics.csv", progress=config.progress)
    best = run_dir / "best" / KERAS_WEIGHTS
    if not best.exists():
        raise UserError(f"{run_dir} holds no trained model (--epochs {config.epochs}): train at least one epoch")
    load_weights_h5(model, best, "the best epoch's weights", "the same command with --overwrite")
    return summary


# ------------------------------------------------------------------------------------------------------- scoring
def score_maps(model: ResNetVAE, x: np.ndarray, config: Config) -> dict[str, np.ndarray]:
    """The raw test maps, each ``[N, S, S]``, and the per-image eval-mode loss ``[N]`` (key ``loss``)."""
    maps = {name: np.empty(x.shape[:3], np.float32) for name in MAPS}
    loss = np.empty(len(x), np.float32)
    terms, size = loss_function(model, config.graph), config.eval_batch_size
    for start in tqdm(range(0, len(x), size), desc="scoring", disable=not config.progress, leave=False):
        xb = x[start:start + size]
        part = slice(start, start + len(xb))
        maps["attention"][part] = attention_maps(model, xb, batch_size=size, layer=config.target_layer,
                                                 method=config.attention)
        maps["reconstruction_error"][part] = np.abs(xb - model.reconstruct(xb).numpy()).mean(-1)
        loss[part] = terms(tf.constant(xb))["loss"].numpy()
    return {**maps, "loss": loss}


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """``roc_auc_score``, or None (with a warning) when ``labels`` hold one class only."""
    if labels.min() == labels.max():
        logger.warning("AUROC undefined: every label is %d", int(labels.flat[0]))
        return None
    return float(roc_auc_score(labels, scores))


def pixel_sample(shape: tuple[int, int, int], max_pixels: int | None, seed: int) -> np.ndarray | None:
    """Flat indices of a seeded sample of ``max_pixels`` pixels of ``[N, H, W]`` maps, or None (all pixels)."""
    size = int(np.prod(shape))
    if max_pixels is None or size <= max_pixels:
        return None
    return np.random.RandomState(seed).randint(0, size, max_pixels)


def pooled_pixel_auroc(maps: np.ndarray, masks: np.ndarray, sample: np.ndarray | None = None,
                       minmax: bool = False) -> float | None:
    """Pixel AUROC of maps ``[N, H, W]`` vs masks over ``sample`` (None: all); ``minmax`` normalizes each map."""
    flat = maps.reshape(len(maps), -1)
    index = np.arange(flat.size) if sample is None else sample
    scores, labels = flat.reshape(-1)[index], masks.reshape(-1)[index]
    if minmax:
        image = index // flat.shape[1]
        low, high = flat.min(axis=1)[image], flat.max(axis=1)[image]
        scores = (scores - low) / (high - low + 1e-12)
    return auroc(labels, scores)


def localisation_metrics(scores: dict[str, np.ndarray], data: AnomalyImages, config: Config) -> dict[str, float]:
    """``test/pixel_auroc_<map>[_minmax]``, ``test/image_auroc_<score>`` and the test set's counts."""
    metrics: dict[str, float | None] = {}
    sample = pixel_sample(data.masks_test.shape, config.max_auroc_pixels, config.seed)
    for name in MAPS:
        for suffix, minmax in (("", False), ("_minmax", True)):
            metrics[f"test/pixel_auroc_{name}{suffix}"] = pooled_pixel_auroc(scores[name], data.masks_test, sample,
                                                                             minmax)
    image_scores = {"loss": scores["loss"]}
    for name in MAPS:
        image_scores[f"{name}_max"] = scores[name].max(axis=(1, 2))
        image_scores[f"{name}_mean"] = scores[name].mean(axis=(1, 2))
    for name, values in image_scores.items():
        metrics[f"test/image_auroc_{name}"] = auroc(data.y_test, values)
    metrics["test/elbo"] = -float(scores["loss"].mean())
    metrics.update({f"test/{k}": v for k, v in data.summary().items() if k not in ("dataset", "n_train")})
    return {k: v for k, v in metrics.items() if v is not None}


def write_scores_csv(path: Path, scores: dict[str, np.ndarray], data: AnomalyImages) -> None:
    """One row per test image: file, group, label and the image-level scores."""
    columns = {"loss": scores["loss"]}
    for name in MAPS:
        columns[f"{name}_max"], columns[f"{name}_mean"] = scores[name].max((1, 2)), scores[name].mean((1, 2))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "group", "label", *columns])
        for i, (file, group) in enumerate(zip(data.test_files, data.test_groups)):
            writer.writerow([file, group, int(data.y_test[i]), *(f"{float(v[i]):.6g}" for v in columns.values())])


# ---------------------------------------------------------------------------------------------------------- main
def main(config: Config, data: AnomalyImages | None = None) -> dict[str, float]:
    """Trains (or resumes), scores the test set and returns the metrics (``data`` replaces ``config.root``)."""
    config.validate()
    set_seed(config.seed, deterministic=config.deterministic)
    data = data if data is not None else load_data(config)
    if data.image_shape[0] != config.image_size:
        raise UserError(f"the data's images are {data.image_shape[0]} px but --image-size is {config.image_size}")
    model = build_model(config, data)
    run_dir = make_run_dir(config.out, dataclasses.asdict(config), kind="VAE.localise", resume_safe=RESUME_SAFE)
    summary = train(config, data, model, run_dir)
    t0 = time.perf_counter()
    scores = score_maps(model, data.x_test, config)
    metrics = {**localisation_metrics(scores, data, config), **summary,
               "seconds_scoring": time.perf_counter() - t0}
    write_scores_csv(run_dir / "scores.csv", scores, data)
    if config.save_maps:
        save_npz(run_dir / "maps.npz", compressed=True, masks=data.masks_test, labels=data.y_test,
                 **{name: scores[name].astype(np.float16) for name in MAPS})
    save_json(run_dir / "metrics.json", metrics)
    logger.info("%s: pixel AUROC attention %.3f (reconstruction error %.3f), image AUROC loss %.3f",
                data.name, metrics.get("test/pixel_auroc_attention", float("nan")),
                metrics.get("test/pixel_auroc_reconstruction_error", float("nan")),
                metrics.get("test/image_auroc_loss", float("nan")))
    return metrics


if __name__ == "__main__":
    common.cli.run_script(main, Config, PRESETS, prog="python -m VAE.localise", description=__doc__.split("\n\n")[0],
                          preset_help=PRESET_HELP, resumable=True)
