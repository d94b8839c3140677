"""Every figure of the PyTorch original beside ours: the driver of ``experiments/compare_pytorch.ipynb``.

Three kinds of rows, over LSAT, COMPAS, Wine, Credit and ``mnist_t10k``:

* **parity**: the original's trained models (the parity kits) run by our code, ``verification.parity_checks.check_kit``:
  each figure it recomputes beside the original's, inside when within the tolerance the checks give it;
* **own models**: our trained models (committed results, one value per training seed) beside the original's run:
  inside when |diff| <= 2 sd over our seeds, or, with one seed, within the original's range over its two gradient
  variants where they differ; otherwise n/a;
* **speed**: timings beside the original's, not judged.

No number is typed here: the original's come from ``../shared/reference/{pytorch-original,mnist-t10k-original}.json``
(its own runs: LSAT, COMPAS, MNIST) and from the kits' arrays (Wine and Credit), via
``verification.parity.original_figures``;
ours from ``experiments/results/*.json`` and ``benchmarks/results/*.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from common.io import PROJECT_ROOT, save_json
from verification import parity

DATASETS = ("lsat", "compas", "wine", "credit", "mnist_t10k")
RUNS = {"clue_exact": "exact gradients, lr 0.1", "clue_orig": "torch-1.3 gradients, lr 0.1",
        "clue_exact_lr0.01": "exact gradients, lr 0.01", "clue_orig_lr0.01": "torch-1.3 gradients, lr 0.01"}
ROWS = [  # (component, metric, figure key of verification.parity.kit_figures)
    ("BNN", "test RMSE (original units)", "test_rmse"), ("BNN", "test log-likelihood (total std)", "test_loglik"),
    ("BNN", "test log-likelihood (exact mixture)", "test_loglik_mixture"), ("BNN", "test accuracy", "test_accuracy"),
    ("BNN", "test NLL (nats)", "test_nll"), ("BNN", "mean total uncertainty, test rows", "mean_uncertainty_all_test"),
    ("VAE", "test ELBO, best checkpoint", "test_elbo"), ("VAE", "test reconstruction log-lik", "test_rec_loglik"),
    ("VAE", "test KL", "test_kl"), ("VAE", "continuous RMSE (normalised)", "vae_rmse_continuous"),
    ("VAE", "categorical accuracy (mean over features)", "vae_accuracy_categorical"),
    ("VAE", "best epoch (0-based)", "vae_best_epoch"), ("CLUE", "uncertainty before (x0)", "mean_uncertainty_before"),
    ("CLUE", "uncertainty of the VAE reconstruction", "mean_uncertainty_vae_reconstruction"),
    ("CLUE", "mean L1(VAE reconstruction, x0)", "recon_l1"),
    *[("CLUE", f"{label}: {metric}", f"{prefix}/{key}") for prefix, label in RUNS.items() for metric, key in (
        ("uncertainty after", "mean_uncertainty_after"), ("relative reduction of the mean", "relative_reduction"),
        ("fraction of points whose uncertainty fell", "fraction_reduced"), ("mean L1(CLUE, x0)", "mean_l1"))]]
SPEED_ROWS = [("CLUE", f"s / 100 points, {RUNS[p]}", f"{p}/seconds_per_100_points") for p in ("clue_exact", "clue_orig")
              ] + [("BNN", "training s / epoch, incl. evaluation", "bnn_seconds_per_epoch"),
                   ("BNN", "SG-HMC s / epoch, train loop only", "sghmc_seconds_per_epoch"),
                   ("VAE", "training s / epoch, incl. evaluation", "vae_seconds_per_epoch")]
# Our result files' metric names -> figure keys.
OURS_KEYS = {"test/rmse": "test_rmse", "test/loglik": "test_loglik", "test/loglik_mixture": "test_loglik_mixture",
             "test/accuracy": "test_accuracy", "test/nll": "test_nll", "test/elbo": "test_elbo",
             "test/rec_loglik": "test_rec_loglik", "test/kl": "test_kl", "test/rmse_continuous": "vae_rmse_continuous",
             "test/accuracy_categorical": "vae_accuracy_categorical", "uncertainty_before": "mean_uncertainty_before",
             "uncertainty_after": "clue_exact/mean_uncertainty_after",
             "fraction_reduced": "clue_exact/fraction_reduced",
             "relative_reduction_of_means": "clue_exact/relative_reduction", "l1_distance": "clue_exact/mean_l1",
             "recon_l1": "recon_l1", "seconds_per_100_points": "clue_exact/seconds_per_100_points"}
RULES = {"2 sd": "|diff| <= 2 sd of our seeds (ddof 1); the original is one run, its spread unknown (taken as 0)",
         "original's range": "ours (one seed) within the original's range over its two gradient variants",
         "tolerance": "parity rows: |diff| <= the tolerance verification.parity_checks gives the figure",
         "timing": "speed rows are not judged"}


def resolve(path: str | Path) -> Path:
    """A path relative to the project root (notebooks run with ``--cwd .``, tests from anywhere)."""
    return Path(path) if Path(path).is_absolute() else PROJECT_ROOT / path


def load_kits(parity_dir, datasets) -> dict[str, parity.Kit]:
    """The parity kits of ``datasets`` that ``parity_dir`` holds."""
    folder = resolve(parity_dir)
    return {n: parity.load_kit(folder, n) for n in datasets if (folder / n / "io.npz").exists()}


def run_parity(kits, reference_dir, smoke: bool = False) -> dict[str, parity.Report]:
    """``check_kit`` on each kit; smoke: only the main CLUE run optimised end to end, the lr 0.1 runs teacher-forced."""
    from verification.parity_checks import check_kit

    full, forced = (("clue_exact",), ("clue_exact", "clue_orig")) if smoke else (tuple(RUNS), tuple(RUNS))
    return {n: check_kit(kit, reference_dir=resolve(reference_dir), full_runs=full, teacher_forced=forced)
            for n, kit in kits.items()}


def original(reference_dir, kits, datasets) -> dict[str, dict[str, tuple[float, str]]]:
    """dataset -> figure key -> (the original's value, its source file)."""
    return {n: parity.original_figures(resolve(reference_dir), n, kits.get(n)) for n in datasets}


def ours(results_dir="experiments/results", benchmarks_dir="benchmarks/results") -> dict[str, dict[str, dict]]:
    """dataset -> figure key -> {values (one per seed), source}, from the committed result files only."""
    results, bench, out = resolve(results_dir), resolve(benchmarks_dir), {}

    def put(ds, per_seed: list[dict], source: str, prefix: str = ""):
        for metric, key in {**OURS_KEYS, "seconds_per_epoch": f"{prefix}_seconds_per_epoch",
                            "best_epoch": f"{prefix}_best_epoch"}.items():
            if per_seed and all(metric in s for s in per_seed):
                values = [float(s[metric]) for s in per_seed]
                out.setdefault(ds, {})[key] = {"values": values, "source": f"{source} ({len(values)} seeds)"}

    summary = json.loads((results / "ours_summary.json").read_text())["entries"]
    for name, entry in summary.items():
        kind, ds = name.split("/")
        put(ds, list(entry["per_seed"].values()), f"experiments/results/ours_summary.json {name}", kind)
    for ds, entry in json.loads((results / "wine_credit_models.json").read_text())["datasets"].items():
        for kind in ("bnn", "vae"):
            seeds = [{k[4:]: v for k, v in s.items() if k.startswith(kind)} for s in entry["per_seed"].values()]
            put(ds, seeds, f"experiments/results/wine_credit_models.json {ds} {kind}", kind)
    for ds, entry in json.loads((results / "clue_statistical_parity.json").read_text())["datasets"].items():
        put(ds, entry["ours_per_seed"], f"experiments/results/clue_statistical_parity.json {ds}", "clue")
    speed = json.loads((bench / "clue_speed.json").read_text())
    for ds in ("lsat", "compas"):
        for variant in ("exact", "orig"):
            out[ds][f"clue_{variant}/seconds_per_100_points"] = {
                "values": [speed[ds][variant]["seconds_per_100_points"]],
                "source": f"benchmarks/results/clue_speed.json {ds}/{variant} (median of {speed['repeats']})"}
    sghmc = json.loads((bench / "bnn_predict.json").read_text())["sghmc_lsat"]["seconds_per_epoch_sampling"]
    out["lsat"]["sghmc_seconds_per_epoch"] = {"values": [sghmc], "source": "benchmarks/results/bnn_predict.json"}
    return out


def check_committed_models(weights_dir="weights", datasets=DATASETS[:4], data_dir=None) -> list[dict[str, Any]]:
    """The committed BNN and VAE of each dataset re-evaluated on its test set, beside ``weights/manifest.json``."""
    import data
    from BNN.posterior import Posterior, evaluate
    from VAE.model import load_vae
    from VAE.train import evaluate_vae

    manifest = {m["name"]: m for m in json.loads((resolve(weights_dir) / "manifest.json").read_text())["models"]}
    rows = []
    for ds_name in datasets:
        ds = data.load(ds_name, data_dir=data_dir)
        y_std = float(np.ravel(ds.y_std)[0]) if ds.task == "regression" else 1.0
        for kind in ("bnn", "vae"):
            entry = manifest[f"{kind}_{ds_name}"]
            path = resolve(weights_dir) / entry["path"]
            live = (evaluate(Posterior.load(path), ds.x_test, ds.y_test, y_std=y_std) if kind == "bnn"
                    else evaluate_vae(load_vae(path), ds.x_test))
            rows += [{"model": entry["name"], "seed": entry["seed"], "metric": f"test/{k}",
                      "manifest": entry["metrics"][f"test/{k}"], "recomputed now": v,
                      "abs diff": abs(v - entry["metrics"][f"test/{k}"])}
                     for k, v in live.items() if f"test/{k}" in entry["metrics"]]
    return rows


def comparison_table(orig, mine, reports: dict[str, parity.Report]) -> list[dict[str, Any]]:
    """One record per compared figure: the original's value and source, ours (mean, sd, n), difference, verdict."""
    records = []
    for ds, figures in orig.items():
        def record(artefact, component, metric, key, values, source, ds=ds, figures=figures):
            value, orig_source = figures[key]
            mean = float(np.mean(values))
            records.append({"artefact": artefact, "component": component, "dataset": ds, "metric": metric,
                            "original": value, "original_source": orig_source, "ours": mean,
                            "ours_sd": float(np.std(values, ddof=1)) if len(values) > 1 else None,
                            "ours_n": len(values), "ours_values": values, "ours_source": source,
                            "difference": mean - value})
            return records[-1]

        for component, metric, key in ROWS:
            if key in figures and ds in reports and key in reports[ds].figures:
                value, tol = reports[ds].figures[key]
                rec = record("parity", component, metric, key, [value], "recomputed live (verification.parity_checks)")
                rec.update(threshold=tol, inside="yes" if abs(rec["difference"]) <= tol else "no", rule="tolerance")
            if key in figures and key in mine.get(ds, {}):
                rec = record("own models", component, metric, key, mine[ds][key]["values"], mine[ds][key]["source"])
                alt = figures.get(key.replace("clue_exact/", "clue_orig/"), (rec["original"],))[0]
                if rec["ours_n"] > 1:
                    rec.update(threshold=2 * rec["ours_sd"], rule="2 sd",
                               inside="yes" if abs(rec["difference"]) <= 2 * rec["ours_sd"] else "no")
                elif alt != rec["original"]:
                    lo, hi = sorted((rec["original"], alt))
                    rec.update(range=[lo, hi], rule="original's range",
                               inside="yes" if lo <= rec["ours"] <= hi else "no")
                else:
                    rec.update(inside="n/a", rule="one run each, no spread")
        for component, metric, key in SPEED_ROWS:
            if key in figures and key in mine.get(ds, {}):
                rec = record("speed", component, metric, key, mine[ds][key]["values"], mine[ds][key]["source"])
                rec.update(speedup=rec["original"] / rec["ours"], inside="n/a", rule="timing")
    return records


def display_table(records):
    """The table as a person reads it: formatted strings, one row per figure."""
    import pandas as pd

    fmt = lambda x, d=4: "" if x is None else "0" if x == 0 else f"{x:.{d}g}"  # noqa: E731
    rows = []
    for r in records:
        digits = 7 if r["artefact"] == "parity" else 4
        ours = fmt(r["ours"], digits) + (f" ± {fmt(r['ours_sd'], 2)} ({r['ours_n']} seeds)" if r["ours_n"] > 1 else "")
        original = fmt(r["original"], digits) + (f" (range {fmt(r['range'][0])} to {fmt(r['range'][1])})"
                                                 if "range" in r else "")
        rule = r["rule"] + (f" ({fmt(r['threshold'], 2)})" if "threshold" in r else "") + (
            f", speed-up {r['speedup']:.1f}x" if "speedup" in r else "")
        rows.append({"artefact": r["artefact"], "dataset": r["dataset"], "component": r["component"],
                     "metric": r["metric"], "original": original, "ours": ours, "difference": fmt(r["difference"], 3),
                     "inside": r["inside"], "rule": rule})
    return pd.DataFrame(rows)


def save_table(records, checks: list[dict], out_dir) -> Path:
    """``results/compare_pytorch.json``: the records with their sources, the displayed table, the parity checks."""
    path = resolve(out_dir) / "results" / "compare_pytorch.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_json(path, {"about": "experiments/compare_pytorch.ipynb: every figure of the PyTorch original beside ours",
                     "rules": RULES, "records": records, "table": display_table(records).to_dict("records"),
                     "parity_checks": checks})
    return path


