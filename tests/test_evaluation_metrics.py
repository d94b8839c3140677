"""CLUE.evaluation.metrics: selection, scores, comparisons at equal L1, verdicts and seed summaries (spec 6.4)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from evaluation_fakes import ground_truth

from CLUE import evaluation as ev
from CLUE.evaluation import metrics as ev_metrics


def test_selection_and_errors_respect_thresholds():
    u = {"aleatoric": np.array([0.1, 0.5, 0.2, 0.5]), "epistemic": np.array([0.0, 0.01, 0.3, 0.02])}
    np.testing.assert_array_equal(ev.select_uncertain(u, "aleatoric", 0.2), [1, 2, 3])
    np.testing.assert_array_equal(ev.select_uncertain(u, "epistemic", 0.02), [2, 3])
    with pytest.raises(ValueError):
        ev.select_uncertain(u, "total", 0.1)
    preds = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert ev.prediction_error(preds, np.array([0, 0, 0]), "classification") == pytest.approx(1 / 3)
    assert ev.prediction_error(np.array([1.0, 3.0]), np.array([0.0, 0.0]), "regression") == pytest.approx(
        math.sqrt(5))


def test_score_of_unchanged_inputs_is_zero():
    gt, vec = ground_truth("classification")
    bnn = SimpleNamespace(predict_samples=lambda x: tf.nn.softmax(tf.stack([x[:, :2], x[:, 1:3]]), axis=-1))
    x0 = np.random.default_rng(2).normal(size=(9, 7)).astype(np.float32)
    budget = ev.EvalBudget(n_gt_samples=16, n_px_samples=16)
    ref = ev.Reference.build(gt, bnn, x0, budget)
    point = ev.score(gt, bnn, ref, x0.copy(), budget, "clue", "aleatoric", 1.0)
    assert point.mean_delta_h == pytest.approx(0.0, abs=1e-6) and point.delta_err == 0.0
    assert point.mean_l1 == 0.0 and point.mean_log_px == pytest.approx(float(ref.log_px.mean()), abs=1e-5)
    moved = ev.score(gt, bnn, ref, x0 + 1.0, budget, "clue", "aleatoric", 1.0)
    assert moved.mean_l1 == pytest.approx(7.0, rel=1e-5) and moved.mean_delta_h != 0.0
    per_point = ev.score_points(gt, bnn, ref, x0 + 1.0, budget, "aleatoric")
    h_c, _ = ev.gt_predictive(gt, x0 + 1.0, budget.n_gt_samples, budget.seed)  # the means are the float32 ones
    assert moved.mean_delta_h == pytest.approx(float(np.mean(ref.gt_uncertainty - h_c)), abs=1e-6)
    assert moved.mean_delta_h == pytest.approx(per_point.delta_h.mean()) and per_point.l1.shape == (9,)


def test_error_of_explanations_is_scored_against_the_ground_truth_at_the_explanations(monkeypatch):
    """Metric 2 calls evaluate_epistemic_explanation_*(BNN, VAEAC, X_c): the GT label is recomputed at X_c."""
    gt, _ = ground_truth("regression")
    x0 = np.zeros((4, 7), np.float32)
    xc = np.ones((4, 7), np.float32)
    # GT mean = first column of x; the BNN predicts it exactly, wherever x is
    monkeypatch.setattr(ev_metrics, "gt_predictive", lambda gt, x, n, seed: (np.ones(len(x)), np.asarray(x)[:, 0]))
    monkeypatch.setattr(ev_metrics, "log_px", lambda gt, x, n, seed: np.zeros(len(x)))
    bnn = SimpleNamespace(predict_samples=lambda x: (x[None, :, 0], tf.ones_like(x[None, :, 0])))
    budget = ev.EvalBudget(n_gt_samples=4, n_px_samples=4)
    ref = ev.Reference.build(gt, bnn, x0, budget)
    point = ev.score(gt, bnn, ref, xc, budget, "clue", "epistemic", 1.0)
    assert ref.error == 0.0 and point.delta_err == 0.0  # against the GT at x0 it would be 0 - 1 = -1


def test_compare_at_distance_interpolates_within_each_sweep():
    table = pd.DataFrame({"target": "aleatoric", "method": ["clue"] * 2 + ["ufido"] * 2,
                          "mean_l1": [0.0, 2.0, 1.0, 3.0], "mean_delta_h": [0.0, 0.4, 0.1, 0.3],
                          "delta_err": [0.0, 0.2, 0.0, 0.0], "mean_log_px": [-5.0, -7.0, -6.0, -6.0]})
    rows = {(r["method"], r["l1"]): r for r in ev.compare_at_distance(table, distances=(0.5, 1.0))}
    assert rows[("clue", 1.0)]["delta_h"] == pytest.approx(0.2) and rows[("clue", 0.5)]["log_px"] == -5.5
    assert rows[("ufido", 1.0)]["delta_h"] == pytest.approx(0.1)
    assert math.isnan(rows[("ufido", 0.5)]["delta_h"])  # below U-FIDO's smallest distance: no extrapolation


def test_equal_distance_interpolates_between_adjacent_sweep_values_only():
    """A sweep whose L1 is not monotone in its parameter: sorting by L1 would pair values that are not neighbours."""
    table = pd.DataFrame({"target": "aleatoric", "method": "clue", "param": [1.0, 2.0, 3.0],
                          "mean_l1": [0.0, 4.0, 2.0], "mean_delta_h": [0.0, 0.4, 1.0], "delta_err": 0.0,
                          "mean_log_px": [-5.0, -9.0, -7.0], "n_points": 3})
    row = ev.compare_at_distance(table, distances=(1.0,))[0]
    assert row["delta_h"] == pytest.approx(0.1) and row["log_px"] == pytest.approx(-6.0)  # sorted by L1: 0.5, -6
    assert (row["lam_lo"], row["lam_hi"]) == (1.0, 2.0)
    assert math.isnan(ev.compare_at_distance(table, distances=(5.0,))[0]["delta_h"])


def _scores(rng, n, dh_mean, l1_mean, task="classification"):
    err0 = rng.integers(0, 2, n).astype(float)
    return ev.PointScores(delta_h=rng.normal(dh_mean, 0.05, n), err0=err0, errc=err0.copy(),
                          log_px=rng.normal(-5.0, 1.0, n), l1=rng.normal(l1_mean, 0.1, n), bnn_delta=np.zeros(n))


def _table_and_scores(gaps, n=400, seed=0):
    """Two sweep values per method, L1 about 1 and 3; method m's dH is ``gaps[m]`` higher than U-FIDO's."""
    rng = np.random.default_rng(seed)
    points, per_point = [], {}
    for method, gap in gaps.items():
        for lam, l1 in ((0.1, 1.0), (1.0, 3.0)):
            s = _scores(rng, n, 0.2 + gap + 0.05 * l1, l1)
            per_point[("aleatoric", method, lam)] = s
            points.append(ev.summarize(s, SimpleNamespace(error=float(s.err0.mean())), "classification", method,
                                       "aleatoric", lam))
    return ev.points_table(points), per_point


def test_verdicts_name_a_best_method_only_where_its_paired_interval_excludes_zero():
    table, per_point = _table_and_scores({"clue": 0.1, "ufido": 0.0, "sensitivity": -0.05})
    rows = {r["l1"]: r for r in ev.verdicts(table, per_point, "classification", distances=(2.0, 5.0))}
    assert rows[2.0]["best"] == "clue" and rows[2.0]["verdict"] == "best" and rows[2.0]["gap_lo"] > 0
    assert 5.0 not in rows  # outside every sweep: no comparison at all
    table, per_point = _table_and_scores({"clue": 0.001, "ufido": 0.0}, n=50)
    row = ev.verdicts(table, per_point, "classification", distances=(2.0,))[0]
    assert row["verdict"] == "tie" and row["gap_lo"] < 0 < row["gap_hi"]
    compared = {(r["method"]): r for r in ev.compare_at_distance(table, distances=(2.0,), per_point=per_point,
                                                                  task="classification")}
    clue = compared["clue"]
    assert clue["delta_h_lo"] < clue["delta_h"] < clue["delta_h_hi"]
    assert clue["delta_h_hi"] - clue["delta_h_lo"] == pytest.approx(2 * 1.96 * 0.05 / math.sqrt(50), rel=0.3)


def test_resampled_error_change_is_the_rms_difference_for_regression():
    rng = np.random.default_rng(4)
    s = ev.PointScores(*(rng.random(30) for _ in range(6)))
    idx = np.arange(30)[None]
    from CLUE.evaluation.report import resampled_means

    got = resampled_means(s, idx, "regression")["delta_err"][0]
    assert got == pytest.approx(math.sqrt(s.err0.mean()) - math.sqrt(s.errc.mean()))


def test_quantile_threshold_selects_the_top_fraction_and_nb_constants_stay_the_default():
    u = {"aleatoric": np.linspace(0.0, 1.0, 1001), "epistemic": np.zeros(1001)}
    assert ev.selection_threshold(u, "aleatoric", "lsat", None) == 0.68
    tau = ev.selection_threshold(u, "aleatoric", "lsat", 0.8)
    assert len(ev.select_uncertain(u, "aleatoric", tau)) == 201
    with pytest.raises(ValueError, match="quantile"):
        ev.selection_threshold(u, "aleatoric", "lsat", 1.5)


def test_seed_summary_averages_the_seeds_and_counts_their_verdicts():
    runs = []
    for seed, gap in ((0, 0.1), (1, 0.1), (2, 0.0005)):
        table, per_point = _table_and_scores({"clue": gap, "ufido": 0.0}, n=60, seed=seed)
        kw = {"per_point": per_point, "task": "classification", "distances": (2.0,)}
        runs.append({"dataset": "compas", "config": {"seed": seed}, "at_equal_distance": ev.compare_at_distance(
            table, **kw), "verdicts": ev.verdicts(table, **kw)})
    summary = ev.summarize_seeds(runs)
    clue = next(r for r in summary if r["kind"] == "method" and r["method"] == "clue")
    assert clue["n_seeds"] == 3 and clue["delta_h"] == pytest.approx(np.mean(clue["delta_h_per_seed"]))
    assert clue["delta_h_min"] <= clue["delta_h"] <= clue["delta_h_max"] and len(clue["delta_h_intervals"]) == 3
    verdict = next(r for r in summary if r["kind"] == "verdict")
    assert verdict["counts"] == {"clue": 2, "tie": 1}
