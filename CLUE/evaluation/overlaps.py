"""CLUE against each baseline wherever their sweeps overlap, summarized per overlap, with Holm's correction.

For a target and a pair of methods, over the common range of mean L1 ``[max(lo_a, lo_b), min(hi_a, hi_b)]``, each
headline metric is interpolated between adjacent sweep values at ``n_grid`` evenly spaced distances d_k, and

    gap = (1 / K) * sum_k [m_CLUE(d_k) - m_base(d_k)],

with a paired bootstrap over the explained points and two-sided p-value
``min(1, 2 * min(P*(gap <= 0), P*(gap >= 0)))`` (at least ``1 / (B + 1)``). Holm's step-down procedure over a
study's comparisons controls the family-wise error at ``alpha``: ``CLUE better`` / ``baseline better`` only where
rejected, else ``no clear winner``; ``not measurable`` where every resampled gap is zero.

Holm, S. "A simple sequentially rejective multiple test procedure." Scand. J. Statistics 6 (1979).
Efron, B., Tibshirani, R. An Introduction to the Bootstrap, chapter 16 (1993).
"""

from __future__ import annotations

import numpy as np

from CLUE.evaluation.report import HEADLINE, LEVEL, N_BOOT, _at_distance, interval, resamples

BASELINES = ("ufido", "sensitivity")
ALPHA = 0.05


def common_range(l1_a: np.ndarray, l1_b: np.ndarray) -> tuple[float, float] | None:
    """The common span of two sweeps' mean L1s, or None where they do not overlap."""
    lo, hi = max(np.min(l1_a), np.min(l1_b)), min(np.max(l1_a), np.max(l1_b))
    return (float(lo), float(hi)) if lo < hi else None


def _sorted_group(table, target: str, method: str):
    group = table[(table["target"] == target) & (table["method"] == method)]
    return group.sort_values("param") if len(group) else None


def overlap_gap(table, target: str, method: str, baseline: str, per_point: dict, task: str, n_grid: int = 25,
                n_boot: int = N_BOOT, seed: int = 0) -> dict | None:
    """The mean headline gap ``method - baseline`` over the common L1 range of their sweeps for one target.

    None where the sweeps do not overlap; else a dict with ``l1_lo``, ``l1_hi``, ``gap`` (sweep means), ``gap_lo`` /
    ``gap_hi`` (``LEVEL`` bootstrap interval), ``p_value`` (None without per-point scores) and ``measurable``."""
    a, b = _sorted_group(table, target, method), _sorted_group(table, target, baseline)
    if a is None or b is None:
        return None
    span = common_range(a["mean_l1"].to_numpy(), b["mean_l1"].to_numpy())
    if span is None:
        return None
    metric = HEADLINE[target]
    n = int(a["n_points"].iloc[0])
    idx = resamples(n, n_boot, seed)
    grid = np.linspace(span[0], span[1], n_grid)
    means, samples = [], []
    for dist in grid:
        ma, sa = _at_distance(a, float(dist), per_point, task, idx)
        mb, sb = _at_distance(b, float(dist), per_point, task, idx)
        means.append(ma[metric] - mb[metric])
        samples.append(None if sa is None or sb is None else sa[metric] - sb[metric])
    row = {"target": target, "method": method, "baseline": baseline, "metric": metric, "l1_lo": span[0],
           "l1_hi": span[1], "n_grid": n_grid, "gap": float(np.mean(means)), "gap_lo": None, "gap_hi": None,
           "p_value": None, "measurable": True}
    if any(s is None for s in samples):
        return row
    gaps = np.mean(samples, axis=0)  # [B]: the mean gap over the grid, per resample
    row["gap_lo"], row["gap_hi"] = interval(gaps, LEVEL)
    row["measurable"] = bool(np.any(gaps != 0))
    row["p_value"] = bootstrap_p_value(gaps)
    return row


def bootstrap_p_value(samples: np.ndarray) -> float:
    """Two-sided bootstrap p-value against zero: ``min(1, 2 min(P(s <= 0), P(s >= 0)))``, at least ``1 / (B + 1)``."""
    b = len(samples)
    tail = min(np.sum(samples <= 0), np.sum(samples >= 0))
    return float(min(1.0, max(2.0 * tail / b, 1.0 / (b + 1))))


def holm(p_values: list[float], alpha: float = ALPHA) -> list[bool]:
    """Holm's step-down rejections of hypotheses with ``p_values`` at family-wise level ``alpha``."""
    order = np.argsort(p_values, kind="stable")
    m = len(p_values)
    rejected = [False] * m
    for rank, i in enumerate(order):
        if p_values[i] > alpha / (m - rank):
            break
        rejected[i] = True
    return rejected


def run_overlaps(table, per_point: dict, task: str, n_boot: int = N_BOOT, seed: int = 0,
                 method: str = "clue", baselines=BASELINES) -> list[dict]:
    """Every overlap of ``method`` with each baseline, per target (:func:`overlap_gap`)."""
    rows = []
    for target in sorted(set(table["target"])):
        for baseline in baselines:
            row = overlap_gap(table, target, method, baseline, per_point, task, n_boot=n_boot, seed=seed)
            if row is not None:
                rows.append(row)
    return rows


def call(row: dict, rejected: bool) -> str:
    """The verdict of one overlap after the family's correction."""
    if not row["measurable"]:
        return "not measurable"
    if row["p_value"] is None or not rejected:
        return "no clear winner"
    return f"{row['method']} better" if row["gap"] > 0 else "baseline better"


def scorecard(comparisons: list[dict], alpha: float = ALPHA) -> list[dict]:
    """Holm-corrected ``call`` and ``holm_rejected`` for a family of overlap comparisons (measurable, with p-values)."""
    family = [i for i, r in enumerate(comparisons) if r["measurable"] and r["p_value"] is not None]
    rejected = holm([comparisons[i]["p_value"] for i in family], alpha)
    decided = dict(zip(family, rejected))
    return [{**r, "holm_rejected": decided.get(i, False), "call": call(r, decided.get(i, False))}
            for i, r in enumerate(comparisons)]
