"""Helpers of ``experiments/evaluation_framework.ipynb``: the paper's computational evaluation framework (section
5.1) on the tabular datasets through ``CLUE.evaluate``, its figures, and the comparison at equal distance.

A finished run (``<runs_dir>/eval_<preset>_<dataset>/results.json`` whose config matches) is loaded rather than
re-run: ``CLUE.evaluate.main`` reuses finished training stages but always re-runs the explanation sweeps.

The comparison metric follows the paper's figures: for the aleatoric target, the reduction of ground-truth
uncertainty ``H_gt(x0) - H_gt(xc)``; for the epistemic target, the reduction of the BNN's error against the
ground-truth label ``err(X0) - err(Xc)`` (the ground truth has no epistemic uncertainty of its own).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from CLUE import evaluate
from CLUE import evaluation as ev
from CLUE.evaluation import pipeline
from CLUE.evaluation.report import SHORT_METRIC
from common.config import with_preset
from common.io import PROJECT_ROOT, load_json
from experiments.outputs import shown

_COSMETIC = ("out", "progress", "data_dir")
METRIC = {"aleatoric": "delta_h", "epistemic": "delta_err"}
METRIC_LABEL = {"aleatoric": "GT uncertainty reduction dH", "epistemic": "GT error reduction d_err"}
BASELINES = ("ufido", "sensitivity")
# mean L1 distances of the comparison (CLUE.evaluation.compare_at_distance's default grid): up to 32, because Credit
# has 29 model-space columns and, at the fast preset, CLUE's sweep there spans mean L1 13 to 42
DISTANCES = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0)


def make_config(dataset: str, preset: str, seed: int, run_dir: str | Path) -> evaluate.Config:
    """``python -m CLUE.evaluate --dataset D --preset P --seed S --out run_dir --progress false``."""
    return with_preset(evaluate.Config, evaluate.PRESETS, preset, dataset=dataset, seed=seed, out=str(run_dir),
                       progress=False)


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in _COSMETIC}


def with_comparison(results: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``results`` with ``at_equal_distance`` (re)computed from its sweep rows (runs started before that
    key existed lack it) and the run folder relative to the project root where it lies inside it."""
    results = copy.deepcopy(results)
    points = sweep_points(results)
    if "verdicts" not in results:  # scored before intervals existed: the comparison without them
        results["at_equal_distance"] = ev.compare_at_distance(ev.points_table(points), DISTANCES) if points else []
    out = Path(results["config"]["out"])
    if out.is_absolute() and out.resolve().is_relative_to(PROJECT_ROOT):
        results["config"]["out"] = str(out.resolve().relative_to(PROJECT_ROOT))
    return results


def run_or_load(config: evaluate.Config, committed: str | Path | None = None) -> tuple[dict[str, Any], str]:
    """``(results, how)``: the finished run's ``results.json`` if its config and metric definitions match; else the
    committed results file ``committed`` if it holds a run with this config (whatever its metric version, which
    ``how`` then names: those runs are not rescored); else ``CLUE.evaluate.main`` (which reuses trained stages)."""
    path = Path(config.out) / "results.json"
    wanted = _comparable(dataclasses.asdict(config))
    if path.exists():
        saved = load_json(path)
        if _comparable(pipeline.saved_settings(saved["config"])) == wanted and pipeline.results_are_current(saved):
            return with_comparison(saved), f"loaded {shown(path)}"
    if committed is not None and Path(committed).exists():
        saved = load_json(committed)
        if _comparable(pipeline.saved_settings(saved["config"])) == wanted:
            version = saved.get("results_version", 1)
            note = "" if pipeline.results_are_current(saved) else f", metric version {version}: no intervals"
            return with_comparison(saved), f"committed {shown(committed)}{note}"
    return with_comparison(evaluate.main(config)), f"ran CLUE.evaluate into {shown(config.out)}"


def sweep_points(results: dict[str, Any]) -> list[ev.SweepPoint]:
    return [ev.SweepPoint.from_row(row) for row in results["rows"]]


def plot(results: dict[str, Any], figures: str | Path, stem: str = "evaluation") -> dict[str, Path]:
    """The paper-style figure of each explained target (``CLUE.evaluation.plot_sweeps``), as
    ``<figures>/<stem>_<dataset>_<target>.png``; returns target -> path."""
    paths = {}
    for target, info in results["references"].items():
        if "n_explained" not in info:
            continue  # no test point was uncertain enough for this target
        path = Path(figures) / f"{stem}_{results['dataset']}_{target}.png"
        ev.plot_sweeps(sweep_points(results), target, info["mean_log_px_x0"], info["n_explained"], path,
                       title=results["dataset"])
        paths[target] = path
    return paths


