"""Our Credit evaluation runs beside the authors' own printed outputs (the only evaluation numbers of theirs).

The authors' numbers are transcribed in :data:`AUTHORS` from ``../shared/reference/authors-credit-evaluation.md`` (one
artificial draw, torch 1.3, U-FIDO's MNIST normalization: the configuration ``--original-config`` reproduces);
``tests/test_authors_credit.py`` checks the transcription against that file. Ours come from the committed study runs
``experiments/results/study/paper/credit_s<seed>[_<switch>].json``. Per target: the fraction of test points
selected, the explained points' mean GT entropy H(X0) (aleatoric) or BNN error against the GT label (epistemic),
their mean GT log p(X0), and per method the best gain over its sweep (the largest mean ΔH, or Δerr) with the entropy
or error it reaches. The authors printed only part of each sweep (truncated outputs), so their best gains are lower
bounds; they printed no L1 distances, so gains are not compared at equal distance here.

Run:
    python experiments/authors_credit.py     # writes experiments/results/study/authors_credit.json and prints tables
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.io import PROJECT_ROOT, load_json, save_json  # noqa: E402

STUDY = PROJECT_ROOT / "experiments" / "results" / "study" / "paper"
OUT = PROJECT_ROOT / "experiments" / "results" / "study" / "authors_credit.json"
METHODS = ("clue", "sensitivity", "ufido")
SWITCHES = ("default", "torch13_grad", "mnist_norm", "original_config")

# ../shared/reference/authors-credit-evaluation.md, "Authors' own printed outputs" (Credit, 3000 test points).
# Aleatoric: GT entropy after each printed sweep point; epistemic: BNN error against the GT label after each.
AUTHORS = {
    "n_test": 3000,
    "aleatoric": {
        "n_selected": 1384, "h_x0": 0.5679, "log_px_x0": -95.48,
        "after": {
            "clue": [0.080, 0.082, 0.082, 0.087, 0.108, 0.146, 0.201, 0.330, 0.424, 0.472, 0.510, 0.530, 0.545, 0.548,
                     0.555, 0.557, 0.559, 0.562, 0.570, 0.574, 0.576],
            "sensitivity": [0.568, 0.560, 0.548, 0.530, 0.511, 0.490, 0.471, 0.453, 0.439, 0.416, 0.394, 0.434, 0.470],
            "ufido": [0.516, 0.514, 0.517, 0.521, 0.516, 0.528, 0.531, 0.543, 0.554, 0.568],
        },
    },
    "epistemic": {
        "n_selected": 655, "error_x0": 0.5160, "log_px_x0": -110.58,
        "after": {
            "clue": [0.260, 0.264, 0.260, 0.243, 0.296, 0.305, 0.330, 0.319, 0.330, 0.342, 0.333, 0.330, 0.325, 0.339,
                     0.345, 0.327, 0.339, 0.340, 0.342, 0.330, 0.331],
            "sensitivity": [0.482, 0.531],  # printed as a range only: its two ends
            "ufido": [0.350, 0.333, 0.365, 0.360, 0.350, 0.386, 0.424, 0.505, 0.524],
        },
    },
}


def authors_rows() -> dict:
    """The authors' figures in the table's terms (best gain = the start minus the lowest value printed)."""
    out = {}
    for target, key in (("aleatoric", "h_x0"), ("epistemic", "error_x0")):
        a = AUTHORS[target]
        start = a[key]
        out[target] = {"fraction_selected": a["n_selected"] / AUTHORS["n_test"], "start": start,
                       "log_px_x0": a["log_px_x0"],
                       "methods": {m: {"best_gain": start - min(v), "reached": min(v)} for m, v in a["after"].items()}}
    return out


def run_rows(results: dict) -> dict:
    """One committed run in the table's terms."""
    out = {}
    for target, gain_key in (("aleatoric", "mean_delta_h"), ("epistemic", "delta_err")):
        ref = results["references"][target]
        start = ref["mean_gt_uncertainty_x0"] if target == "aleatoric" else ref["error_x0"]
        methods = {}
        for method in METHODS:
            rows = [r for r in results["rows"] if r["method"] == method and r["target"] == target]
            if rows:
                best = max(rows, key=lambda r: r[gain_key])
                methods[method] = {"best_gain": best[gain_key], "reached": start - best[gain_key],
                                   "mean_l1": best["mean_l1"], "log_px": best["mean_log_px"]}
        out[target] = {"fraction_selected": ref["fraction_selected"], "start": start,
                       "log_px_x0": ref["mean_log_px_x0"], "n_explained": ref["n_explained"], "methods": methods}
    return out


def table(study: Path = STUDY) -> dict:
    """``{"authors": ..., "runs": {name: ...}}`` for every committed Credit run of the study."""
    runs = {}
    for switch in SWITCHES:
        for seed in range(3):
            name = f"credit_s{seed}" + ("" if switch == "default" else f"_{switch}")
            if (study / f"{name}.json").is_file():
                runs[name] = {"switch": switch, "seed": seed, **run_rows(load_json(study / f"{name}.json"))}
    return {"source_authors": "../shared/reference/authors-credit-evaluation.md", "authors": authors_rows(),
            "runs": runs}


def markdown(t: dict) -> str:
    """Two Markdown tables (aleatoric, epistemic): the authors' row, then each run's."""
    lines = []
    for target, start, gain in (("aleatoric", "H(X0)", "best ΔH"), ("epistemic", "err(X0)", "best Δerr")):
        lines += [f"**{target}**", "",
                  f"| run | selected | {start} | log p(X0) | " + " | ".join(f"{m} {gain} (reached)" for m in METHODS)
                  + " |", "|---|---:|---:|---:|" + "---:|" * len(METHODS)]
        for name, row in [("authors (printed)", t["authors"]), *t["runs"].items()]:
            r = row[target]
            cells = [f"{r['methods'][m]['best_gain']:.3f} ({r['methods'][m]['reached']:.3f})" if m in r["methods"]
                     else "-" for m in METHODS]
            lines.append(f"| {name} | {r['fraction_selected']:.1%} | {r['start']:.3f} | {r['log_px_x0']:.1f} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    t = table()
    save_json(args.out, t)
    print(markdown(t))
    return t


if __name__ == "__main__":
    main()
