"""Comparisons wherever two sweeps overlap, Holm's correction, the committed per-point scores, the authors' switch."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from CLUE import evaluation as ev
from CLUE.evaluation import overlaps
from CLUE.evaluation.metrics import PointScores


def test_holm_rejects_step_down():
    # sorted p: 0.005 <= 0.05/4, 0.01 <= 0.05/3, 0.03 > 0.05/2: stop there (0.04 is not rejected though <= 0.05)
    assert overlaps.holm([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert overlaps.holm([0.04]) == [True] and overlaps.holm([0.06]) == [False]
    assert overlaps.holm([]) == []


def test_bootstrap_p_value_is_two_sided_and_bounded():
    assert overlaps.bootstrap_p_value(np.full(999, 0.3)) == pytest.approx(1 / 1000)
    assert overlaps.bootstrap_p_value(np.full(999, -0.3)) == pytest.approx(1 / 1000)
    symmetric = np.random.default_rng(0).normal(size=4000)
    assert overlaps.bootstrap_p_value(symmetric) > 0.8
    shifted = symmetric + 2.0  # about 2.3% of samples <= 0
    assert 0.02 < overlaps.bootstrap_p_value(shifted) < 0.07


def _sweep(method, target, l1s, slope, offset, n=200, noise=0.02, seed=0):
    """A method's sweep whose per-point delta_h is ``slope * L1 + offset`` plus noise, at sweep L1s ``l1s``."""
    rng = np.random.default_rng(seed)
    points, per_point = [], {}
    for k, l1 in enumerate(l1s):
        lam = float(k + 1)
        dh = slope * l1 + offset + noise * rng.normal(size=n)
        scores = PointScores(delta_h=dh, err0=np.zeros(n), errc=np.zeros(n), log_px=np.full(n, -3.0),
                             l1=np.full(n, float(l1)), bnn_delta=np.zeros(n))
        per_point[(target, method, lam)] = scores
        points.append(ev.SweepPoint(method, target, lam, n, float(dh.mean()), 0.0, -3.0, float(l1), 0.0, 0.0))
    return points, per_point


def _table(*sweeps):
    points, per_point = [], {}
    for p, pp in sweeps:
        points += p
        per_point.update(pp)
    return ev.points_table(points), per_point


def test_an_overlap_between_grid_distances_is_compared_with_a_paired_interval():
    # CLUE covers L1 12.7-14.9 only, U-FIDO 1-14: no grid distance (12, 16) lies in the common range 12.7-14
    table, per_point = _table(_sweep("clue", "aleatoric", [12.7, 13.5, 14.9], 0.01, 0.0),
                              _sweep("ufido", "aleatoric", [1, 4, 8, 11, 14], 0.01, 0.1, seed=1))
    assert not [d for d in ev.DISTANCES if 12.7 <= d <= 14.0]
    row = overlaps.overlap_gap(table, "aleatoric", "clue", "ufido", per_point, "regression", n_boot=400)
    assert (row["l1_lo"], row["l1_hi"]) == (12.7, 14.0)
    assert row["gap"] == pytest.approx(-0.1, abs=0.01)
    assert row["gap_lo"] < row["gap"] < row["gap_hi"] < 0 and row["p_value"] < 0.01
    card = overlaps.scorecard([row])
    assert card[0]["call"] == "baseline better" and card[0]["holm_rejected"]


def test_disjoint_sweeps_give_no_comparison_and_equal_ones_no_clear_winner():
    table, per_point = _table(_sweep("clue", "aleatoric", [13, 15, 20], 0.01, 0.0),
                              _sweep("ufido", "aleatoric", [1, 4, 8], 0.01, 0.1, seed=1))
    assert overlaps.overlap_gap(table, "aleatoric", "clue", "ufido", per_point, "regression") is None
    table, per_point = _table(_sweep("clue", "aleatoric", [1, 5, 9], 0.01, 0.0, noise=0.5),
                              _sweep("sensitivity", "aleatoric", [2, 6, 10], 0.01, 0.0, noise=0.5, seed=3))
    (row,) = overlaps.run_overlaps(table, per_point, "regression", n_boot=400)
    assert row["baseline"] == "sensitivity" and row["gap_lo"] < 0 < row["gap_hi"]
    assert overlaps.scorecard([row])[0]["call"] == "no clear winner"


def test_a_metric_that_never_moves_is_not_measurable_and_leaves_the_family():
    n = 50
    points, per_point = [], {}
    for method, l1s in (("clue", [1, 2, 3]), ("ufido", [1.5, 2.5])):
        for k, l1 in enumerate(l1s):
            per_point[("epistemic", method, float(k))] = PointScores(np.zeros(n), np.zeros(n), np.zeros(n),
                                                                     np.zeros(n), np.full(n, float(l1)), np.zeros(n))
            points.append(ev.SweepPoint(method, "epistemic", float(k), n, 0.0, 0.0, 0.0, float(l1), 0.0, 0.0))
    (row,) = overlaps.run_overlaps(ev.points_table(points), per_point, "classification", n_boot=100)
    assert not row["measurable"] and (row["gap_lo"], row["gap_hi"]) == (0.0, 0.0)
    strong = {**row, "measurable": True, "p_value": 0.001, "gap": 0.2}
    card = overlaps.scorecard([row, strong])
    assert card[0]["call"] == "not measurable" and card[1]["call"] == "clue better"


def test_point_scores_round_trip_in_float32(tmp_path):
    _, per_point = _sweep("clue", "aleatoric", [1.0, 2.0], 0.1, 0.0, n=7)
    ev.save_point_scores(tmp_path / "p.npz", per_point)
    back = ev.load_point_scores(tmp_path / "p.npz")
    assert set(back) == set(per_point)
    for key, scores in per_point.items():
        for field in PointScores.FIELDS:
            np.testing.assert_allclose(getattr(back[key], field), getattr(scores, field), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("dataset", "mnist_norm"), [("wine", False), ("lsat", False), ("compas", True),
                                                     ("credit", True)])
def test_original_config_is_the_authors_gradient_and_their_ufido_normalisation_on_classification(dataset,
                                                                                                  mnist_norm):
    from CLUE.evaluation import pipeline

    config = pipeline.Config(dataset=dataset)
    assert pipeline.make_sweep(config).bnn_gradient == "exact" and not pipeline.make_sweep(config).ufido_mnist_norm
    sweep = pipeline.make_sweep(dataclasses.replace(config, original_config=True))
    assert sweep.bnn_gradient == "torch13" and sweep.ufido_mnist_norm is mnist_norm


def test_the_overlap_table_is_built_from_a_results_rows_frame():
    """``results.json`` rows (dicts) read back into a frame give the same overlaps as the sweep points."""
    table, per_point = _table(_sweep("clue", "aleatoric", [1, 5, 9], 0.02, 0.0),
                              _sweep("ufido", "aleatoric", [2, 6, 10], 0.01, 0.0, seed=3))
    again = pd.DataFrame(table.to_dict("records"))
    assert overlaps.run_overlaps(table, per_point, "regression", n_boot=50) == \
        overlaps.run_overlaps(again, per_point, "regression", n_boot=50)