def equal_distance_table(results: dict[str, Any], target: str) -> pd.DataFrame:
    """Per mean L1 distance: each method's metric (``METRIC[target]``) and log p(x), interpolated between adjacent
    values of its sweep (blank outside it), and the method with the largest metric among those defined there; for
    runs with per-point scores (``verdicts`` in the results), "tie" unless the paired bootstrap interval of the
    lead excludes zero, and that interval."""
    frame = pd.DataFrame(results["at_equal_distance"])
    if frame.empty or target not in set(frame["target"]):
        return pd.DataFrame()
    frame = frame[frame["target"] == target]
    metric = frame.pivot(index="l1", columns="method", values=METRIC[target])
    log_px = frame.pivot(index="l1", columns="method", values="log_px")
    methods = [m for m in ("clue", *BASELINES) if m in metric]
    table = pd.concat({METRIC[target]: metric[methods], "log_px": log_px[methods]}, axis=1)
    table[("best", "")] = [_best(row) for _, row in metric[methods].iterrows()]
    calls = {v["l1"]: v for v in results.get("verdicts", []) if v["target"] == target}
    if calls:  # scored with per-point scores: best only where the paired bootstrap interval excludes zero
        table[("best", "")] = [(calls[d]["best"] if calls[d]["verdict"] == "best" else calls[d]["verdict"])
                               if d in calls else "" for d in table.index]
        table[("lead 95% CI", "")] = [_lead(calls.get(d)) for d in table.index]
    table.index.name = "mean L1"
    return table[metric[methods].notna().any(axis=1)]  # distances no sweep reaches are left out


def _lead(call: dict | None) -> str:
    """The best method's lead over the runner-up with its paired bootstrap interval, as text."""
    if not call or call.get("gap_lo") is None:
        return ""
    return f"{call['gap']:+.3g} [{call['gap_lo']:+.3g}, {call['gap_hi']:+.3g}] vs {call['runner_up']}"


def _best(row: pd.Series) -> str:
    """The method with the strictly largest value ("tie" if shared, "" if fewer than two methods have one)."""
    values = row.dropna()
    if len(values) < 2:
        return ""
    top = values.max()
    return values.idxmax() if (values >= top - 1e-9).sum() == 1 else "tie"


def budget_table(results: dict[str, Any], target: str) -> pd.DataFrame:
    """Per mean L1 budget d: the largest metric each method reaches along its sweep (linearly interpolated, as
    :func:`equal_distance_table`) at any mean L1 <= d (blank below its smallest distance), and the method with the
    largest one. Unlike the equal-distance table, a method whose sweep stops short of d keeps its best value, so a
    method that reaches more with less distance wins: this compares the sweeps' upper envelopes (Pareto fronts)."""
    key = {"aleatoric": "mean_delta_h", "epistemic": "delta_err"}[target]
    rows = [r for r in results["rows"] if r["target"] == target]
    if not rows:
        return pd.DataFrame()
    columns = {}
    for method in ("clue", *BASELINES):
        pts = sorted((r["mean_l1"], r[key]) for r in rows if r["method"] == method)
        if not pts:
            continue
        l1, value = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
        columns[method] = [max(value[l1 <= d].max(), np.interp(d, l1, value) if d <= l1.max() else -np.inf)
                           if d >= l1.min() else np.nan for d in DISTANCES]
    table = pd.DataFrame(columns, index=pd.Index(DISTANCES, name="mean L1 <="))
    methods = list(columns)
    table["best"] = [_best(row) for _, row in table[methods].iterrows()]
    return table[table[methods].notna().any(axis=1)]


def _clue_wins(metric: pd.DataFrame, best: pd.Series, clue_range: tuple[float, float]) -> tuple[list, list]:
    """Distances (within CLUE's sweep range) where CLUE and a baseline both have a value, and those CLUE wins."""
    compared = [d for d, row in metric.iterrows() if clue_range[0] <= d <= clue_range[1]
                and not math.isnan(row.get("clue", np.nan)) and row.drop("clue").notna().any()]
    return compared, [d for d in compared if best[d] == "clue"]


def _answer(compared: list, wins: list) -> str:
    if not compared:
        return "not comparable"
    if len(wins) == len(compared):
        return "yes"
    return f"partly ({len(wins)} of {len(compared)})" if wins else "no"


