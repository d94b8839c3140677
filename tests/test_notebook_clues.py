"""Smoke runs of experiments/clues_tabular.ipynb and experiments/clues_mnist.ipynb with papermill (smoke=True).

Every output goes under ``tmp_path``: the notebooks' ``out_dir`` (figures, results) and ``weights_dir`` (models
trained when needed). The MNIST notebook trains tiny models in smoke mode, so it needs nothing git-ignored.
"""

from __future__ import annotations

import json
import math

from common.io import PROJECT_ROOT

REFERENCE = PROJECT_ROOT.parent / "shared" / "reference"
# the original's figures: the reference run for LSAT and COMPAS, the parity kits for Wine and Credit
HAVE_ORIGINAL = {"lsat": (REFERENCE / "pytorch-original.json").exists(),
                 "compas": (REFERENCE / "pytorch-original.json").exists(),
                 "wine": (REFERENCE / "parity" / "wine" / "io.npz").exists(),
                 "credit": (REFERENCE / "parity" / "credit" / "io.npz").exists()}
ORIGINAL_N_EXPLAINED = {"lsat": 436, "compas": 62, "wine": 16, "credit": 300}  # 10% of each test split


def _execute(run_notebook, name: str, tmp_path, **parameters) -> None:
    run_notebook(name, weights_dir=str(tmp_path / "weights"), out_dir=str(tmp_path / "out"), **parameters)


def _finite(*values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def test_tabular_notebook_with_committed_weights(tmp_path, data_dir, run_notebook):
    _execute(run_notebook, "clues_tabular.ipynb", tmp_path)
    results = json.loads((tmp_path / "out" / "results" / "clues_tabular.json").read_text())
    assert results["settings"]["smoke"] is True and results["settings"]["lam"] == 2.0
    assert list(results["ours"]) == ["lsat", "compas", "wine", "credit"]
    for name in results["ours"]:
        ours = results["ours"][name]
        assert results["models"][name].startswith("weights/")
        assert ours["n_explained"] == 8
        assert _finite(ours["uncertainty_before"], ours["uncertainty_after"], ours["l1_distance"])
        # the committed models: CLUE lowers the uncertainty of these most uncertain points, at a positive distance
        assert ours["uncertainty_after"] < ours["uncertainty_before"] and ours["l1_distance"] > 0
        assert 0.0 <= ours["fraction_reduced"] <= 1.0
        if HAVE_ORIGINAL[name]:
            assert results["original"][name]["clue_exact_grad"]["n_explained"] == ORIGINAL_N_EXPLAINED[name]
        shown = results["shown_points"][name]
        assert shown and {"feature", "original", "clue", "uncertainty_before", "uncertainty_after"} <= set(shown[0])
    features = {row["feature"] for row in results["shown_points"]["compas"]}
    assert features <= {"age_cat", "race", "sex", "c_charge_degree", "is_recid", "priors_count", "time_served"}
    categorical = [r for r in results["shown_points"]["compas"] if r["feature"] in ("age_cat", "sex", "race")]
    assert all(isinstance(r["original"], str) and r["original"] != r["clue"] for r in categorical)
    assert (tmp_path / "out" / "figures" / "clues_tabular.png").stat().st_size > 5000
    assert not (tmp_path / "weights").exists()  # nothing trained: the committed weights were used


def test_tabular_notebook_trains_when_weights_are_missing(tmp_path, data_dir, run_notebook):
    _execute(run_notebook, "clues_tabular.ipynb", tmp_path, dataset="compas", pretrained=False)
    results = json.loads((tmp_path / "out" / "results" / "clues_tabular.json").read_text())
    assert list(results["ours"]) == ["compas"] and results["models"]["compas"].startswith("trained (tiny)")
    assert _finite(results["ours"]["compas"]["uncertainty_before"], results["ours"]["compas"]["uncertainty_after"])
    assert (tmp_path / "weights" / "bnn_compas" / "posterior").is_dir()
    assert (tmp_path / "weights" / "vae_compas" / "best" / "model.json").exists()


def test_mnist_notebook_trains_tiny_models(tmp_path, data_dir, run_notebook):
    _execute(run_notebook, "clues_mnist.ipynb", tmp_path, dataset="mnist_t10k")
    results = json.loads((tmp_path / "out" / "results" / "clues_mnist_mnist_t10k.json").read_text())
    ours = results["ours"]
    assert results["settings"]["dataset"] == "mnist_t10k" and results["settings"]["smoke"] is True
    assert all(source.startswith("trained: " + str(tmp_path)) for source in results["models"].values())
    assert ours["n_explained"] == 8 and ours["n_bnn_samples"] >= 2
    assert _finite(ours["uncertainty_before"], ours["uncertainty_after"], ours["l1_distance"], ours["recon_l1"])
    assert 0.0 < ours["uncertainty_before"] <= math.log(10) + 1e-4 and ours["l1_distance"] > 0
    before = results["shown"]["uncertainty_before"]
    assert len(before) == 4 and before == sorted(before, reverse=True)  # most uncertain first
    if HAVE_ORIGINAL["lsat"]:  # the reference run holds MNIST too
        assert results["original"]["clue_exact_grad"]["n_explained"] == 200
    png = tmp_path / "out" / "figures" / "clues_mnist_mnist_t10k.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_mnist_models_of_another_split_are_refused_and_the_fallback_presets_exist(tmp_path):
    """A run trained on mnist_t10k is not used for the official split (and vice versa), and the BNN presets trained
    when no run is found are the official split's (mnist_paper) and the stand-in's (mnist)."""
    from types import SimpleNamespace

    import pytest

    from BNN import train as bnn_train
    from common.errors import UserError
    from experiments import clues_mnist as cm

    stand_in = SimpleNamespace(dataset="mnist_t10k")
    with pytest.raises(UserError, match="trained on mnist_t10k, not mnist"):
        cm._same_dataset(stand_in, "mnist", tmp_path)
    assert cm._same_dataset(stand_in, "mnist_t10k", tmp_path) is stand_in
    assert cm.BNN_PRESETS == {"mnist": "mnist_paper", "mnist_t10k": "mnist"}
    assert all(bnn_train.PRESETS[p]["dataset"] == d for d, p in cm.BNN_PRESETS.items())
