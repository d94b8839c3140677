"""Smoke run of experiments/own_data.ipynb: a CSV, a Keras classifier with MC dropout, a VAE, CLUE with fixed
features and the prediction-changed flag (smoke=True: 3 epochs each, 4 points, 10 steps)."""

from __future__ import annotations

import json


def test_own_data_notebook_smoke(tmp_path, run_notebook):
    run_notebook("own_data.ipynb", out_dir=str(tmp_path / "out"))
    summary = json.loads((tmp_path / "out" / "results" / "own_data.json").read_text())
    assert summary["dataset"]["name"] == "my_data" and summary["dataset"]["n_test"] == 57
    assert summary["model"]["mc_samples"] == 32 and 0.5 < summary["model"]["test_accuracy"] <= 1.0
    clue = summary["clue"]
    assert clue["n_explained"] == 4 and clue["fixed_columns_unchanged"] is True
    assert 0.0 <= clue["fraction_prediction_changed"] <= 1.0 and clue["l1_distance"] > 0