def _overall(answers: set[str]) -> str:
    if answers == {"yes"} or answers == {"not comparable"}:
        return answers.pop()
    return "no" if answers <= {"no", "not comparable"} else "partly"


def verdict(results: dict[str, Any]) -> pd.DataFrame:
    """One row per target, two readings of "CLUE reduces the ground-truth metric most at equal distance":

    * ``at equal L1``: each method's sweep interpolated at common mean L1 distances (:func:`equal_distance_table`);
      a distance counts when CLUE and at least one baseline reach it;
    * ``within L1 budget``: the best value each method reaches with mean L1 <= d (:func:`budget_table`), at the
      distances within CLUE's sweep range.

    ``CLUE beats both baselines`` is ``yes`` when CLUE is best at every counted distance of both readings."""
    rows = []
    for target in ev.TARGETS:
        row = {"dataset": results["dataset"], "target": target,
               "n_explained": results["references"][target].get("n_explained", 0)}
        table, budget = equal_distance_table(results, target), budget_table(results, target)
        clue_l1 = [r["mean_l1"] for r in results["rows"] if r["target"] == target and r["method"] == "clue"]
        if table.empty or not clue_l1:
            rows.append({**row, "CLUE beats both baselines": "no data"})
            continue
        clue_range = (min(clue_l1), max(clue_l1))
        compared, wins = _clue_wins(table[METRIC[target]], table[("best", "")], clue_range)
        b_compared, b_wins = _clue_wins(budget.drop(columns="best"), budget["best"], clue_range)
        answers = {_answer(compared, wins), _answer(b_compared, b_wins)}
        row.update({
            "CLUE L1 range": f"{clue_range[0]:.2g}-{clue_range[1]:.2g}",
            "at equal L1: best per distance": ", ".join(f"{d:g}: {table.loc[d, ('best', '')]}" for d in compared),
            "at equal L1": _answer(compared, wins),
            "within L1 budget: best per distance": ", ".join(f"{d:g}: {budget.loc[d, 'best']}" for d in b_compared),
            "within L1 budget": _answer(b_compared, b_wins),
            "CLUE beats both baselines": _overall(answers)})
        rows.append(row)
    return pd.DataFrame(rows)


def statement(results: dict[str, Any]) -> str:
    """One plain sentence per dataset: does CLUE reduce the ground-truth metric most at equal L1 distance?"""
    table = verdict(results)
    answers = [a for a in table["CLUE beats both baselines"] if a in ("yes", "no", "partly")]
    overall = ("CLUE cannot be compared with U-FIDO and sensitivity (no common L1 range)" if not answers else
               "CLUE beats U-FIDO and sensitivity" if set(answers) == {"yes"} else
               "CLUE does not beat U-FIDO and sensitivity" if set(answers) == {"no"} else
               "CLUE beats U-FIDO and sensitivity only in part")
    parts = [f"{row['target']}: {row['CLUE beats both baselines']} (at equal L1: {row.get('at equal L1', '-')}; "
             f"within L1 budget: {row.get('within L1 budget', '-')})" for _, row in table.iterrows()]
    return f"{results['dataset']}: {overall} at equal distance; " + "; ".join(parts)


def model_table(results: dict[str, Any]) -> pd.DataFrame:
    """Test metrics of the framework's four models (ground truth, BNN, CLUE's VAE, U-FIDO's VAEAC) on its data."""
    keep = ("test/elbo", "test/under_elbo", "test/accuracy", "test/nll", "test/rmse", "test/loglik",
            "test/accuracy_categorical", "test/rmse_continuous", "best_epoch", "epochs_run", "n_samples",
            "seconds_per_epoch")
    return pd.DataFrame({name: {k: v for k, v in metrics.items() if k in keep}
                         for name, metrics in results["models"].items()}).T


def references_table(results: dict[str, Any]) -> pd.DataFrame:
    """The explained sets: thresholds, how many test points were selected and explained, and their GT values."""
    return pd.DataFrame(results["references"]).T



# --- the study: several seeds per dataset (experiments/evaluation_study.py) ----------------------------------------

STUDY = PROJECT_ROOT / "experiments" / "results" / "study"
ROW_METRIC = {"aleatoric": "mean_delta_h", "epistemic": "delta_err"}  # the same metrics, as named in results rows


