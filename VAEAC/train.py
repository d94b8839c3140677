"""Trains a VAEAC (in-filling model for U-FIDO, or the ground truth on the joint (x, y)) and optionally the under-VAEAC
on its latent space (spec 4.6-4.9, 6.3).

As the original's ``train_VAEAC``: RAdam, a fresh ``top_masker(p=1)`` mask per batch, dev ELBO every epoch (masks drawn
once from the seed), best-dev export, early stopping; ``--under-epochs N`` adds ``under/`` and ``under_best/``.
References: [1] Ivanov et al. Variational Autoencoder with Arbitrary Conditioning. ICLR 2019."""

from __future__ import annotations

import common.cli  # isort: skip  (first: quiets TensorFlow's start-up, see common.cli)
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

import data
from common.config import option
from common.errors import UserError
from common.io import save_json
from common.radam import RAdam, TorchAdam
from common.runs import make_run_dir
from common.seeding import philox, set_seed
from common.training import RunState, fit_with_early_stopping, make_train_epoch, optimizer_step, traced
from VAEAC.export import load_model, save_model
from VAEAC.masks import top_masker
from VAEAC.model import VAEAC, join_targets
from VAEAC.under import UnderVAEAC

logger = logging.getLogger(__name__)

# [nb]: L = [wine 6, credit 8, compas 4, lsat 4]; images follow the VAE's choices.



@dataclass(frozen=True)
class Config:
    """Every hyper-parameter of a VAEAC run; ``None`` means the dataset's [nb] value."""

    dataset: str = option("lsat", "lsat | compas | credit | wine | mnist | mnist_t10k | digits")
    targets: bool = option(True, "model the joint (x, y) with y appended last (ground truth); false: x only (U-FIDO)")
    latent_dim: int | None = option(None, "latent size L (None: [nb] per dataset)")
    width: int = option(350, "MLP width of the three networks ([nb]: 350)")
    depth: int = option(3, "MLP depth ([nb]: 3)")
    pred_sig: bool | None = option(None, "Gaussian data: learn the decoder scale (None: true, as wine)")
    lr: float | None = option(None, "RAdam lr (None: 1e-4 gauss_cat/Bernoulli, 3e-4 Gaussian, as [nb])")
    batch_size: int = option(128, "training batch size")
    max_epochs: int = option(2500, "epoch cap")
    early_stop: int | None = option(200, "stop when epoch - best_epoch > early_stop")
    mask_p: float = option(1.0, "top_masker p: each row's missing rate ~ U(0, p)")
    mask_per_variable: bool = option(False, "mask whole one-hot blocks (original flatten=True) instead of flat columns")
    under_epochs: int = option(0, "epochs of the under-VAEAC on the VAEAC latent (0: do not train it)")
    under_width: int = option(150, "under-VAEAC width ([nb]: 150)")
    under_depth: int = option(2, "under-VAEAC depth ([nb]: 2)")
    under_lr: float = option(3e-4, "under-VAEAC torch-Adam lr ([nb]: 3e-4)")
    under_early_stop: int | None = option(200, "under-VAEAC patience")
    dev_fraction: float = option(0.0, "0: dev = test set, as the original; >0: hold out this fraction of train")
    max_train_rows: int | None = option(None, "use only the first N training rows (quick runs)")
    eval_batch_size: int = option(1024, "batch size of evaluation (no effect on results)")
    seed: int = option(0, "seeds Python, NumPy, TF and the training RNG (noise, masks, shuffling)")
    data_seed: int = option(0, "seed of data.load (UCI splits)")
    data_dir: str | None = option(None, "folder of raw data files (None: $CLUE_DATA_DIR, then data/raw)")
    out: str = option("runs/vaeac", "run folder; an existing run there is resumed")
    xla: bool = option(True, "compile each training step with XLA (1.7x faster on the CPU; another random stream)")
    progress: bool = option(True, "show a tqdm progress bar")


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # seconds on a CPU: 8 epochs of 32 steps are enough for a clear ELBO gain
    "tiny": {"width": 32, "depth": 2, "lr": 3e-3, "batch_size": 32, "max_epochs": 8, "early_stop": 10,
             "max_train_rows": 1024, "under_epochs": 3, "under_width": 16, "under_lr": 3e-3},
}
PRESET_HELP = {
    "paper": "the [nb] settings (the defaults)",
    "tiny": "seconds, for tests: small networks on 1024 rows, 8 epochs, and a 3-epoch under-VAEAC",
}


