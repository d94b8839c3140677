"""Posterior-predictive speed of the vectorised BNN against the original's per-sample loop, and SG-HMC epoch time.

Two measurements, medians over ``--repeats`` timed runs after one warm-up, written to
``benchmarks/results/bnn_predict.json``:

1. ``predict``: S = 100 samples of the tabular MLP with LSAT dimensions (12 -> 200 -> 200 -> 2), batches of 1, 16,
   256, 1000 and 10000 inputs. ``vectorised`` is ``Posterior.forward`` as shipped: one graph call, batched
   matmuls over the stacked kernels below 128 rows and one fused matmul-bias-ReLU branch per sample from 128 rows
   on (``BNN.model.forward_unrolled``); ``batched`` forces the batched matmuls (``Posterior(..., unroll=False)``)
   and ``*_xla`` compiles them with XLA (``jit_compile=True``); ``loop`` is the original's approach (assign each
   sample's weights into a Keras model, run it, stack).
   Achieved GFLOP/s (2 * S * B * sum(in * out) multiply-adds) are shown beside ``matmul_gflops``, a
   2048 x 2048 x 2048 ``tf.matmul`` timed in turns with the forward passes of each batch (the machine is shared,
   so its speed drifts; the load averages are recorded too): the best this CPU and TF build reach meanwhile.
2. ``sghmc_lsat``: seconds per SG-HMC epoch on LSAT (17432 rows, batch 512, 35 steps), burn-in and sampling
   epochs, excluding the one-off graph trace; the original took 0.462 s (0.457 s train loop only).

Usage::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bnn_predict.py [--repeats 16] [--quick]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from machine import machine_info, write_benchmark

from BNN.model import Architecture, init_params
from BNN.posterior import Posterior
from common.runs import setup_logging

logger = logging.getLogger("benchmarks.bnn_predict")

RESULTS = Path(__file__).resolve().parent / "results" / "bnn_predict.json"
DEFAULT_REPEATS = 16
REFERENCE_SECONDS_PER_EPOCH = 0.462  # shared/reference/README.md section 1, LSAT, incl. dev eval every 10 epochs


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs, after one untimed warm-up run."""
    return interleaved_median_seconds({"fn": fn}, repeats)["fn"]


def interleaved_median_seconds(fns: dict, repeats: int) -> dict[str, float]:
    """Median wall time of each function, timed in turns (one run of each per round, after one warm-up round).

    Taking turns exposes every function to the same drift of a shared machine's speed, so ratios between them
    (achieved vs. matmul GFLOP/s) compare like with like. The order is shuffled every round (seeded): a function
    timed right after a large matmul runs measurably slower (up to 20% for millisecond calls), and no function
    should always take that place, which a fixed or merely rotated order would give it.
    """
    names = list(fns)
    order_rng = np.random.default_rng(0)
    times = {name: [] for name in names}
    for round_ in range(repeats + 1):
        for name in order_rng.permutation(names):
            t0 = time.perf_counter()
            fns[name]()
            if round_:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def matmul_fn(n: int = 2048):
    """A 2048 x 2048 x 2048 ``tf.matmul`` (returns a callable that runs it) and its flop count."""
    a = tf.random.stateless_normal([n, n], seed=[0, 1])
    b = tf.random.stateless_normal([n, n], seed=[0, 2])
    mm = tf.function(lambda: tf.matmul(a, b))
    return (lambda: mm().numpy()), 2 * n**3


def keras_loop_predict(model, samples: list[list[np.ndarray]], x: tf.Tensor) -> np.ndarray:
    """The original ``sample_predict``: for each sample, load its weights into the model, run it; stack [S, B, out]."""
    outs = []
    for weights in samples:
        for variable, value in zip(model.weights, weights):
            variable.assign(value)
        outs.append(model(x, training=False))
    return tf.stack(outs).numpy()


