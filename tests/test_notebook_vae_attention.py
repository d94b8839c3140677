"""Smoke run of experiments/vae_attention.ipynb with papermill (smoke=True: tiny training, a dozen images)."""

from __future__ import annotations

import json


def test_notebook_runs_in_smoke_mode(tmp_path, data_dir, run_notebook):
    out = tmp_path / "out"
    run_notebook("vae_attention.ipynb", weights_dir=str(tmp_path / "weights"), out_dir=str(out))
    results = json.loads((out / "results" / "attention_mnist_t10k.json").read_text())
    assert results["seeds"] == [0] and results["n_images"]["inliers"] == 12
    for kind in ("additive", "subtractive"):
        value = results["summary"][f"pixel/{kind}/attention_code/pooled"]["mean"]
        assert 0.0 <= value <= 1.0
    for name in ("outliers", "inliers", "additive"):
        assert (out / "figures" / f"attention_{name}_mnist_t10k.png").stat().st_size > 1000
    assert (tmp_path / "weights" / "seed0" / "best" / "model.json").exists()
