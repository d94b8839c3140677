"""Diagnostic: how much of CLUE's result in the evaluation framework is its early-stopping rule?

The original stops a row once its cost changed by less than ``0.01 * cost[0]`` (or 1e-3) over the last 3 steps, then
returns the explanation from 2 steps after the window opened (reference-spec-clue.md 5.5). Where the BNN's targeted
uncertainty is flat, that rule fires at the first step it may (t = 4) and CLUE returns the decode of z after two Adam
steps. This script re-runs the CLUE sweep of a ``CLUE.evaluate`` run on its trained models twice, with the rule and
without it (``n_early_stop = 0``, all ``max_steps``), and scores both with the run's own metrics. It takes the
sensitivity and U-FIDO points at the same explained set from the run's sweep journal (or its ``results.json``) and
compares every curve at equal mean L1 distance, as ``CLUE.evaluate`` does.

It writes only its JSON; the run directory is read, never written.

Run (the run's stages must be trained; its sweeps need not be finished):
    python experiments/diagnostics/clue_early_stop.py --run runs/eval_paper_lsat --target aleatoric \
        --out experiments/diagnostics/clue_early_stop_lsat_aleatoric.json [--every 2]
"""
import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from CLUE import evaluation as ev
from CLUE.evaluation import pipeline as E
from CLUE.explainer import CLUE, CLUEConfig, CLUEWeights
from common.errors import UserError
from common.io import jsonable, save_json
from common.runs import setup_logging

logger = logging.getLogger("clue_early_stop")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a CLUE.evaluate run directory with trained stages")
    parser.add_argument("--target", choices=("aleatoric", "epistemic"), required=True)
    parser.add_argument("--every", type=int, default=1, help="use every k-th lambda of the run's sweep")
    parser.add_argument("--out", required=True, help="JSON to write")
    args = parser.parse_args(argv)

    run_dir = Path(args.run)
    try:
        config, (gt, ds, bnn, vae, _) = E.load_trained_run(run_dir)
    except UserError as err:
        parser.error(str(err))

    budget = ev.EvalBudget(config.n_gt_samples, config.n_px_samples, config.seed)
    refs, info = E.explained_sets(config, gt, bnn, ds, budget)
    if args.target not in refs:
        parser.error(f"the run explains no {args.target} points")
    ref, sweep = refs[args.target], E.make_sweep(config)
    u_test = ev.bnn_uncertainties(bnn, ds.x_test)[args.target]

    journal = ev.read_journal(run_dir / "sweep_points.jsonl")
    fingerprint = ev.sweep_fingerprint(ref, sweep, budget)
    logged = {(m, p): pt for (f, t, m, p), pt in journal.items() if f == fingerprint and t == args.target}
    if (run_dir / "results.json").exists():  # a run finished before sweeps were journalled: its final rows
        for row in json.loads((run_dir / "results.json").read_text())["rows"]:
            if row["target"] == args.target:
                logged.setdefault((row["method"], float(row["param"])), ev.SweepPoint.from_row(row))

    steps = sweep.clue_max_steps_aleatoric if args.target == "aleatoric" else sweep.clue_max_steps_epistemic
    rows, points = [], [pt for (m, _), pt in logged.items() if m != "clue"]
    for lam in sweep.clue_lambdas[::args.every]:
        for n_stop, name in ((sweep.clue_n_early_stop, "clue"), (0, "clue_no_stop")):
            cfg = CLUEConfig(CLUEWeights.paper(lam, ref.x0.shape[1], args.target), lr=sweep.clue_lr,
                             max_steps=steps, n_early_stop=n_stop)
            start = time.perf_counter()
            result = CLUE(bnn, vae, cfg).explain(ref.x0)
            seconds = time.perf_counter() - start
            point = logged.get((name, float(lam)))  # the faithful sweep's points are in the journal
            if point is None:
                point = ev.score(gt, bnn, ref, result.x, budget, name, args.target, lam, seconds)
            points.append(point)
            rows.append({**dataclasses.asdict(point),
                         "fraction_stopped": float(np.mean(result.stop_step > 0)),
                         "median_freeze_index": float(np.median(result.freeze_index)),
                         "max_steps": steps})
            logger.info("lambda %.3g %s: dH %.4f L1 %.3f log p %.3f, stopped %.2f, median freeze %g", lam, name,
                        point.mean_delta_h, point.mean_l1, point.mean_log_px, rows[-1]["fraction_stopped"],
                        rows[-1]["median_freeze_index"])

    table = ev.points_table(points)
    out = {
        "what": "CLUE's sweep on a CLUE.evaluate run with the original's early-stopping rule (clue) and without it "
                "(clue_no_stop, all max_steps), scored with the run's metrics; sensitivity and U-FIDO points are "
                "the run's own, from its journal or results.json (absent where its sweep has not reached them)",
        "command": f"python experiments/diagnostics/clue_early_stop.py --run {args.run} --target {args.target} "
                   f"--every {args.every} --out {args.out}",
        "run": str(run_dir), "dataset": config.dataset, "target": args.target,
        "explained": info[args.target],
        "bnn_uncertainty_test_quantiles": dict(zip(("q05", "q25", "q50", "q75", "q95"),
                                                   np.quantile(u_test, [0.05, 0.25, 0.5, 0.75, 0.95]).tolist())),
        "journal_methods": sorted({m for m, _ in logged}),
        "rows": rows,
        "other_methods": [dataclasses.asdict(p) for p in points if p.method not in ("clue", "clue_no_stop")],
        "at_equal_distance": ev.compare_at_distance(table),
    }
    save_json(args.out, jsonable(out))
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    setup_logging()
    main()