def load_study(preset: str = "paper", switch: str = "default", folder: str | Path | None = None) -> list[dict]:
    """The committed runs of the study (``experiments/results/study/<preset>/<dataset>_s<seed>[_<switch>].json``)
    made under ``switch``."""
    folder = Path(folder) if folder is not None else STUDY / preset
    runs = [load_json(p) for p in sorted(folder.glob("*.json")) if p.name != "summary.json"]
    return [r for r in runs if r.get("study_switch", "default") == switch]


def seed_bands(runs: list[dict], dataset: str, target: str) -> pd.DataFrame:
    """Per method and sweep value: the mean over seeds of the mean L1, log p(x) and metric (``ROW_METRIC``), and the
    metric's lowest and highest seed. Every seed sweeps the same values, so a sweep value is a natural unit to average;
    the L1 a value reaches differs a little between seeds (its spread is ``l1_min``..``l1_max``)."""
    rows = [{**row, "seed": run["config"]["seed"]} for run in runs if run["dataset"] == dataset
            for row in run["rows"] if row["target"] == target]
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    metric = ROW_METRIC[target]
    grouped = frame.groupby(["method", "param"])
    table = pd.DataFrame({"n_seeds": grouped["seed"].nunique(), "mean_l1": grouped["mean_l1"].mean(),
                          "l1_min": grouped["mean_l1"].min(), "l1_max": grouped["mean_l1"].max(),
                          "mean_log_px": grouped["mean_log_px"].mean(), metric: grouped[metric].mean(),
                          f"{metric}_min": grouped[metric].min(), f"{metric}_max": grouped[metric].max()})
    return table.reset_index().sort_values(["method", "mean_l1"], ignore_index=True)


def plot_study(runs: list[dict], dataset: str, target: str, path: str | Path) -> Path | None:
    """The paper's figure over seeds: per method the mean over seeds of the metric against mean L1 (left) and
    against mean log p_gt(x) (right), with the band from the lowest to the highest seed; log p(X0) dashed. The
    log p(x) axis stops 15 nats below log p(X0) and the metric axis 1.5x its best value below zero; what falls off
    them (sensitivity's large steps) is named on the figure. Returns the path, or None when no run explains
    ``target`` on ``dataset``."""
    from matplotlib.figure import Figure

    table = seed_bands(runs, dataset, target)
    if table.empty:
        return None
    metric = ROW_METRIC[target]
    log_px_x0 = np.mean([r["references"][target]["mean_log_px_x0"] for r in runs
                         if r["dataset"] == dataset and "mean_log_px_x0" in r["references"].get(target, {})])
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2)
    for method in ev.METHODS:
        rows = table[table["method"] == method]
        if rows.empty:
            continue
        for ax, x in zip(axes, ("mean_l1", "mean_log_px")):
            line, = ax.plot(rows[x], rows[metric], "o-", ms=3, label=method)
            ax.fill_between(rows[x], rows[f"{metric}_min"], rows[f"{metric}_max"], color=line.get_color(),
                            alpha=0.2, lw=0)
    top = max(float(table[f"{metric}_max"].max()), 1e-3)  # keep the informative range, as plot_sweeps does
    bottom = max(float(table[f"{metric}_min"].min()), -1.5 * top) - 0.1 * top
    for ax in axes:
        ax.set_ylim(bottom, 1.1 * top)
        ax.set_ylabel(METRIC_LABEL[target])
        ax.grid(alpha=0.3)
    axes[0].set_xscale("symlog", linthresh=1e-2)
    axes[0].set_xlim(left=0.0)
    axes[0].set_xlabel("mean L1 distance to x0")
    axes[1].axvline(log_px_x0, color="k", ls="--", lw=1, label="log p(X0)")
    left = max(float(table["mean_log_px"].min()), log_px_x0 - 15.0) - 0.5
    axes[1].set_xlim(left, max(float(table["mean_log_px"].max()), log_px_x0) + 0.5)
    axes[1].set_xlabel("mean log p_gt(x)")
    note = ev.off_axis_note({m: rows[["mean_log_px", metric]].to_numpy() for m, rows in table.groupby("method")},
                            left, bottom, y_label=SHORT_METRIC[target])
    if note:  # sensitivity's large steps leave both axes; say how far rather than squash the curves
        axes[1].set_title(note, fontsize=7, loc="left")
    axes[1].legend(fontsize=8)
    n_seeds = int(table["n_seeds"].max())
    fig.suptitle(f"{dataset} {target}: mean over {n_seeds} seed{'s' * (n_seeds > 1)}, band = lowest..highest seed")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


