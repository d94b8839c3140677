"""The evaluation framework's sweeps: FLOPs, seconds and the fraction of this CPU's matmul rate they reach.

One sweep value of each method on the LSAT-sized workload of a paper-budget run of ``CLUE.evaluate`` (spec 6.4):
``--n-points`` explained points (1,000: the default subset), a 100-sample BNN (12-200-200-2), CLUE's VAE (width 300,
depth 3, L = 4) and the in-filling VAEAC (width 350, depth 3, L = 4), with the [nb] method settings: CLUE 55 Adam
steps (early stopping off, so the count is fixed), U-FIDO 30 iterations (20 mask samples for the first 11, 10 after),
one sensitivity step. The models' weights are random: the time does not depend on them.

FLOPs are counted from the dense layers each method runs (2 per multiply-add): CLUE's decoder and BNN forward and
backward (the backward to the input costs another multiply-add per weight), its encoder once; U-FIDO's VAEAC
prior network and decoder forward (no gradient flows into them) and its BNN forward and backward per mask sample;
sensitivity's BNN forward and backward once. Bias adds, activations and the likelihood's softmax are left out, so
the rates are slight underestimates. The same run times a 2048 x 2048 x 2048 float32 matmul, the reference rate.

Usage::

    OMP_WAIT_POLICY=PASSIVE python benchmarks/evaluation_speed.py [--n-points 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path

import numpy as np
from machine import machine_info, matmul_gflops, write_benchmark

import data
from BNN.model import Architecture, init_params
from BNN.posterior import Posterior
from CLUE.evaluation import Sweep, explain_with
from common.runs import setup_logging
from VAE.model import VAE
from VAEAC.model import VAEAC

logger = logging.getLogger("benchmarks.evaluation_speed")

RESULTS = Path(__file__).resolve().parent / "results" / "evaluation_speed.json"


def dense_macs(weights) -> int:
    """Multiply-adds per input row of the dense layers among ``weights`` (every rank-2 kernel; a rank-3 stack of S
    kernels counts S times)."""
    return int(sum(np.prod(w.shape) for w in weights if len(w.shape) >= 2))


def build_models(n_samples: int = 100):
    lsat = data.load("lsat")
    vec = list(lsat.input_dim_vec)
    d = sum(vec)
    arch = Architecture("mlp", d, 2, 200, 2)
    draws = [init_params(arch, seed) for seed in range(n_samples)]
    bnn = Posterior(arch, "gaussian", {k: np.stack([s[k] for s in draws]) for k in draws[0]})
    vae = VAE(vec, latent_dim=4, width=300, depth=3)
    vaeac = VAEAC(vec, latent_dim=4, width=350, depth=3)
    x = lsat.x_test[np.random.default_rng(0).permutation(len(lsat.x_test))]
    return bnn, vae, vaeac, x


def flop_counts(bnn, vae, vaeac, n: int, sweep: Sweep) -> dict[str, float]:
    bnn_macs = dense_macs(bnn.samples.values())
    dec, enc = dense_macs(vae.decoder.weights), dense_macs(vae.encoder.weights)
    infill = dense_macs(vaeac.prior_net.weights) + dense_macs(vaeac.decoder.weights)
    passes = sum(20 if it < 11 else 10 for it in range(sweep.ufido_iterations))
    return {"clue": 2.0 * n * (enc + sweep.clue_max_steps_aleatoric * 2 * (dec + bnn_macs)),
            "ufido": 2.0 * n * (passes * (infill + 2 * bnn_macs) + infill),
            "sensitivity": 2.0 * n * 2 * bnn_macs}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python benchmarks/evaluation_speed.py", description=__doc__.split("\n")[0])
    parser.add_argument("--n-points", type=int, default=1000, help="explained points (default: 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method (median reported)")
    parser.add_argument("--methods", default="sensitivity,clue,ufido", help="comma-separated methods to time")
    parser.add_argument("--out", default=str(RESULTS), help="JSON file to write")
    args = parser.parse_args(argv)
    bnn, vae, vaeac, x = build_models()
    x0 = np.resize(x, (args.n_points, x.shape[1])).astype(np.float32)
    sweep = Sweep(clue_n_early_stop=0)
    flops = flop_counts(bnn, vae, vaeac, args.n_points, sweep)
    params = {"clue": 1.0, "ufido": 1e-2, "sensitivity": 1.0}
    result = {"machine": machine_info(), "n_points": args.n_points, "repeats": args.repeats,
              "command": "python benchmarks/evaluation_speed.py" + (f" --n-points {args.n_points}"
                                                                    if args.n_points != 1000 else ""),
              "methods": {}}
    rates = []
    for method in args.methods.split(","):
        run = lambda: explain_with(method, "aleatoric", params[method], x0, bnn, vae, vaeac, sweep)  # noqa: B023, E731
        run()  # warm-up: traces
        times, matmul = [], []
        for _ in range(args.repeats):  # the reference rate interleaved with the method, under the same load
            matmul.append(matmul_gflops(2048, 3))
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        seconds, ref = statistics.median(times), statistics.median(matmul)
        gflops = flops[method] / seconds / 1e9
        rates.append(ref)
        result["methods"][method] = {"seconds": seconds, "gflop": flops[method] / 1e9, "gflops": gflops,
                                     "matmul_gflops": ref, "fraction_of_matmul": gflops / ref}
        logger.info("%s: %.2f s, %.1f GFLOP, %.1f GFLOP/s = %.2f of the matmul's %.1f", method, seconds,
                    flops[method] / 1e9, gflops, gflops / ref, ref)
    result["matmul_gflops_2048"] = statistics.median(rates)
    return write_benchmark(args.out, result)


if __name__ == "__main__":
    setup_logging()
    main()
