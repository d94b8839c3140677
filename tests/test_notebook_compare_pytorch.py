"""experiments/compare_pytorch.ipynb: the original's figures read faithfully, and a smoke run with papermill."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from common.io import PROJECT_ROOT

SHARED_REFERENCE = PROJECT_ROOT.parent / "shared" / "reference"


@pytest.fixture(scope="module")
def cp():
    path = PROJECT_ROOT / "experiments" / "compare_pytorch.py"
    spec = importlib.util.spec_from_file_location("compare_pytorch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def kits(cp, parity_dir):
    return cp.load_kits(parity_dir, cp.DATASETS)


def test_original_figures_are_read_from_the_reference_files(cp, kits, parity_dir):
    """Every original figure is the number of pytorch-original.json / mnist-t10k-original.json where that states it,
    else one computed from the kit's arrays; for LSAT and COMPAS the kit's arrays give the stated figures."""
    if not (SHARED_REFERENCE / "pytorch-original.json").exists():
        pytest.skip("../shared/reference not available")
    tabular = json.loads((SHARED_REFERENCE / "pytorch-original.json").read_text())
    mnist = json.loads((SHARED_REFERENCE / "mnist-t10k-original.json").read_text())
    original = cp.original(SHARED_REFERENCE, kits, cp.DATASETS)
    assert set(original) == set(cp.DATASETS)
    assert original["lsat"]["test_rmse"] == (tabular["lsat"]["bnn"]["test_rmse"], "pytorch-original.json")
    assert original["compas"]["clue_exact/mean_uncertainty_after"][0] == \
        tabular["compas"]["clue_exact_grad"]["mean_uncertainty_after_clue"]
    assert original["compas"]["clue_orig/mean_l1"][0] == tabular["compas"]["clue"]["mean_L1_distance_clue_vs_original"]
    assert original["mnist_t10k"]["test_elbo"][0] == mnist["vae"]["test_elbo_best"]
    for name in ("wine", "credit"):  # the kit's own arrays (SCHEMA-WINE-CREDIT.md section 10)
        io = np.load(parity_dir / name / "io.npz")
        value, source = original[name]["clue_orig_lr0.01/mean_uncertainty_after"]
        assert source == f"parity/{name}/io.npz" and value == float(io["clue_orig_lr0.01/u_after_total_Sm1"].mean())
        assert original[name]["test_elbo"][0] == float(io["vae/elbo_mean_eval"])
    from verification.parity import kit_figures

    for name in ("lsat", "compas"):  # the kit reproduces the original's stated run
        from_kit = kit_figures(kits[name])
        for key, (value, source) in original[name].items():
            if key in from_kit and source == "pytorch-original.json":
                assert from_kit[key] == pytest.approx(value, abs=1e-6), (name, key)


def test_our_figures_trace_to_committed_files(cp):
    ours = cp.ours()
    for ds in ("lsat", "compas", "wine", "credit"):
        for key in ("test_elbo", "clue_exact/mean_uncertainty_after", "clue_exact/mean_l1"):
            assert len(ours[ds][key]["values"]) == 3 and ours[ds][key]["source"].startswith("experiments/results/")
    assert ours["lsat"]["test_elbo"]["values"][0] == pytest.approx(-2.256994, abs=1e-6)  # README: -2.257 (seed 0)
    assert ours["wine"]["test_rmse"]["values"][0] == pytest.approx(0.611574, abs=1e-6)
    assert len(ours["mnist_t10k"]["test_accuracy"]["values"]) == 1


def test_notebook_runs_in_smoke_mode(tmp_path, parity_dir, cp, run_notebook):
    out = tmp_path / "out"
    run_notebook("compare_pytorch.ipynb", out_dir=str(out), parity_dir=str(parity_dir))
    saved = json.loads((out / "results" / "compare_pytorch.json").read_text())
    records, checks = saved["records"], saved["parity_checks"]

    # Exact parity on all four kits: every check passes; the headline ones are there.
    assert {c["dataset"] for c in checks} == {"lsat", "compas", "wine", "credit"}
    assert all(c["passes"] for c in checks), [c for c in checks if not c["passes"]]
    by_check = {(c["dataset"], c["check"]): c for c in checks}
    for name in ("lsat", "compas", "wine", "credit"):
        assert sum(c["dataset"] == name for c in checks) > 150
        assert by_check[(name, "total uncertainty, Sm1, max |diff|")]["value"] <= 2e-5
        assert by_check[(name, "encoder output, max |diff|")]["value"] <= 2e-5
        assert by_check[(name, "clue_exact: rows that end elsewhere, of "
                         f"{len(np.load(parity_dir / name / 'io.npz')['clue/idx'])}")]["passes"]
        assert by_check[(name, "clue_exact: mean uncertainty after CLUE, |diff|")]["value"] <= 1e-3
        assert (name, "clue_orig: mean uncertainty after CLUE, |diff|") not in by_check  # smoke: teacher-forced only
        assert (name, "clue_orig: step 0 dJ/dz, max |diff| from the exact variant's") in by_check

    # The table: parity rows for every kit, own-model rows for every dataset, speed rows; original values as read.
    parity_rows = [r for r in records if r["artefact"] == "parity"]
    assert {r["dataset"] for r in parity_rows} == {"lsat", "compas", "wine", "credit"}
    assert all(r["inside"] == "yes" for r in parity_rows), [r for r in parity_rows if r["inside"] != "yes"]
    own = [r for r in records if r["artefact"] == "own models"]
    assert {r["dataset"] for r in own} == set(cp.DATASETS)
    assert any(r["artefact"] == "speed" for r in records)
    rows = {(r["artefact"], r["dataset"], r["metric"]): r for r in records}
    tabular = json.loads((SHARED_REFERENCE / "pytorch-original.json").read_text())
    rmse = rows[("own models", "lsat", "test RMSE (original units)")]
    assert rmse["original"] == tabular["lsat"]["bnn"]["test_rmse"]
    assert rmse["ours_n"] == 3 and rmse["ours"] == pytest.approx(0.87218, abs=1e-5)
    assert rmse["inside"] == ("yes" if abs(rmse["difference"]) <= 2 * rmse["ours_sd"] else "no")
    elbo = rows[("parity", "credit", "test ELBO, best checkpoint")]
    assert elbo["original"] == float(np.load(parity_dir / "credit" / "io.npz")["vae/elbo_mean_eval"])
    assert abs(elbo["difference"]) <= elbo["threshold"] < 1e-3
    assert all(r["inside"] in ("yes", "no", "n/a") for r in records)
    assert len(saved["table"]) == len(records)
    assert (out / "figures" / "compare_pytorch.png").stat().st_size > 10_000