def study_verdicts(summary: dict, switch: str = "default") -> pd.DataFrame:
    """Per dataset, target and mean L1: how many seeds call each method best (paired bootstrap interval of its lead
    excluding zero) or a tie, from ``summary.json`` (:func:`CLUE.evaluation.summarize_seeds`)."""
    rows = [r for r in summary["switches"].get(switch, []) if r["kind"] == "verdict"]
    return pd.DataFrame([{"dataset": r["dataset"], "target": r["target"], "mean L1": r["l1"],
                          "seeds": r["n_seeds"], **r["counts"]} for r in rows]).fillna(0)


def study_table(summary: dict, switch: str = "default") -> pd.DataFrame:
    """Per dataset, target, mean L1 and method: the metric at equal L1 averaged over seeds, its lowest and highest
    seed, and how many seeds reach that distance within the method's sweep."""
    rows = []
    for r in summary["switches"].get(switch, []):
        if r["kind"] != "method":
            continue
        key = "delta_h" if r["target"] == "aleatoric" else "delta_err"
        rows.append({"dataset": r["dataset"], "target": r["target"], "mean L1": r["l1"], "method": r["method"],
                     "seeds": r["n_seeds"], key: r[key], "lowest seed": r[f"{key}_min"],
                     "highest seed": r[f"{key}_max"], "log_px": r.get("log_px")})
    return pd.DataFrame(rows)


def study_runs_table(summary: dict) -> pd.DataFrame:
    """One row per committed run: its switch, the points selected and explained per target, and the wall minutes
    of each stage on this project's 2-core CPU (shared with other work while it ran), and their total in hours (a
    stage stopped by a kill and resumed counts only the resumed part)."""
    rows = []
    for run in summary["runs"]:
        row = {"run": run["name"], "switch": run["switch"]}
        for target, info in run["references"].items():
            row[f"{target} selected"] = f"{info['n_selected']} / {info['n_test']}"
            row[f"{target} explained"] = info.get("n_explained", 0)
        row.update({f"{stage} min": round(s / 60, 1) for stage, s in run["seconds"].items()})
        row["total h"] = round(sum(run["seconds"].values()) / 3600, 2)
        rows.append(row)
    return pd.DataFrame(rows).set_index("run")


def study_overview(summary: dict, dataset: str, switch: str = "default") -> pd.DataFrame:
    """Per target and mean L1 on ``dataset``: each method's metric averaged over seeds (blank where its sweep does not
    reach) and the seeds' calls (``clue 2, tie 1``): the table the README quotes."""
    means = study_table(summary, switch)
    if means.empty:
        return pd.DataFrame()
    means = means[means["dataset"] == dataset]
    calls = study_verdicts(summary, switch)
    rows = []
    for (target, l1), group in means.groupby(["target", "mean L1"]):
        key = METRIC[target]
        row = {"target": target, "mean L1": l1, **{m: group.loc[group["method"] == m, key].mean()
                                                   for m in ("clue", *BASELINES)}}
        call = calls[(calls["dataset"] == dataset) & (calls["target"] == target) & (calls["mean L1"] == l1)]
        counts = {c: int(call.iloc[0][c]) for c in call.columns if c not in ("dataset", "target", "mean L1", "seeds")
                  and len(call) and call.iloc[0][c] > 0}
        row["seeds' calls"] = ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
        rows.append(row)
    return pd.DataFrame(rows).set_index(["target", "mean L1"]).round(3)


