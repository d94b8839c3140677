"""Training epochs of the generative models with and without XLA, beside the PyTorch original's VAE epoch times.

Each workload builds the model, optimizer and training step exactly as its training script does
(``VAE.train.make_vae_step``, ``VAEAC.train.make_vaeac_step``, ``VAEAC.train.make_under_step``) and times full
epochs of ``common.training.make_train_epoch`` over the real training rows, once as a TF graph and once with the
step compiled by XLA (``jit_compile``, the scripts' ``--xla``). The two modes alternate, one epoch each per round,
after a warm-up epoch each (tracing and compilation); the medians are written to
``benchmarks/results/train_step.json``. No dev evaluation is included.

Workloads (the [nb] settings, batch 128 unless stated):

* ``vae_lsat``, ``vae_compas``: the CLUE VAE (gauss_cat, width 300, depth 3, L = 4), beside the original's
  train-only seconds per epoch on this kind of machine (``../shared/reference/pytorch-original.json``; its
  DataLoader used 3 worker processes on 2 cores, see the reference README);
* ``vaeac_lsat``: the ground-truth VAEAC on the joint (x, y) (width 350, depth 3, L = 4);
* ``under_lsat``: the under-VAEAC (width 150, depth 2) on that VAEAC's latent;
* ``vae_mnist_conv``: the MNIST conv VAE (L = 20, batch 256) on the first 2,048 ``mnist_t10k`` training images
  (``--skip-mnist`` leaves it out). Its weights are untrained: the time does not depend on them.

Usage::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/train_step.py [--rounds 5] [--skip-mnist]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf
from machine import machine_info, write_benchmark

import data
from common.io import PROJECT_ROOT
from common.radam import RAdam, TorchAdam
from common.runs import setup_logging
from common.seeding import set_seed
from common.training import make_train_epoch
from VAE import train as vae_train
from VAE.model import build_vae
from VAEAC import train as vaeac_train
from VAEAC.model import VAEAC
from VAEAC.under import UnderVAEAC

logger = logging.getLogger("benchmarks.train_step")

RESULTS = Path(__file__).resolve().parent / "results" / "train_step.json"
REFERENCE = PROJECT_ROOT.parent / "shared" / "reference"

# a builder returns (step, training rows, batch size, RNG) for fresh models; called once per mode
Builder = Callable[[], tuple[Callable, np.ndarray, int, tf.random.Generator]]


def vae_builder(dataset: str, max_rows: int | None = None) -> Builder:
    config = vae_train.Config(dataset=dataset).resolved()
    ds = data.load(dataset)
    x_train, _ = vae_train.split_dev(ds, config)
    x_train = x_train[:max_rows]

    def build():
        model = build_vae(vae_train.model_config(config, ds))
        optimizer = RAdam(learning_rate=config.lr)
        optimizer.build(model.trainable_variables)
        generator = tf.random.Generator.from_seed(0)
        return vae_train.make_vae_step(model, optimizer, generator), x_train, config.batch_size, generator

    return build


def vaeac_builder(dataset: str, under: bool) -> Builder:
    config = vaeac_train.Config(dataset=dataset)
    ds = data.load(dataset)
    xy_train, _, _, model_cfg = vaeac_train.prepare_data(ds, config)
    draw_mask = vaeac_train.masker(config, model_cfg["input_dim_vec"])

    def build():
        base = VAEAC(**model_cfg)
        generator = tf.random.Generator.from_seed(0)
        if under:
            model = UnderVAEAC(base, config.under_width, config.under_depth)
            optimizer = TorchAdam(learning_rate=config.under_lr)
            optimizer.build(model.trainable_variables)
            step = vaeac_train.make_under_step(model, optimizer, generator)
        else:
            optimizer = RAdam(learning_rate=1e-4)
            optimizer.build(base.trainable_variables)
            step = vaeac_train.make_vaeac_step(base, optimizer, generator, draw_mask)
        return step, xy_train, config.batch_size, generator

    return build


def bench(build: Builder, rounds: int, reference_s: float | None = None) -> dict:
    set_seed(0)
    epochs = {}
    for mode, jit in (("graph", False), ("xla", True)):
        step, x_train, batch_size, generator = build()
        epochs[mode] = make_train_epoch(step, x_train, generator, batch_size, jit_compile=jit)
        epochs[mode](0)  # warm-up: tracing, and XLA compilation for both batch sizes
    times = {mode: [] for mode in epochs}
    for r in range(rounds):
        for mode, epoch in epochs.items():
            start = time.perf_counter()
            epoch(r + 1)
            times[mode].append(time.perf_counter() - start)
    n_steps = -(-len(x_train) // batch_size)
    out = {"rows": len(x_train), "batch_size": batch_size, "steps_per_epoch": n_steps}
    for mode, ts in times.items():
        out[f"{mode}_s_per_epoch"] = statistics.median(ts)
        out[f"{mode}_ms_per_step"] = 1000 * statistics.median(ts) / n_steps
        out[f"{mode}_all_s"] = ts
    out["xla_speedup"] = out["graph_s_per_epoch"] / out["xla_s_per_epoch"]
    if reference_s is not None:
        out["original_train_only_s_per_epoch"] = reference_s
        out["speedup_vs_original"] = reference_s / min(out["graph_s_per_epoch"], out["xla_s_per_epoch"])
    logger.info("%s", {k: v for k, v in out.items() if not k.endswith("_all_s")})
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs per mode (median reported)")
    parser.add_argument("--out", default=str(RESULTS), help="JSON output path")
    parser.add_argument("--skip-mnist", action="store_true", help="tabular workloads only")
    args = parser.parse_args(argv)
    reference = json.loads((REFERENCE / "pytorch-original.json").read_text())
    result = {"machine": machine_info(),
              "rounds": args.rounds,
              "vae_lsat": bench(vae_builder("lsat"), args.rounds,
                                reference["lsat"]["vae"]["train_only_s_per_epoch_median"]),
              "vae_compas": bench(vae_builder("compas"), args.rounds,
                                  reference["compas"]["vae"]["train_only_s_per_epoch_median"]),
              "vaeac_lsat": bench(vaeac_builder("lsat", under=False), args.rounds),
              "under_lsat": bench(vaeac_builder("lsat", under=True), args.rounds)}
    if not args.skip_mnist:
        result["vae_mnist_conv"] = bench(vae_builder("mnist_t10k", max_rows=2048), args.rounds)
    return write_benchmark(args.out, result)


if __name__ == "__main__":
    setup_logging()
    main()
