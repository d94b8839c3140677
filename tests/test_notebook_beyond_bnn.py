"""Smoke run of experiments/beyond_bnn.ipynb with papermill (smoke=True: a 2-member ensemble, 8 points, 10 steps).

Every output goes under ``tmp_path`` (the notebook's ``out_dir``); the BNN and VAE are the committed COMPAS weights.
"""

from __future__ import annotations

import json
import math


def test_beyond_bnn_notebook_smoke(tmp_path, data_dir, run_notebook):
    run_notebook("beyond_bnn.ipynb", out_dir=str(tmp_path / "out"))
    results = json.loads((tmp_path / "out" / "results" / "beyond_bnn.json").read_text())
    assert results["settings"]["smoke"] is True and results["metrics"]["ensemble"]["samples"] == 2
    assert results["metrics"]["BNN"]["samples"] == 54
    for name in ("CLUE with ensemble", "CLUE with BNN"):
        row = results["clue"][name]
        assert row["n_explained"] == 8 and math.isfinite(row["uncertainty_after"])
        assert row["l1_distance"] > 0
    # the points are the ensemble's most uncertain: its CLUEs lower its uncertainty (the BNN may be sure of them)
    ensemble = results["clue"]["CLUE with ensemble"]
    assert ensemble["uncertainty_after"] < ensemble["uncertainty_before"]
    # the same points: each model's uncertainty of x0 is the same in both rows
    assert results["clue"]["CLUE with BNN"]["ensemble_before"] == results["clue"]["CLUE with ensemble"][
        "ensemble_before"]
    assert len(results["test_rows"]) == 8
    for summary in results["diverse"].values():
        assert summary["n_explanations"] == 3 and summary["max_latent_distance"] <= 1.0 + 1e-5
        assert 1 <= summary["n_classes_reached"] <= 2
    assert len(results["shown_sets"]) == 3 * 3
    assert (tmp_path / "out" / "figures" / "beyond_bnn.png").stat().st_size > 5000