def study_scorecard(runs: list[dict]) -> pd.DataFrame:
    """The paper's claim counted over the study: per dataset, switch and target, the seeds run and, over every
    (seed, distance) pair of their verdicts (``results["verdicts"]``, the grid of :data:`DISTANCES` inside each
    method's sweep), how often each method is called best or the call is a tie.

    ``CLUE meets a baseline`` counts the pairs where CLUE and at least one baseline reach the distance; the next
    four columns split them by call, and ``CLUE best where U-FIDO reaches`` narrows them to the pairs U-FIDO's sweep
    also reaches (the CLUE-against-U-FIDO comparison, where sensitivity may be beyond its range). ``baselines only``
    counts the pairs CLUE's sweep does not reach but two baselines do (below its VAE's reconstruction distance, or
    beyond its last step), with ``of them U-FIDO / sensitivity / tie`` their calls. Pairs where a single method
    reaches the distance (``alone``) are not counted."""
    rows: dict[tuple, dict] = {}
    for run in runs:
        for call in run["verdicts"]:
            key = (run["dataset"], run.get("study_switch", "default"), call["target"])
            row = rows.setdefault(key, {"seeds": set(), "CLUE meets a baseline": 0, "CLUE best": 0,
                                        "U-FIDO best": 0, "sensitivity best": 0, "tie": 0,
                                        "CLUE best where U-FIDO reaches": [0, 0], "baselines only": 0,
                                        "of them U-FIDO / sensitivity / tie": [0, 0, 0]})
            row["seeds"].add(run["config"]["seed"])
            if len(call["values"]) < 2:
                continue
            best = call["best"] if call["verdict"] == "best" else "tie"
            if "clue" in call["values"]:
                row["CLUE meets a baseline"] += 1
                row[{"clue": "CLUE best", "ufido": "U-FIDO best", "sensitivity": "sensitivity best",
                     "tie": "tie"}[best]] += 1
                if "ufido" in call["values"]:
                    row["CLUE best where U-FIDO reaches"][0] += best == "clue"
                    row["CLUE best where U-FIDO reaches"][1] += 1
            else:
                row["baselines only"] += 1
                row["of them U-FIDO / sensitivity / tie"][("ufido", "sensitivity", "tie").index(best)] += 1
    table = pd.DataFrame([{"dataset": d, "switch": s, "target": t, **row, "seeds": len(row["seeds"]),
                           "CLUE best where U-FIDO reaches":
                               "{} of {}".format(*row["CLUE best where U-FIDO reaches"]),
                           "of them U-FIDO / sensitivity / tie": " / ".join(
                               map(str, row["of them U-FIDO / sensitivity / tie"]))}
                          for (d, s, t), row in rows.items()])
    if table.empty:
        return table
    order = {name: i for i, name in enumerate(("lsat", "compas", "credit", "wine"))}
    table = table.sort_values(["dataset", "switch", "target"], key=lambda c: c.map(order) if c.name == "dataset"
                              else c.map(lambda s: (s != "default", s)) if c.name == "switch" else c)
    return table.set_index(["dataset", "switch", "target"])


def overlap_scorecard(runs: list[dict], alpha: float = ev.overlaps.ALPHA) -> pd.DataFrame:
    """CLUE against each baseline over every overlap of their sweeps (``results["overlaps"]``, runs scored with
    per-point scores), one row per (switch, dataset, seed, target, baseline): the common L1 range, CLUE's mean gap
    with its 95% interval, the bootstrap p-value and the call after Holm's correction over every comparison of the
    same switch (:func:`CLUE.evaluation.overlaps.scorecard`). Runs scored before overlaps existed are left out."""
    rows = []
    for switch in sorted({r.get("study_switch", "default") for r in runs}):
        family = [{**o, "dataset": r["dataset"], "seed": r["config"]["seed"], "switch": switch}
                  for r in runs if r.get("study_switch", "default") == switch for o in r.get("overlaps", [])]
        rows += ev.scorecard(family, alpha)
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame([{"switch": r["switch"], "dataset": r["dataset"], "seed": r["seed"],
                           "target": r["target"], "baseline": r["baseline"],
                           "common L1": f"{r['l1_lo']:.2f}-{r['l1_hi']:.2f}", "CLUE gap": r["gap"],
                           "interval": ("" if r["gap_lo"] is None else f"[{r['gap_lo']:.3f}, {r['gap_hi']:.3f}]"),
                           "p": r["p_value"], "call (Holm)": r["call"]} for r in rows])
    return table.set_index(["switch", "dataset", "seed", "target", "baseline"]).round(4)


def _dataset_label(dataset: str) -> str:
    return dataset.upper() if dataset in ("lsat", "compas") else dataset.title()


def _seeds(dataset: str, seeds: list[int]) -> str:
    """``Wine s0-2`` for contiguous seeds, ``Wine s0, 2`` otherwise."""
    seeds = sorted(seeds)
    name = _dataset_label(dataset)
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{name} s{seeds[0]}-{seeds[-1]}"
    return f"{name} s" + ", ".join(map(str, seeds))


