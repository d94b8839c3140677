"""experiments/compare_pytorch.ipynb: the original's figures copied faithfully, and a smoke run with papermill."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest

from common.utils import PROJECT_ROOT

SHARED_REFERENCE = PROJECT_ROOT.parent / "shared" / "reference"


@pytest.fixture(scope="module")
def cp():
    path = PROJECT_ROOT / "experiments" / "compare_pytorch.py"
    spec = importlib.util.spec_from_file_location("compare_pytorch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_json_holds_every_number_of_the_original(cp):
    """Every number of pytorch-original.json and mnist-t10k-original.json is in the committed copy, unchanged."""
    if not (SHARED_REFERENCE / "pytorch-original.json").exists():
        pytest.skip("../shared/reference not available")
    ref = cp.load_reference()
    for name, prefix, skip in (("pytorch-original.json", "pytorch-original", ("meta", "patches")),
                               ("mnist-t10k-original.json", "mnist-t10k-original", ())):
        source = json.loads((SHARED_REFERENCE / name).read_text())
        leaves = [(k, v) for k, v in cp._leaves(source) if k.split("/")[0] not in skip]
        assert len(leaves) > 100
        for key, value in leaves:
            assert ref["values"][f"{prefix}/{key}"] == value, key
        assert cp.provenance(ref, f"{prefix}/{leaves[0][0]}")["machine"].startswith("the original's reference")
    tabular = json.loads((SHARED_REFERENCE / "pytorch-original.json").read_text())
    assert ref["provenance"]["meta"] == tabular["meta"] and ref["provenance"]["patches"] == tabular["patches"]
    assert ref["values"]["pytorch-original/lsat/bnn/test_rmse"] == tabular["lsat"]["bnn"]["test_rmse"]
    assert ref["values"]["pytorch-original/compas/clue_exact_grad/mean_uncertainty_after_clue"] == pytest.approx(
        0.226604, abs=1e-6)
    if (SHARED_REFERENCE / "parity" / "lsat" / "io.npz").exists():  # rebuilt from the sources: identical
        rebuilt = json.loads(json.dumps(cp.build_reference(SHARED_REFERENCE)))
        committed = json.loads(cp.REFERENCE_JSON.read_text())
        assert rebuilt == committed
        # SCHEMA.md section 10 figures recomputed from io.npz
        assert ref["values"]["parity/lsat/io/clue_exact/mean_uncertainty_after"] == pytest.approx(0.982277, abs=1e-6)
        assert ref["values"]["parity/compas/io/vae_test_elbo"] == pytest.approx(-3.920668, abs=1e-6)


def test_our_figures_trace_to_committed_files(cp):
    ours = cp.our_figures()  # raises if weights/manifest.json disagrees with ours_summary.json on seed 0
    for fid in ("bnn/lsat/test/rmse", "vae/compas/test/elbo", "clue/lsat/l1_distance"):
        assert ours[fid]["n"] == 3
    assert ours["vae/lsat/test/elbo"]["values"][0] == pytest.approx(-2.256994, abs=1e-6)  # README: -2.257 (seed 0)
    summary = json.loads(cp.OURS_SUMMARY.read_text())["entries"]
    for entry in summary.values():
        for seed, command in entry["commands"].items():
            assert command.startswith("python -m ")
            assert f"--seed {seed}" in command or "--seed" not in command


def test_notebook_runs_in_smoke_mode(tmp_path, parity_dir, cp, run_notebook):
    out = tmp_path / "out"
    run_notebook("compare_pytorch.ipynb", out_dir=str(out), parity_dir=str(parity_dir))
    saved = json.loads((out / "results" / "compare_pytorch.json").read_text())
    records, checks = saved["records"], saved["parity_checks"]

    # Exact parity: every check within the SCHEMA.md section 9 tolerance.
    assert len(checks) >= 40 and all(c["passes"] for c in checks), [c for c in checks if not c["passes"]]
    by_check = {(c["dataset"], c["check"]): c["value"] for c in checks}
    assert by_check[("lsat", "per-sample raw outputs [54, 1000, 2], max |diff|")] <= 1e-5
    assert by_check[("compas", "per-sample logits [54, 618, 2], max |diff|")] <= 1e-4
    for name in ("lsat", "compas"):
        assert by_check[(name, "uncertainty split (total, aleatoric, epistemic), 53 samples (as the original), "
                               "max |diff|")] <= 1e-5
        assert by_check[(name, "encoder output [N, 8], max |diff|")] <= 1e-5
        assert by_check[(name, "decoder output at loc, max |diff|")] <= 1e-5
        assert by_check[(name, "mean test ELBO, |diff|")] <= 1e-5
        assert by_check[(name, "exact gradients, lr 0.1: rows whose early-stop step differs")] == 0
        n_rows = len(np.load(parity_dir / name / "io.npz")["clue/idx"])  # SCHEMA 9: >= 99%, one row out at least
        n_out = round((1 - by_check[(name, "exact gradients, lr 0.1: fraction of rows with max |diff| of final x "
                                           "< 1e-3")]) * n_rows)
        assert n_out <= max(1, n_rows // 100)
        assert by_check[(name, "exact gradients, lr 0.1: mean uncertainty after CLUE, |diff|")] <= 1e-3

    # The table: every own-model, parity (main variant) and speed row, with the original's numbers.
    rows = {(r["artefact"].split(",")[0].split(":")[0], r["dataset"], r["metric"]): r for r in records}
    assert sum(1 for r in records if cp.OWN in r["artefact"]) == len(cp.STAT_ROWS)
    assert sum(1 for r in records if r["artefact"].startswith("speed")) == len(cp.SPEED_ROWS)
    parity_rows = [r for r in records if r["artefact"].startswith("parity")]
    assert len(parity_rows) == 5 + 2 * (6 + 3) and all(r["inside"] == "yes" for r in parity_rows)
    tabular = json.loads(cp.REFERENCE_JSON.read_text())
    values = {k: v for g in tabular["figures"] for k, v in g["values"].items()}
    rmse = rows[("BNN", "lsat", "test RMSE (ZFYA units)")]
    assert rmse["original"] == values["pytorch-original/lsat/bnn/test_rmse"]
    assert rmse["ours_n"] == 3 and rmse["ours"] == pytest.approx(0.87218, abs=1e-5)
    assert rmse["difference"] == pytest.approx(rmse["ours"] - rmse["original"])
    assert rmse["inside"] == ("yes" if abs(rmse["difference"]) <= 2 * rmse["ours_sd"] else "no")
    elbo = rows[("parity", "compas", "VAE mean test ELBO")]
    assert abs(elbo["ours"] - -3.920668) < 1e-5 and elbo["inside"] == "yes"
    assert all(r["inside"] in ("yes", "no", "n/a") for r in records)
    assert not any(isinstance(r["ours"], float) and math.isnan(r["ours"]) for r in records)
    assert len(json.loads((out / "results" / "compare_pytorch.json").read_text())["table"]) == len(records)
    assert (out / "figures" / "compare_pytorch.png").stat().st_size > 10_000
