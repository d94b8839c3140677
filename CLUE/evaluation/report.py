"""Tables, comparisons at equal distance with bootstrap intervals, verdicts and the paper's figure (spec 6.4).

A method's value at a mean L1 distance is interpolated linearly between the two adjacent sweep values whose mean
L1s enclose it (no extrapolation). Intervals resample the explained points with replacement, with the same
resamples for every method of a target, so differences get paired intervals.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from CLUE.evaluation.metrics import PointScores, SweepPoint, error_from_terms
from CLUE.evaluation.sweeps import METHODS

DISTANCES = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0)
# result name -> SweepPoint field
METRICS = {"delta_h": "mean_delta_h", "delta_err": "delta_err", "log_px": "mean_log_px"}
HEADLINE = {"aleatoric": "delta_h", "epistemic": "delta_err"}  # what each target's verdict compares
N_BOOT = 1000
LEVEL = 0.95


def points_table(points: list[SweepPoint]):
    """The sweep points as a pandas DataFrame (one row each)."""
    import pandas as pd

    return pd.DataFrame([dataclasses.asdict(p) for p in points])


def resamples(n: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """``[n_boot, n]`` indices of bootstrap resamples of ``n`` points."""
    return np.random.default_rng([seed, 20210]).integers(0, n, size=(n_boot, n))


def resampled_means(scores: PointScores, idx: np.ndarray, task: str) -> dict[str, np.ndarray]:
    """The sweep point's means under each resample ``idx [B, n]``: ``delta_h``, ``delta_err``, ``log_px``, ``l1``."""
    return {"delta_h": scores.delta_h[idx].mean(axis=1),
            "delta_err": error_from_terms(scores.err0[idx], task, axis=1) - error_from_terms(scores.errc[idx], task,
                                                                                                 axis=1),
            "log_px": scores.log_px[idx].mean(axis=1), "l1": scores.l1[idx].mean(axis=1)}


def interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap ``samples``."""
    tail = 50.0 * (1.0 - level)
    lo, hi = np.percentile(samples, [tail, 100.0 - tail])
    return float(lo), float(hi)


def point_intervals(points: list[SweepPoint], per_point: dict, task: str, n_boot: int = N_BOOT,
                    seed: int = 0) -> list[dict]:
    """Each sweep point as a dict, with ``<field>_lo`` / ``<field>_hi`` bootstrap bounds where per-point scores are."""
    rows = []
    for p in points:
        row = dataclasses.asdict(p)
        scores = per_point.get((p.target, p.method, float(p.param)))
        if scores is not None:
            means = resampled_means(scores, resamples(len(scores.l1), n_boot, seed), task)
            for name, field in {**METRICS, "l1": "mean_l1"}.items():
                row[f"{field}_lo"], row[f"{field}_hi"] = interval(means[name])
        rows.append(row)
    return rows


def _bracket(l1: np.ndarray, dist: float) -> tuple[int, float] | None:
    """``(i, w)``: the first adjacent pair ``i, i + 1`` whose L1s enclose ``dist``, the weight of ``i + 1``; or None."""
    for i in range(len(l1) - 1):
        a, b = l1[i], l1[i + 1]
        if min(a, b) <= dist <= max(a, b):
            return i, 0.0 if a == b else float((dist - a) / (b - a))
    if len(l1) == 1 and l1[0] == dist:
        return 0, 0.0
    return None


def _at_distance(group, dist: float, per_point: dict | None, task: str | None, idx: np.ndarray | None):
    """One method's interpolated means at ``dist`` and, with per-point scores, their resampled values."""
    hit = _bracket(group["mean_l1"].to_numpy(), dist)
    if hit is None:
        return None, None
    i, w = hit
    j = min(i + 1, len(group) - 1)
    rows = group.iloc[[i, j]]
    means = {name: float((1 - w) * rows[col].iloc[0] + w * rows[col].iloc[1]) for name, col in METRICS.items()}
    lams = rows["param"].to_numpy() if "param" in rows else np.full(2, np.nan)
    means["lam_lo"], means["lam_hi"] = float(lams[0]), float(lams[1])
    if per_point is None or idx is None:
        return means, None
    keys = [(r.target, r.method, float(r.param)) for r in rows.itertuples()]
    if any(k not in per_point for k in keys):
        return means, None
    a, b = (resampled_means(per_point[k], idx, task) for k in keys)
    span = b["l1"] - a["l1"]
    wb = np.clip(np.divide(dist - a["l1"], span, out=np.zeros_like(span), where=span != 0), 0.0, 1.0)
    return means, {name: (1 - wb) * a[name] + wb * b[name] for name in METRICS}


