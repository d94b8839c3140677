"""CLUE explanations per second, beside the PyTorch original's figures measured on this kind of machine.

Three workloads, each the median of ``--repeats`` timed runs after one warm-up, written to
``benchmarks/results/clue_speed.json``:

1. ``lsat``, ``compas``: the original's trained models (parity kit: BNN samples 0..52, gauss_cat VAE) on the same
   points and settings as the reference run (the 10% most uncertain test points; batch 256, lr 0.1, 50 steps,
   lambda 2, min_steps 3, n_early_stop 3, z_init = encoder mean). Both gradient variants: ``exact`` (ours) against
   the original's ``clue_exact_grad`` figure, ``orig`` (the torch-1.3 stale-weight gradient, ``CLUE.compat``)
   against its ``clue`` figure.
2. ``mnist_sized``: 200 flat 28x28 inputs, the 784-1200-1200-10 BNN with 19 samples and the conv VAE (L = 20)
   of the reference MNIST run (batch 128, lr 0.1, 35 steps, lambda 4). Its weights are random (no trained MNIST
   models are needed to time the computation), so early stopping is switched off and all 35 steps run for every
   point: the original also ran all steps, so this is the conservative comparison.

Usage::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/clue_speed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import numpy as np
from machine import machine_info, write_benchmark

from BNN.model import Architecture, init_params
from BNN.posterior import Posterior
from CLUE.compat import OriginalGradientMLP
from CLUE.explainer import CLUE, CLUEConfig, CLUEWeights
from common.io import PROJECT_ROOT
from common.runs import setup_logging
from VAE.model import VAE, load_parity_npz

logger = logging.getLogger("benchmarks.clue_speed")

RESULTS = Path(__file__).resolve().parent / "results" / "clue_speed.json"
REFERENCE = PROJECT_ROOT.parent / "shared" / "reference"


def _median_run(clue: CLUE, x0: np.ndarray, z_init: np.ndarray | None, repeats: int) -> tuple[float, object]:
    result = clue.explain(x0, z_init=z_init)  # warm-up: traces the step function
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = clue.explain(x0, z_init=z_init)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def bench_tabular(name: str, likelihood: str, repeats: int, reference: dict) -> dict:
    folder = REFERENCE / "parity" / name
    io = np.load(folder / "io.npz")
    vae = load_parity_npz(folder / "vae.npz")
    x0, z_init = io["clue/x0"], io["clue/z_init"]
    bnns = {"exact": Posterior.from_npz(folder / "bnn_samples.npz", likelihood)[:-1],
            "orig": OriginalGradientMLP.from_npz(folder / "bnn_samples.npz", likelihood)}
    ref_keys = {"exact": "clue_exact_grad", "orig": "clue"}
    out = {"n_points": int(len(x0)), "settings": "batch 256, lr 0.1, 50 steps, lambda 2 (reference settings)"}
    for variant, bnn in bnns.items():
        config = CLUEConfig(CLUEWeights.paper(2.0, x0.shape[1]), lr=0.1, max_steps=50, batch_size=256)
        seconds, result = _median_run(CLUE(bnn, vae, config), x0, z_init, repeats)
        ref = reference[name][ref_keys[variant]]["wall_s_per_100_points"]
        per_100 = 100 * seconds / len(x0)
        out[variant] = {"seconds": seconds, "seconds_per_100_points": per_100,
                        "explanations_per_second": len(x0) / seconds,
                        "original_seconds_per_100_points": ref, "speedup_vs_original": ref / per_100,
                        "mean_uncertainty_after": float(result.uncertainty_after.mean())}
        logger.info("%s %s: %.3f s / 100 points (original %.2f): %.1fx", name, variant, per_100, ref, ref / per_100)
    return out


def bench_mnist_sized(repeats: int, reference: dict, n_points: int = 200) -> dict:
    rng = np.random.default_rng(0)
    arch = Architecture("mlp", 784, 10, 1200, 2)
    samples = [init_params(arch, seed=s) for s in range(19)]
    posterior = Posterior(arch, "categorical", {k: np.stack([s[k] for s in samples]) for k in samples[0]},
                          input_norm=(0.1307, 0.3081))
    vae = VAE([1] * 784, 20, likelihood="bernoulli", arch="mnist_conv")
    x0 = rng.uniform(size=(n_points, 784)).astype(np.float32)
    vae(x0[:2])  # build
    config = CLUEConfig(CLUEWeights.paper(4.0, 784), lr=0.1, max_steps=35, n_early_stop=0, batch_size=128)
    seconds, _ = _median_run(CLUE(posterior, vae, config), x0, None, repeats)
    ref = reference["clue_exact_grad"]["wall_s_per_100_points"]
    per_100 = 100 * seconds / n_points
    logger.info("mnist-sized: %.3f s / 100 points (original %.2f): %.1fx", per_100, ref, ref / per_100)
    return {"n_points": n_points, "settings": "BNN 784-1200-1200-10 x 19 samples, conv VAE L=20, batch 128, "
                                              "lr 0.1, 35 steps (all run), lambda 4; random weights",
            "exact": {"seconds": seconds, "seconds_per_100_points": per_100,
                      "explanations_per_second": n_points / seconds, "original_seconds_per_100_points": ref,
                      "speedup_vs_original": ref / per_100}}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per workload (median reported)")
    parser.add_argument("--out", default=str(RESULTS), help="JSON output path")
    parser.add_argument("--skip-mnist", action="store_true", help="tabular workloads only")
    args = parser.parse_args(argv)
    if not (REFERENCE / "parity" / "lsat" / "io.npz").exists():
        raise SystemExit(f"the parity kit is needed at {REFERENCE / 'parity'} (the original's trained models)")
    tabular_ref = json.loads((REFERENCE / "pytorch-original.json").read_text())
    mnist_ref = json.loads((REFERENCE / "mnist-t10k-original.json").read_text())
    result = {"machine": machine_info(),
              "repeats": args.repeats,
              "lsat": bench_tabular("lsat", "gaussian", args.repeats, tabular_ref),
              "compas": bench_tabular("compas", "categorical", args.repeats, tabular_ref)}
    if not args.skip_mnist:
        result["mnist_sized"] = bench_mnist_sized(args.repeats, mnist_ref)
    return write_benchmark(args.out, result)


if __name__ == "__main__":
    setup_logging()
    main()