def prepare_data(ds, config: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Flat training, dev and test rows (joint with y when ``targets``) and the :class:`VAEAC` arguments."""
    def rows(x, y):
        x = np.asarray(x, np.float32)
        if not config.targets:
            return x, list(ds.input_dim_vec) if ds.image_shape is None else [1] * x.shape[1]
        if ds.image_shape is not None:  # MNIST VAEAC: the one-hot label is 10 more Bernoulli dims (794 in all)
            return join_targets(x, y, [1] * x.shape[1], "classification", ds.n_classes)[0], [1] * (
                x.shape[1] + ds.n_classes)
        return join_targets(x, y, ds.input_dim_vec, ds.task, ds.n_classes)

    xy_train, vec = rows(ds.x_train, ds.y_train)
    xy_test, _ = rows(ds.x_test, ds.y_test)
    if config.dev_fraction > 0:
        perm = np.random.RandomState(config.seed).permutation(len(xy_train))
        n_dev = max(1, int(round(config.dev_fraction * len(xy_train))))
        xy_train, xy_dev = xy_train[perm[n_dev:]], xy_train[perm[:n_dev]]
    else:
        xy_dev = xy_test
    if config.max_train_rows is not None:
        xy_train = xy_train[: config.max_train_rows]
    if ds.image_shape is not None:
        likelihood, pred_sig = "bernoulli", False
    elif any(k > 1 for k in vec):
        likelihood, pred_sig = "gauss_cat", False
    else:
        likelihood, pred_sig = "gauss", True if config.pred_sig is None else config.pred_sig
    latent = config.latent_dim or data.spec(config.dataset).latent_dim
    model_cfg = {"input_dim_vec": vec, "latent_dim": latent, "likelihood": likelihood, "width": config.width,
                 "depth": config.depth, "pred_sig": pred_sig}
    return xy_train, xy_dev, xy_test, model_cfg


def masker(config: Config, vec):
    per_var = vec if config.mask_per_variable else None
    return lambda x, generator: top_masker(x, generator, config.mask_p, per_var)


def make_vaeac_step(model: VAEAC, optimizer, generator: tf.random.Generator, draw_mask):
    """One training step (fresh mask, sampled z, optimizer update); returns the batch's mean ELBO."""
    def step(xb):  # [b, D] -> mean ELBO
        mask = draw_mask(xb, generator)
        eps = generator.normal([tf.shape(xb)[0], model.latent_dim])
        return optimizer_step(model, optimizer, lambda: model.training_loss(xb, mask, eps))

    return step


def make_under_step(under: UnderVAEAC, optimizer, generator: tf.random.Generator):
    """One under-VAEAC step: z ~ q_VAEAC(z | x) from the frozen base, then the under-VAE's ELBO on z."""
    def step(xb):  # [b, D] -> mean ELBO
        b = tf.shape(xb)[0]
        eps_z, eps_u = generator.normal([b, under.base.latent_dim]), generator.normal([b, under.latent_dim])
        return optimizer_step(under, optimizer, lambda: under.training_loss(xb, eps_z, eps_u))

    return step


def evaluate_vaeac(model: VAEAC, x: np.ndarray, mask: np.ndarray, batch_size: int = 1024) -> dict[str, float]:
    """Mean eval-mode ELBO terms (z = posterior mean) under fixed masks."""
    step = traced(model, "elbo_terms")
    sums = {"elbo": 0.0, "rec_loglik": 0.0, "kl": 0.0}
    for s in range(0, len(x), batch_size):
        terms = step(tf.constant(x[s:s + batch_size]), tf.constant(mask[s:s + batch_size]))
        for key, name in (("elbo", "elbo"), ("rec_loglik", "rec"), ("kl", "kl")):
            sums[key] += float(tf.reduce_sum(terms[name]))
    return {k: v / len(x) for k, v in sums.items()}


def evaluate_under(under: UnderVAEAC, x: np.ndarray, batch_size: int = 1024) -> float:
    step = traced(under, "elbo")
    return sum(float(tf.reduce_sum(step(tf.constant(x[s:s + batch_size])))) for s in range(0, len(x), batch_size)) \
        / len(x)


def train_under(base: VAEAC, config: Config, run_dir, x_train, x_dev, dev_split: str) -> dict[str, float]:
    """Fits the under-VAEAC on latents of the frozen best VAEAC; resumable in ``run_dir/under``."""
    under = UnderVAEAC(base, config.under_width, config.under_depth)
    optimizer = TorchAdam(learning_rate=config.under_lr)
    optimizer.build(under.trainable_variables)
    generator = philox(config.seed, stream=1)
    state = RunState(run_dir / "under", model=under, optimizer=optimizer, generator=generator)

    summary = fit_with_early_stopping(
        state, max_epochs=config.under_epochs, early_stop=config.under_early_stop,
        train_epoch=make_train_epoch(make_under_step(under, optimizer, generator), x_train, generator,
                                     config.batch_size, jit_compile=config.xla),
        evaluate=lambda: {f"{dev_split}/elbo": evaluate_under(under, x_dev, config.eval_batch_size)},
        monitor=f"{dev_split}/elbo", csv_path=run_dir / "under" / "metrics.csv", progress=config.progress,
        export_best=lambda epoch: save_model(under, run_dir / "under_best", {"epoch": epoch}))
    return {f"under/{k}": v for k, v in summary.items()}


def main(config: Config, dataset: data.Dataset | None = None) -> dict[str, float]:
    """Trains (or resumes) a VAEAC, then the under-VAEAC if asked; returns the metrics (``dataset``: instead of
    ``data.load``)."""
    data.check_named(dataset, config.dataset)
    if config.dataset not in data.DATASETS and config.latent_dim is None:
        if dataset is None:
            data.load(config.dataset)  # raises for an unknown name
        raise UserError(f"dataset {config.dataset!r} has no default latent_dim; set --latent-dim")
    if not 0 <= config.mask_p <= 1:
        raise UserError(f"--mask-p must be in [0, 1], got {config.mask_p}")
    set_seed(config.seed)
    ds = dataset if dataset is not None else data.load(config.dataset, data_dir=config.data_dir,
                                                       seed=config.data_seed)
    run_dir = make_run_dir(config.out, dataclasses.asdict(config), kind="VAEAC.train",
                           resume_safe={"max_epochs", "early_stop", "under_epochs", "under_early_stop"})
    x_train, x_dev, x_test, model_cfg = prepare_data(ds, config)
    lr = config.lr or (3e-4 if model_cfg["likelihood"] == "gauss" else 1e-4)
    dev_split = "test" if config.dev_fraction <= 0 else "dev"
    draw_mask = masker(config, model_cfg["input_dim_vec"])
    fixed = philox(config.seed, stream=2)  # fixed dev/test masks, identical across resumes
    test_mask = draw_mask(tf.constant(x_test), fixed).numpy()
    dev_mask = test_mask if dev_split == "test" else draw_mask(tf.constant(x_dev), fixed).numpy()

    model = VAEAC(**model_cfg)
    optimizer = RAdam(learning_rate=lr)
    optimizer.build(model.trainable_variables)
    generator = philox(config.seed)
    state = RunState(run_dir, model=model, optimizer=optimizer, generator=generator)

    summary = fit_with_early_stopping(
        state, max_epochs=config.max_epochs, early_stop=config.early_stop,
        train_epoch=make_train_epoch(make_vaeac_step(model, optimizer, generator, draw_mask), x_train, generator,
                                     config.batch_size, jit_compile=config.xla),
        evaluate=lambda: {f"{dev_split}/{k}": v for k, v in
                          evaluate_vaeac(model, x_dev, dev_mask, config.eval_batch_size).items()},
        monitor=f"{dev_split}/elbo", csv_path=run_dir / "metrics.csv", progress=config.progress,
        export_best=lambda epoch: save_model(model, run_dir / "best", {"dataset": config.dataset, "epoch": epoch,
                                                                        "targets": config.targets}))
    best = load_model(run_dir / "best")
    metrics = {f"test/{k}": v for k, v in evaluate_vaeac(best, x_test, test_mask, config.eval_batch_size).items()}
    metrics.update(summary)
    if config.under_epochs > 0:
        metrics.update(train_under(best, config, run_dir, x_train, x_dev, dev_split))
        metrics["test/under_elbo"] = evaluate_under(load_model(run_dir / "under_best"), x_test, config.eval_batch_size)
    save_json(run_dir / "metrics.json", metrics)
    logger.info("best epoch %d of %d: test/elbo %.4f", summary["best_epoch"], summary["epochs_run"],
                metrics["test/elbo"])
    return metrics


if __name__ == "__main__":
    common.cli.run_script(main, Config, PRESETS, prog="python -m VAEAC.train", description=__doc__.split("\n\n")[0],
                          preset_help=PRESET_HELP, resumable=True)
