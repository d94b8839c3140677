"""Throughput of parallel SG-HMC chains (``BNN.train --chains K``): 1, 2 and 4 chains, vectorised or spread over
replicas, against the same chains run one after another.

For each dataset (LSAT: the tabular MLP 12-200-200-2, batch 512; ``mnist_t10k``: the MNIST MLP 784-1200-1200-10,
batch 256, the companion MNIST schedule) and each K, the median wall time of one sampling epoch (no burn-in
adaptation; one untimed warm-up epoch traces the graph) of

* ``parallel``: the K chains as ``BNN.train --chains K --strategy STRATEGY`` runs them (one ``strategy.run`` per
  epoch; with ``default``, one vectorised group of K chains);
* ``sequential``: one chain alone (K = 1), times K: the cost of running the chains one after another.

Reported per K: seconds per epoch, chain-steps per second (K x minibatches per epoch / seconds), posterior samples
per second at the dataset's schedule (K samples every ``save_every`` epochs), and the speed-up over sequential.
Results go to ``benchmarks/results/chains_speed[_<strategy>].json``.

Usage::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/chains_speed.py [--repeats 5] [--datasets lsat mnist_t10k]
    OMP_WAIT_POLICY=PASSIVE python benchmarks/chains_speed.py --strategy mirrored --logical-cpus 2
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import tensorflow as tf
from bnn_predict import median_seconds  # this folder is on sys.path when run as a script

RESULTS = Path(__file__).resolve().parent / "results"
logger = logging.getLogger("benchmarks.chains_speed")


def epoch_seconds(dataset, config, n_chains: int, strategy_name: str, repeats: int) -> float:
    """Median seconds of one sampling epoch of ``n_chains`` chains placed as ``BNN.train`` places them."""
    from BNN import train
    from BNN.chains import ParallelChains
    from common.distribute import make_strategy

    arch, likelihood, hparams = train.model_spec(config, dataset)
    strategy = make_strategy(strategy_name)
    chains = ParallelChains.build(strategy, arch, likelihood, 0, n_chains, hparams, 1, dataset.pixel_norm)
    epoch = chains.epoch_function(dataset.x_train, dataset.y_train, config.batch_size,
                                  config.resample_momentum_every, config.resample_prior_every)
    return median_seconds(lambda: epoch(tf.constant(False))[0].numpy(), repeats)


def bench_dataset(name: str, strategy: str, chain_counts: list[int], repeats: int) -> dict:
    import data
    from BNN import train
    from common.config import with_preset

    config = with_preset(train.Config, train.PRESETS, "mnist" if name.startswith("mnist") else "paper", dataset=name)
    dataset = data.load(name)
    n_batches = math.ceil(len(dataset.x_train) / config.batch_size)
    single = epoch_seconds(dataset, config, 1, "default", repeats)
    rows = []
    for k in chain_counts:
        try:
            seconds = epoch_seconds(dataset, config, k, strategy, repeats) if k > 1 or strategy != "default" \
                else single
        except ValueError as err:  # K not a multiple of the replicas
            logger.info("%s: %d chains skipped (%s)", name, k, err)
            continue
        rows.append({"chains": k, "seconds_per_epoch": seconds, "sequential_seconds_per_epoch": k * single,
                     "chain_steps_per_second": k * n_batches / seconds,
                     "samples_per_second": k / (config.save_every * seconds),
                     "speedup_vs_sequential": k * single / seconds})
        logger.info("%s %s", name, rows[-1])
    return {"n_train": len(dataset.x_train), "batch_size": config.batch_size, "width": config.width,
            "depth": config.depth, "save_every": config.save_every, "minibatches_per_epoch": n_batches,
            "rows": rows}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed epochs per measurement (median reported)")
    parser.add_argument("--datasets", nargs="+", default=["lsat", "mnist_t10k"])
    parser.add_argument("--chains", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--strategy", default="default", choices=["default", "mirrored"])
    parser.add_argument("--logical-cpus", type=int, default=0,
                        help="split the CPU into this many logical devices first (mirrored on a CPU-only machine)")
    parser.add_argument("--out", default=None, help="JSON output path")
    args = parser.parse_args(argv)
    if args.logical_cpus:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus)
    from machine import machine_info, write_benchmark

    suffix = "" if args.strategy == "default" else f"_{args.strategy}"
    out = Path(args.out) if args.out else RESULTS / f"chains_speed{suffix}.json"
    gpus = tf.config.list_physical_devices("GPU")
    result = {
        "command": "OMP_WAIT_POLICY=PASSIVE python benchmarks/chains_speed.py"
                   + (f" --strategy {args.strategy}" if args.strategy != "default" else "")
                   + (f" --logical-cpus {args.logical_cpus}" if args.logical_cpus else ""),
        "machine": machine_info(gpus=[g.name for g in gpus], logical_cpus=args.logical_cpus),
        "strategy": args.strategy, "repeats": args.repeats,
        "datasets": {name: bench_dataset(name, args.strategy, args.chains, args.repeats) for name in args.datasets},
    }
    return write_benchmark(out, result)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    main()
