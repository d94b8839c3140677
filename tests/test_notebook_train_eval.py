"""Smoke runs of experiments/train_models.ipynb and experiments/evaluation_framework.ipynb with papermill
(smoke=True: tiny presets, everything written under tmp_path)."""

from __future__ import annotations

import json
import math

import pytest

from common.io import PROJECT_ROOT

EXPERIMENTS = PROJECT_ROOT / "experiments"
REFERENCE = PROJECT_ROOT.parent / "shared" / "reference" / "pytorch-original.json"


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def test_notebooks_start_with_a_markdown_cell_and_a_parameters_cell():
    for name in ("train_models", "evaluation_framework"):
        cells = json.loads((EXPERIMENTS / f"{name}.ipynb").read_text())["cells"]
        assert cells[0]["cell_type"] == "markdown" and f"papermill experiments/{name}.ipynb" in "".join(
            cells[0]["source"])
        assert cells[1]["cell_type"] == "code" and "parameters" in cells[1]["metadata"].get("tags", [])


def test_train_models_notebook_smoke(tmp_path, data_dir, run_notebook):
    smoke_dir = tmp_path / "smoke"
    run_notebook("train_models.ipynb", dataset="lsat", smoke_dir=str(smoke_dir))
    summary = json.loads((smoke_dir / "results" / "train_models_lsat.json").read_text())
    assert set(summary["models"]) == {"bnn", "vae", "vaeac"}
    for model, info in summary["models"].items():
        assert info["source"].startswith("trained now"), (model, info["source"])  # smoke never loads weights
        assert (smoke_dir / "runs" / f"{model}_lsat_s0" / "metrics.json").exists()
    bnn, vae, vaeac = (summary["models"][m]["metrics"] for m in ("bnn", "vae", "vaeac"))
    assert _finite(bnn["test/rmse"]) and 0.5 < bnn["test/rmse"] < 2.0  # ZFYA units; the original reaches 0.87
    assert bnn["n_samples"] == 3  # tiny preset: 6 epochs, sampling from epoch 2, 3 kept
    assert _finite(vae["test/elbo"]) and _finite(vaeac["test/elbo"]) and vaeac["epochs_run"] == 8
    rows = {(r["model"], r["metric"]): r for r in summary["comparison"]}
    assert rows[("vaeac", "test/elbo")]["original (PyTorch)"] is None  # the reference has no VAEAC run
    if REFERENCE.exists():  # ../shared/reference: the PyTorch original's figures
        assert rows[("bnn", "test/rmse")]["original (PyTorch)"] == pytest.approx(0.8716, abs=1e-4)
        assert rows[("vae", "test/elbo")]["original (PyTorch)"] == pytest.approx(-2.2322, abs=1e-4)
    assert (smoke_dir / "figures" / "train_models_lsat_curves.png").stat().st_size > 10_000


def test_evaluation_framework_notebook_smoke(tmp_path, data_dir, run_notebook):
    smoke_dir = tmp_path / "smoke"
    nb = run_notebook("evaluation_framework.ipynb", datasets=["compas", "wine"], smoke_dir=str(smoke_dir))
    assert not (smoke_dir / "results" / "evaluation_tiny_wine.json").exists()  # smoke runs the first dataset only
    results = json.loads((smoke_dir / "results" / "evaluation_tiny_compas.json").read_text())
    assert results["config"]["n_clue"] == 2 and results["config"]["max_explained"] == 24  # the tiny preset
    assert (smoke_dir / "runs" / "eval_tiny_compas" / "results.json").exists()
    methods = {(r["target"], r["method"]) for r in results["rows"]}
    assert {("aleatoric", m) for m in ("clue", "ufido", "sensitivity")} <= methods
    for row in results["rows"]:
        assert all(_finite(row[k]) for k in ("mean_delta_h", "delta_err", "mean_log_px", "mean_l1")), row
    assert {(r["target"], r["method"]) for r in results["at_equal_distance"]} == methods
    assert (smoke_dir / "figures" / "evaluation_tiny_compas_aleatoric.png").stat().st_size > 10_000
    text = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    assert "compas: CLUE" in text  # the plain per-dataset statement was printed
    study = PROJECT_ROOT / "experiments" / "results" / "study" / "paper" / "summary.json"
    if study.exists():  # section 4 plots the committed study, whichever datasets the parameters name
        studied = {r["dataset"] for r in json.loads(study.read_text())["runs"]}
        assert {p.name.split("_")[2] for p in (smoke_dir / "figures").glob("study_paper_*.png")} == studied
