"""Diagnostic: has the importance-sampled log p_gt(x) of the evaluation framework converged at the [nb] sample count?

Metric 3 (``CLUE.evaluation.log_px``, the original's ``get_VAEAC_px_gauss_cat``) estimates each point's
log-likelihood under the ground truth with 1,000 importance samples from the under-VAEAC's recognition net. The
estimate is biased low (Jensen) by an amount that shrinks as the sample count grows, and the bias is largest where
the proposal misses the latent region that explains the point. This script takes a ``CLUE.evaluate`` run's trained
stages and explained points (the first ``--n-points`` of one target), explains them again with the methods and sweep
values given (``--explain clue:0.25 sensitivity:55.3``; the same code the sweeps run), and estimates log p_gt(x) of
the original points and of each explanation set at each ``--samples`` count, with the same seed. If the sets' order
and gaps hold as the count grows, the study's log p(x) comparisons do not rest on the estimator's bias.

It writes only its JSON; the run directory is read, never written.

Run (the run's stages must be trained)::

    python experiments/diagnostics/log_px_convergence.py --run runs/study/paper/credit_s0 --target aleatoric \\
        --n-points 200 --samples 1000 10000 50000 --explain clue:0.25 ufido:0.127 sensitivity:55.3 \\
        --out experiments/diagnostics/log_px_convergence_credit_s0.json
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from CLUE import evaluation as ev  # noqa: E402
from CLUE.evaluation import pipeline as E  # noqa: E402
from common.errors import UserError  # noqa: E402
from common.io import jsonable, save_json  # noqa: E402
from common.runs import setup_logging  # noqa: E402

logger = logging.getLogger("log_px_convergence")


def summary(lp: np.ndarray) -> dict[str, float]:
    q = np.quantile(lp, [0.05, 0.5])
    return {"mean": float(lp.mean()), "median": float(q[1]), "q05": float(q[0]), "min": float(lp.min())}


def _method_value(text: str) -> tuple[str, float]:
    method, _, value = text.partition(":")
    if method not in ev.METHODS or not value:
        raise argparse.ArgumentTypeError(f"expected METHOD:VALUE with METHOD one of {ev.METHODS}, got {text!r}")
    return method, float(value)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a CLUE.evaluate run directory with trained stages")
    parser.add_argument("--target", choices=("aleatoric", "epistemic"), required=True)
    parser.add_argument("--n-points", type=int, default=200, help="the first N explained points of the target")
    parser.add_argument("--samples", type=int, nargs="+", default=[1000, 10000, 50000],
                        help="importance-sample counts (the [nb]'s is 1000)")
    parser.add_argument("--explain", type=_method_value, nargs="*", default=[], metavar="METHOD:VALUE",
                        help="explanation sets to estimate beside the original points")
    parser.add_argument("--out", required=True, help="JSON to write")
    args = parser.parse_args(argv)

    run_dir = Path(args.run)
    try:
        config, (gt, ds, bnn, vae, art_vaeac) = E.load_trained_run(run_dir)
    except UserError as err:
        parser.error(str(err))

    budget = ev.EvalBudget(config.n_gt_samples, config.n_px_samples, config.seed)
    refs, _ = E.explained_sets(config, gt, bnn, ds, budget)
    if args.target not in refs:
        parser.error(f"the run explains no {args.target} points")
    x0 = refs[args.target].x0[:args.n_points]
    sweep = E.make_sweep(config)

    sets = {"original": x0}
    for method, value in args.explain:
        sets[f"{method}:{value:g}"] = ev.explain_with(method, args.target, value, x0, bnn, vae, art_vaeac, sweep)
    rows, estimates = [], {}
    for name, x in sets.items():
        l1 = float(np.abs(x - x0).sum(axis=1).mean())
        for n in args.samples:
            start = time.perf_counter()
            lp = ev.log_px(gt, x, n, budget.seed)
            estimates[(name, n)] = lp
            first = estimates[(name, args.samples[0])]
            worst = np.argsort(first)[:10]
            rows.append({"set": name, "mean_l1": l1, "samples": n, **summary(lp),
                         "rise_of_10_lowest": float((lp - first)[worst].mean()),
                         "seconds": time.perf_counter() - start})
            logger.info("%s (L1 %.1f), %d samples: mean %.1f, median %.1f, min %.0f", name, l1, n, lp.mean(),
                        np.median(lp), lp.min())
    out = {
        "what": "importance-sampled log p_gt(x) (CLUE.evaluation.log_px) of a run's first explained points and of "
                "explanation sets, at several sample counts with one seed; rise_of_10_lowest: the mean change, "
                "against the first count, of the 10 points lowest at the first count",
        "command": " ".join(["python experiments/diagnostics/log_px_convergence.py", "--run", args.run, "--target",
                             args.target, "--n-points", str(args.n_points), "--samples",
                             *map(str, args.samples)] + (["--explain", *(f"{m}:{v:g}" for m, v in args.explain)]
                                                         if args.explain else []) + ["--out", args.out]),
        "run": str(run_dir), "dataset": config.dataset, "target": args.target, "n_points": len(x0),
        "rows": rows,
    }
    save_json(args.out, jsonable(out))
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    setup_logging()
    main()