def _equal_distance(table, distances, per_point, task, n_boot, seed):
    """``{(target, method, dist): (means, samples)}`` for every method with a value there."""
    out = {}
    for target, by_target in table.groupby("target"):
        n = int(by_target["n_points"].iloc[0]) if "n_points" in by_target else 0
        idx = resamples(n, n_boot, seed) if per_point is not None and n > 0 else None
        for method, group in by_target.groupby("method"):
            group = group.sort_values("param") if "param" in group else group.sort_values("mean_l1")
            for dist in distances:
                means, samples = _at_distance(group, dist, per_point, task, idx)
                if means is not None:
                    out[(target, method, dist)] = (means, samples)
    return out


def compare_at_distance(table, distances=DISTANCES, per_point: dict | None = None, task: str | None = None,
                        n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> list[dict]:
    """Each method's GT metrics at common mean L1 ``distances`` (NaN outside its sweep's range): one dict per (target,
    method, distance) with ``delta_h``, ``delta_err``, ``log_px``, ``lam_lo`` / ``lam_hi`` (the sweep values around),
    and, given ``per_point`` scores and ``task``, ``<name>_lo`` / ``<name>_hi`` bootstrap bounds."""
    found = _equal_distance(table, distances, per_point, task, n_boot, seed)
    rows = []
    for target, by_target in table.groupby("target"):
        for method in sorted(set(by_target["method"])):
            for dist in distances:
                means, samples = found.get((target, method, dist), (None, None))
                row = {"target": target, "method": method, "l1": dist}
                row.update(means or {name: float("nan") for name in METRICS})
                for name in (METRICS if samples is not None else ()):
                    row[f"{name}_lo"], row[f"{name}_hi"] = interval(samples[name], level)
                rows.append(row)
    return rows


def verdicts(table, per_point: dict, task: str, distances=DISTANCES, n_boot: int = N_BOOT, seed: int = 0,
             level: float = LEVEL) -> list[dict]:
    """Per target and distance, the method with the largest headline metric (``delta_h``, ``delta_err``): ``best``
    if the paired bootstrap interval of (best - runner-up) excludes zero, ``tie`` if not (or without per-point
    scores), ``alone`` if only one method reaches the distance."""
    found = _equal_distance(table, distances, per_point, task, n_boot, seed)
    out = []
    for target in sorted(set(table["target"])):
        metric = HEADLINE[target]
        for dist in distances:
            here = {m: found[(target, m, dist)] for m in METHODS if (target, m, dist) in found}
            if not here:
                continue
            ranked = sorted(here, key=lambda m: -here[m][0][metric])
            row = {"target": target, "l1": dist, "metric": metric, "best": ranked[0],
                   "values": {m: here[m][0][metric] for m in ranked},
                   "log_px": {m: here[m][0]["log_px"] for m in ranked}}
            if len(ranked) == 1:
                row.update(verdict="alone", runner_up=None)
            else:
                first, second = here[ranked[0]][1], here[ranked[1]][1]
                row["runner_up"] = ranked[1]
                if first is None or second is None:
                    row.update(verdict="tie", gap=None, gap_lo=None, gap_hi=None)
                else:
                    gap = first[metric] - second[metric]
                    lo, hi = interval(gap, level)
                    row.update(gap=here[ranked[0]][0][metric] - here[ranked[1]][0][metric], gap_lo=lo, gap_hi=hi,
                               verdict="best" if lo > 0 else "tie")
            out.append(row)
    return out


SHORT_METRIC = {"aleatoric": "dH", "epistemic": "d_err"}  # the metric as figures name it in a line of text


def off_axis_note(curves, left: float, bottom: float, x_label: str = "log p(x)", y_label: str = "metric") -> str:
    """Per method, how many of ``curves``' (x, y) points fall left of ``left`` or below ``bottom``, and how far."""
    parts = []
    for method, xy in curves.items():
        xy = np.asarray(list(xy), dtype=float).reshape(-1, 2)
        for cut, axis, label in ((xy[:, 0] < left, 0, x_label), (xy[:, 1] < bottom, 1, y_label)):
            if cut.any():
                parts.append(f"{method}: {int(cut.sum())} off axis, {label} down to {xy[cut, axis].min():.4g}")
    return "\n".join(parts)


def plot_sweeps(points: list[SweepPoint], target: str, log_px_x0: float, n_points: int, path,
                title: str = "", max_log_px_drop: float = 15.0) -> None:
    """The paper's figure for one target: the metric (dH or d_err) against mean L1 and against mean log p(x).

    One curve per method; mean log p(X0) as a vertical line. The log p(x) axis is cut ``max_log_px_drop`` nats below
    log p(X0), the metric axis 1.5x its best value below zero; the figure notes what is cut (:func:`off_axis_note`)."""
    from matplotlib.figure import Figure

    key, label = (("mean_delta_h", "GT uncertainty reduction  H(x0) - H(xc)") if target == "aleatoric" else
                  ("delta_err", "GT error reduction  err(X0) - err(Xc)"))
    fig = Figure(figsize=(10, 3.8))  # no pyplot: the caller's backend is left alone
    axes = fig.subplots(1, 2)
    for method in METHODS:
        rows = sorted((p for p in points if p.method == method and p.target == target), key=lambda p: p.mean_l1)
        if not rows:
            continue
        y = [getattr(p, key) for p in rows]
        axes[0].plot([p.mean_l1 for p in rows], y, "o-", ms=3, label=method)
        axes[1].plot([p.mean_log_px for p in rows], y, "o-", ms=3, label=method)
    ys = [getattr(p, key) for p in points if p.target == target]
    bottom = -np.inf
    if ys and min(ys) < 0:  # very large sensitivity steps can wreck the GT metric; keep the informative range
        top = max(max(ys), 1e-3)
        bottom = max(min(ys), -1.5 * top) - 0.1 * top
        for ax in axes:
            ax.set_ylim(bottom, 1.1 * top)
    axes[0].set_xscale("symlog", linthresh=1e-2)
    axes[0].set_xlim(left=0.0)
    axes[0].set_xlabel("mean L1 distance to x0")
    axes[1].axvline(log_px_x0, color="k", ls="--", lw=1, label="log p(X0)")
    lows = [p.mean_log_px for p in points if p.target == target]
    left = max(min(lows + [log_px_x0]), log_px_x0 - max_log_px_drop)
    right = max(lows + [log_px_x0])
    axes[1].set_xlim(left - 0.5, right + 0.05 * (right - left) + 0.5)
    axes[1].set_xlabel("mean log p_gt(x)")
    curves = {m: [(p.mean_log_px, getattr(p, key)) for p in points if p.method == m and p.target == target]
              for m in METHODS}
    note = off_axis_note(curves, left - 0.5, bottom, y_label=SHORT_METRIC[target])
    if note:
        axes[1].set_title(note, fontsize=7, loc="left")
    for ax in axes:
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"{title} {target} (n = {n_points})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def summarize_seeds(runs: list[dict]) -> list[dict]:
    """The study over seeds, from ``results.json`` dicts of ``CLUE.evaluate`` (one per dataset and seed): per method and
    distance the mean, min, max and per-seed metrics; per distance how many seeds name each method best or tie."""
    values: dict[tuple, list[dict]] = {}
    calls: dict[tuple, list[dict]] = {}
    for run in runs:
        seed = run["config"]["seed"]
        for row in run.get("at_equal_distance", []):
            if not np.isnan(row["delta_h"]):
                values.setdefault((run["dataset"], row["target"], row["method"], row["l1"]), []).append(
                    {**row, "seed": seed})
        for row in run.get("verdicts", []):
            calls.setdefault((run["dataset"], row["target"], row["l1"]), []).append({**row, "seed": seed})
    methods = []
    for (dataset, target, method, l1), rows in sorted(values.items()):
        out = {"dataset": dataset, "target": target, "method": method, "l1": l1, "n_seeds": len(rows),
               "seeds": [r["seed"] for r in rows]}
        for name in METRICS:
            per_seed = np.array([r[name] for r in rows])
            out[name] = float(per_seed.mean())
            out[f"{name}_min"], out[f"{name}_max"] = float(per_seed.min()), float(per_seed.max())
            out[f"{name}_per_seed"] = per_seed.tolist()
            if all(f"{name}_lo" in r for r in rows):
                out[f"{name}_intervals"] = [[r[f"{name}_lo"], r[f"{name}_hi"]] for r in rows]
        methods.append(out)
    verdict_rows = []
    for (dataset, target, l1), rows in sorted(calls.items()):
        counts: dict[str, int] = {}
        for r in rows:
            key = r["best"] if r["verdict"] == "best" else r["verdict"]
            counts[key] = counts.get(key, 0) + 1
        verdict_rows.append({"dataset": dataset, "target": target, "l1": l1, "n_seeds": len(rows),
                             "counts": counts, "per_seed": [{k: r.get(k) for k in ("seed", "verdict", "best",
                                                                                     "runner_up", "gap", "gap_lo",
                                                                                     "gap_hi")} for r in rows]})
    return [{"kind": "method", **m} for m in methods] + [{"kind": "verdict", **v} for v in verdict_rows]