def claim_numbers(runs: list[dict]) -> dict[str, Any]:
    """The figures the README's statement of the paper's claim quotes, from the committed runs of the study.

    * ``grid``, default settings: over every (seed, distance) pair of the grid where CLUE and a baseline both reach
      (:func:`study_scorecard`), how often CLUE, U-FIDO, sensitivity is called best, and ties; and CLUE's calls
      where U-FIDO's sweep reaches too.
    * ``overlaps``, per switch: the Holm-corrected calls of CLUE against each baseline over their sweeps' common L1
      ranges (:func:`overlap_scorecard`), for the runs scored with overlaps, and which (dataset, seed) they cover.
    * ``in_distribution``, default settings: the (run, target, distance) values where CLUE's mean log p_gt(x) is
      below the original points' mean (CLUE's explanations leave the data), out of all of CLUE's values.
    """
    default = [r for r in runs if r.get("study_switch", "default") == "default"]
    card = study_scorecard(default)
    grid = {"runs": len(default), "datasets": len({r["dataset"] for r in default}),
            "pairs": int(card["CLUE meets a baseline"].sum()), "clue": int(card["CLUE best"].sum()),
            "ufido": int(card["U-FIDO best"].sum()), "sensitivity": int(card["sensitivity best"].sum()),
            "tie": int(card["tie"].sum())}
    reach = [tuple(map(int, v.split(" of "))) for v in card["CLUE best where U-FIDO reaches"]]
    grid["clue_where_ufido"], grid["ufido_pairs"] = sum(a for a, _ in reach), sum(b for _, b in reach)
    overlaps = {}
    for switch in sorted({r.get("study_switch", "default") for r in runs}):
        scored = [r for r in runs if r.get("study_switch", "default") == switch and "overlaps" in r]
        if not scored:
            continue
        calls = ev.scorecard([o for r in scored for o in r["overlaps"]])
        counts = {c: sum(o["call"] == c for o in calls) for c in ("clue better", "baseline better", "no clear winner",
                                                                   "not measurable")}
        counts["comparisons"] = len(calls)
        by_dataset: dict[str, list[int]] = {}
        for r in scored:
            by_dataset.setdefault(r["dataset"], []).append(int(r["config"]["seed"]))
        overlaps[switch] = {**counts, "runs": [_seeds(d, v) for d, v in sorted(by_dataset.items())]}
    below, total, where = 0, 0, []
    for r in default:
        for row in r["at_equal_distance"]:
            if row["method"] != "clue" or math.isnan(row["log_px"]):
                continue
            total += 1
            if row["log_px"] < r["references"][row["target"]]["mean_log_px_x0"]:
                below += 1
                where.append(f"{r['dataset']} s{r['config']['seed']} {row['target']} L1 {row['l1']:g}")
    return {"grid": grid, "overlaps": overlaps, "in_distribution": {"below": below, "values": total, "where": where}}


OVERLAP_CALLS = {"clue better": "CLUE better", "baseline better": "baseline better",
                 "no clear winner": "no clear winner", "not measurable": "not measurable"}
SWITCH_LABELS = {"default": "default settings", "original_config": "authors' configuration"}


