"""Diagnostic: does the evaluation's verdict depend on which BNN gradient the explanation methods follow?

The original's CLUE, U-FIDO and localized sensitivity all take their input gradient through
``sample_predict(grad=True)``, which under torch 1.3 back-propagates every weight sample through the last saved
sample's kernels (DEVIATIONS.md). This project's methods use the exact gradient. ``CLUE.evaluate --bnn-gradient
torch13`` reruns the sweeps of a run on the same trained stages and explained points with the original's gradient
(copy the finished run's folder first: the stages are reused, the sweep values are new journal entries). This script
puts the two finished runs side by side at equal mean L1 distance, per target, and names the best method at each
distance where at least two methods can be compared.

It writes only its JSON; the run directories are read, never written.

Run:
    cp -r runs/eval_fast_lsat runs/eval_fast_lsat_torch13
    python -m CLUE.evaluate --dataset lsat --preset fast --seed 0 --out runs/eval_fast_lsat_torch13 \
        --bnn-gradient torch13
    python experiments/diagnostics/bnn_gradient.py --exact runs/eval_fast_lsat --torch13 runs/eval_fast_lsat_torch13 \
        --out experiments/diagnostics/bnn_gradient_lsat_fast.json
"""

import argparse
import json
import math
from pathlib import Path

from common.io import save_json

SETTINGS_THAT_MAY_DIFFER = {"out", "bnn_gradient", "progress"}
TIE = 1e-4  # gains closer than this are not told apart (the epistemic COMPAS gains are all 0)


def _load(run: str, expected_gradient: str, parser: argparse.ArgumentParser) -> dict:
    path = Path(run) / "results.json"
    if not path.exists():
        parser.error(f"{path} does not exist: finish the run first (python -m CLUE.evaluate ...)")
    results = json.loads(path.read_text())
    gradient = results["config"].get("bnn_gradient", "exact")
    if gradient != expected_gradient:
        parser.error(f"{path} was run with --bnn-gradient {gradient}, not {expected_gradient}")
    return results


def best_by_distance(rows: list[dict]) -> list[dict]:
    """Per (target, L1): the method with the largest ground-truth gain where two or more methods reach that L1.

    The gain is the aleatoric entropy reduction ``delta_h`` for the aleatoric target and the BNN error reduction
    ``delta_err`` for the epistemic one, as the paper's figures plot them. Methods within ``TIE`` of the largest
    gain share it (``best`` lists them all).
    """
    out = []
    for target in sorted({r["target"] for r in rows}):
        key = "delta_h" if target == "aleatoric" else "delta_err"
        for l1 in sorted({r["l1"] for r in rows if r["target"] == target}):
            here = {r["method"]: r[key] for r in rows if r["target"] == target and r["l1"] == l1
                    and not math.isnan(r[key])}
            if len(here) >= 2:
                top = max(here.values())
                best = "+".join(m for m in sorted(here) if here[m] >= top - TIE)
                out.append({"target": target, "l1": l1, "metric": key, "best": best,
                            **{m: round(v, 4) for m, v in sorted(here.items())}})
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exact", required=True, help="a finished CLUE.evaluate run with the exact gradient")
    parser.add_argument("--torch13", required=True, help="the same run rerun with --bnn-gradient torch13")
    parser.add_argument("--out", required=True, help="JSON to write")
    args = parser.parse_args(argv)
    runs = {"exact": _load(args.exact, "exact", parser), "torch13": _load(args.torch13, "torch13", parser)}
    differing = sorted(k for k in set(runs["exact"]["config"]) | set(runs["torch13"]["config"])
                       if k not in SETTINGS_THAT_MAY_DIFFER
                       and runs["exact"]["config"].get(k) != runs["torch13"]["config"].get(k))
    if differing:
        parser.error(f"the two runs differ in more than the gradient: {differing}")
    if runs["exact"]["references"] != runs["torch13"]["references"]:
        parser.error("the two runs explain different points (their references differ)")
    summary = {
        "what": "the same evaluation run (trained stages, explained points, sweeps, metrics) with the methods "
                "following the exact BNN input gradient and the original's torch-1.3 gradient",
        "dataset": runs["exact"]["dataset"],
        "runs": {"exact": args.exact, "torch13": args.torch13},
        "references": runs["exact"]["references"],
        "best_at_equal_distance": {g: best_by_distance(r["at_equal_distance"]) for g, r in runs.items()},
        "at_equal_distance": {g: r["at_equal_distance"] for g, r in runs.items()},
        "rows": {g: [{k: v for k, v in row.items() if k != "seconds"} for row in r["rows"]]
                 for g, r in runs.items()},
    }
    save_json(args.out, summary)
    for gradient, best in summary["best_at_equal_distance"].items():
        for row in best:
            print(gradient, {k: v for k, v in row.items() if k != "metric"})
    return summary


if __name__ == "__main__":
    main()