def plot_comparison(records):
    """(a) own models: relative difference, with 2 sd; (b) parity: |diff| / tolerance; (c) speed-up."""
    import matplotlib.pyplot as plt

    panels = [[r for r in records if r["artefact"] == a] for a in ("own models", "parity", "speed")]
    panels = [(p, t) for p, t in zip(panels, ("(a) own models vs the original's run: (ours - original) / |original|, %"
                                             " (symlog; bar: 2 sd or the original's range)", "(b) parity: |ours - "
                                             "original| / tolerance (< 1 passes)", "(c) speed-up: original s / our s"))
              if p]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 0.16 * len(records) + 1.5 * len(panels)), squeeze=False,
                             gridspec_kw={"height_ratios": [len(p) + 3 for p, _ in panels]})
    colour = {"yes": "tab:green", "no": "tab:red", "n/a": "tab:grey"}
    for ax, (rows, title) in zip(axes[:, 0], panels):
        y = np.arange(len(rows))[::-1]
        if rows[0]["artefact"] == "own models":
            scale = np.array([100 / abs(r["original"]) if r["original"] else 1.0 for r in rows])
            x = np.array([r["difference"] for r in rows]) * scale
            err = np.array([r.get("threshold", 0.0) for r in rows]) * scale
            ax.errorbar(x, y, xerr=err, fmt="none", ecolor="0.6", capsize=2)
            ax.set_xscale("symlog", linthresh=0.1)
            ax.axvline(0, color="k", lw=0.8)
        else:
            x = [max(abs(r["difference"]) / r["threshold"], 1e-6) if r["artefact"] == "parity" else r["speedup"]
                 for r in rows]
            ax.set_xscale("log")
            ax.axvline(1, color="k", lw=0.8)
        ax.scatter(x, y, s=14, c=[colour[r["inside"]] for r in rows], zorder=3)
        ax.set_yticks(y, [f"{r['dataset']} · {r['component']} · {r['metric']}" for r in rows], fontsize=6)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