def overlap_calls_markdown(runs: list[dict]) -> str:
    """The Holm-corrected call of every seed's overlap of CLUE with each baseline, per switch (the runs scored with
    overlaps; Holm over each switch's comparisons, as :func:`claim_numbers`), as a Markdown table with one row per
    (dataset, target, baseline); a scored seed whose two sweeps do not overlap reads "no overlap"."""
    calls: dict[tuple, dict[int, str]] = {}
    scored: dict[tuple, set[int]] = {}
    for switch in SWITCH_LABELS:
        runs_of = [r for r in runs if r.get("study_switch", "default") == switch and "overlaps" in r]
        for r in runs_of:
            scored.setdefault((switch, r["dataset"]), set()).add(int(r["config"]["seed"]))
        family = [{**o, "dataset": r["dataset"], "seed": int(r["config"]["seed"])} for r in runs_of
                  for o in r["overlaps"]]
        for o in ev.scorecard(family):
            calls.setdefault((switch, o["dataset"], o["target"], o["baseline"]), {})[o["seed"]] = o["call"]
    lines = ["| dataset | target | CLUE against | " + " | ".join(SWITCH_LABELS.values()) + " |",
             "|---|---|---|" + "---|" * len(SWITCH_LABELS)]
    for dataset in sorted({d for _, d in scored}):
        for target in ev.TARGETS:
            for baseline in BASELINES:
                cells = []
                for switch in SWITCH_LABELS:
                    seeds = sorted(scored.get((switch, dataset), ()))
                    got = calls.get((switch, dataset, target, baseline), {})
                    cells.append("; ".join(f"s{s}: {OVERLAP_CALLS[got[s]] if s in got else 'no overlap'}"
                                           for s in seeds) or "not run")
                label = "U-FIDO" if baseline == "ufido" else baseline
                lines.append(f"| {_dataset_label(dataset)} | {target} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def grid_calls_markdown(runs: list[dict]) -> str:
    """:func:`study_scorecard` of the default runs as a Markdown table, one row per (dataset, target)."""
    card = study_scorecard([r for r in runs if r.get("study_switch", "default") == "default"]).reset_index()
    lines = ["| dataset | target | seeds | pairs | CLUE best | U-FIDO best | sensitivity best | no clear winner | "
             "CLUE best where U-FIDO reaches |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for _, row in card.iterrows():
        lines.append(f"| {_dataset_label(row['dataset'])} | {row['target']} | {row['seeds']} | "
                     f"{row['CLUE meets a baseline']} | {row['CLUE best']} | {row['U-FIDO best']} | "
                     f"{row['sensitivity best']} | {row['tie']} | {row['CLUE best where U-FIDO reaches']} |")
    return "\n".join(lines)


def _calls(counts: dict) -> str:
    return (f"CLUE better in {counts['clue better']}, a baseline in {counts['baseline better']}, no clear winner in "
            f"{counts['no clear winner']}" + (f", not measurable in {counts['not measurable']}"
                                               if counts["not measurable"] else "") + f" of {counts['comparisons']}")


def claim_paragraph(numbers: dict[str, Any], width: int = 118) -> str:
    """The README's statement of the paper's claim and its verdict, from :func:`claim_numbers` (at most 8 lines)."""
    import textwrap

    g, ind = numbers["grid"], numbers["in_distribution"]
    parts = [
        "**Claim** (section 5.1): at equal L1, CLUE lowers ground-truth uncertainty (aleatoric target) and BNN "
        "error (epistemic) more than U-FIDO and localized sensitivity, in distribution.",
        f"**Not reproduced, default settings**: over {g['runs']} runs ({g['datasets']} datasets x 3 seeds) on a grid "
        f"of distances, CLUE is best at {g['clue']} of {g['pairs']} (seed, distance) pairs where it meets a baseline "
        f"(a baseline: {g['ufido'] + g['sensitivity']}, no clear winner: {g['tie']}; uncorrected), at "
        f"{g['clue_where_ufido']} of {g['ufido_pairs']} where U-FIDO reaches too."]
    for switch, label in (("default", "Holm-corrected over every sweep overlap ("),
                          ("original_config", "**Authors' configuration** (torch-1.3 gradient, U-FIDO's MNIST "
                                              "normalization; ")):
        if switch in numbers["overlaps"]:
            o = numbers["overlaps"][switch]
            parts.append(f"{label}{', '.join(o['runs'])}): {_calls(o)}.")
    parts.append(f"**Holds**: CLUE in distribution at {ind['values'] - ind['below']} of {ind['values']} values"
                 + (f" (not {'; '.join(ind['where'])})" if ind["where"] else "") + ".")
    parts.append("Details: "
                 "[experiments/README.md](experiments/README.md#computational-evaluation-framework).")
    return textwrap.fill(" ".join(parts), width, break_on_hyphens=False, break_long_words=False)


def plot_claim(runs: list[dict], path: str | Path) -> Path:
    """The README's figure: per dataset and target (default settings), the calls at every (seed, distance) pair of
    the grid where CLUE meets a baseline (:func:`study_scorecard`)."""
    import matplotlib.pyplot as plt

    card = study_scorecard([r for r in runs if r.get("study_switch", "default") == "default"]).reset_index()
    labels = [f"{d.upper() if d in ('lsat', 'compas') else d.title()}\n{t}" for d, t in zip(card["dataset"],
                                                                                           card["target"])]
    fig, ax = plt.subplots(figsize=(9, 2.8))
    bottom = np.zeros(len(card))
    for column, color in (("CLUE best", "tab:green"), ("U-FIDO best", "tab:orange"),
                          ("sensitivity best", "tab:blue"), ("tie", "0.75")):
        ax.bar(labels, card[column], bottom=bottom, color=color, label=column.replace(" best", ""))
        bottom += card[column].to_numpy()
    ax.set_ylabel("(seed, distance) pairs")
    ax.set_ylim(0, bottom.max() * 1.4)
    ax.set_title("Best at equal L1 where CLUE meets a baseline (default settings, 3 seeds, grid of distances)",
                 fontsize=9)
    ax.legend(fontsize=8, ncol=4, loc="upper right")
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