def bench_predict(batches: list[int], n_samples: int, repeats: int) -> list[dict]:
    import keras

    arch = Architecture("mlp", input_dim=12, output_dim=2, width=200, depth=2)
    per_sample = [init_params(arch, seed) for seed in range(n_samples)]
    stacked = {k: np.stack([p[k] for p in per_sample]) for k in per_sample[0]}
    posterior = Posterior(arch, "gaussian", stacked)
    posterior_batched = Posterior(arch, "gaussian", stacked, unroll=False)
    posterior_xla = Posterior(arch, "gaussian", stacked, jit_compile=True)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(200, activation="relu"),
                              keras.layers.Dense(200, activation="relu"), keras.layers.Dense(2)])
    samples = [[p[k] for k in arch.param_shapes()] for p in per_sample]
    kernel_sizes = [int(np.prod(s)) for k, s in arch.param_shapes().items() if k.endswith("kernel")]
    flops_per_row = 2 * n_samples * sum(kernel_sizes)
    matmul, matmul_flops = matmul_fn()
    rows = []
    for batch in batches:
        x = tf.random.stateless_normal([batch, 12], seed=[1, batch])
        vec = posterior.forward(x).numpy()
        np.testing.assert_allclose(vec, keras_loop_predict(model, samples, x), rtol=1e-4, atol=1e-4)
        # The matmul runs in turns with the three forward passes: the machine's speed drifts, and the ratios must
        # compare measurements taken under the same conditions.
        forwards = {"vectorised": posterior, "batched": posterior_batched, "xla": posterior_xla}
        times = interleaved_median_seconds(
            {"matmul": matmul, **{name: (lambda p=p: p.forward(x).numpy()) for name, p in forwards.items()}}, repeats)  # noqa: B023
        peak = matmul_flops / times["matmul"] / 1e9
        t_vec, t_batched, t_xla = times["vectorised"], times["batched"], times["xla"]
        t_loop = median_seconds(lambda: keras_loop_predict(model, samples, x), max(1, repeats // 2))  # noqa: B023
        gflops, gflops_batched, gflops_xla = (flops_per_row * batch / t / 1e9 for t in (t_vec, t_batched, t_xla))
        rows.append({"batch": batch, "matmul_gflops": peak, "vectorised_ms": 1e3 * t_vec,
                     "batched_ms": 1e3 * t_batched, "vectorised_xla_ms": 1e3 * t_xla, "loop_ms": 1e3 * t_loop,
                     "speedup": t_loop / t_vec, "speedup_xla": t_loop / t_xla,
                     "vectorised_gflops": gflops, "batched_gflops": gflops_batched,
                     "vectorised_xla_gflops": gflops_xla, "fraction_of_matmul": gflops / peak,
                     "fraction_of_matmul_batched": gflops_batched / peak,
                     "fraction_of_matmul_xla": gflops_xla / peak})
        logger.info("%s", rows[-1])
    return rows


def bench_sghmc_lsat(repeats: int) -> dict:
    import data
    from BNN import train
    from BNN.chains import ChainGroup

    config = train.Config(dataset="lsat")
    dataset = data.load("lsat")
    arch, likelihood, hparams = train.model_spec(config, dataset)
    chain = ChainGroup(arch, likelihood, [config.seed], hparams, config.n_saves)  # BNN.train's single chain
    x, y = tf.constant(dataset.x_train), tf.constant(dataset.y_train)
    epoch = tf.function(lambda burn: chain.train_epoch(x, y, config.batch_size, burn, config.resample_momentum_every,
                                                       config.resample_prior_every))
    burn_in = median_seconds(lambda: float(epoch(tf.constant(True))[0][0]), repeats)
    sampling = median_seconds(lambda: float(epoch(tf.constant(False))[0][0]), repeats)
    return {"n_train": len(dataset.x_train), "batch_size": config.batch_size,
            "seconds_per_epoch_burn_in": burn_in, "seconds_per_epoch_sampling": sampling,
            "reference_seconds_per_epoch": REFERENCE_SECONDS_PER_EPOCH,
            "speedup_vs_reference": REFERENCE_SECONDS_PER_EPOCH / max(burn_in, sampling)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                        help="timed runs per measurement (median reported)")
    parser.add_argument("--samples", type=int, default=100, help="posterior samples S")
    parser.add_argument("--quick", action="store_true", help="batches 1 and 256 only, 2 repeats, no SG-HMC")
    parser.add_argument("--out", default=str(RESULTS), help="JSON output path")
    args = parser.parse_args(argv)
    repeats = 2 if args.quick else args.repeats
    batches = [1, 256] if args.quick else [1, 16, 256, 1000, 10000]
    result = {
        "command": "OMP_WAIT_POLICY=PASSIVE python benchmarks/bnn_predict.py" + (" --quick" if args.quick else "")
                   + (f" --repeats {args.repeats}" if args.repeats != DEFAULT_REPEATS and not args.quick else ""),
        "machine": machine_info(),
        "repeats": repeats, "n_samples": args.samples, "dims": [12, 200, 200, 2],
        "predict": bench_predict(batches, args.samples, repeats),
    }
    if not args.quick:
        result["sghmc_lsat"] = bench_sghmc_lsat(repeats)
        logger.info("%s", result["sghmc_lsat"])
    return write_benchmark(args.out, result)


if __name__ == "__main__":
    setup_logging()
    main()
