"""Smoke tests of the PyTorch ports in ``experiments/diagnostics/`` (the original's LSAT BNN and VAE training,
written in PyTorch from the spec). They need torch, which the project does not install by default
(``pip install -e .[torch]``): without it these tests skip."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from common.io import PROJECT_ROOT

torch = pytest.importorskip("torch")

DIAGNOSTICS = PROJECT_ROOT / "experiments" / "diagnostics"
SHARED_REFERENCE = PROJECT_ROOT.parent / "shared" / "reference"


def _run(script: str, *args: str, cwd) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(DIAGNOSTICS / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _lsat_like(n: int, rng) -> np.ndarray:
    """n rows in LSAT's model-input layout: 2 continuous columns, a one-hot of 8 and a one-hot of 2."""
    return np.concatenate([rng.normal(size=(n, 2)), np.eye(8)[rng.integers(0, 8, n)], np.eye(2)[rng.integers(0, 2, n)]],
                          axis=1).astype(np.float32)


def test_bnn_port_trains_a_few_epochs(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "lsat.npz", x_train=_lsat_like(600, rng), y_train=rng.normal(size=(600, 1)).astype(np.float32),
             x_test=_lsat_like(100, rng), y_test=rng.normal(size=(100, 1)).astype(np.float32), y_mean=np.array([0.1]),
             y_std=np.array([0.9]))
    _run("bnn_lsat_torch_port.py", "--epochs", "3", "--data", str(tmp_path / "lsat.npz"), "--out", "out.json",
         cwd=tmp_path)
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["epochs_done"] == 3 and out["n_samples_saved"] == 0  # burn-in is 120 epochs: no sample yet
    assert np.isfinite(out["s_per_epoch"])


def test_bnn_port_evaluates_the_originals_samples_as_the_original(tmp_path, data_dir, parity_dir):
    """--ref_check: the port's evaluation of the original's 54 saved samples gives the original's test RMSE."""
    import data

    ds = data.load("lsat", data_dir=data_dir)
    np.savez(tmp_path / "lsat.npz", x_train=ds.x_train[:10], y_train=ds.y_train[:10], x_test=ds.x_test,
             y_test=ds.y_test, y_mean=np.ravel(ds.y_mean), y_std=np.ravel(ds.y_std))
    _run("bnn_lsat_torch_port.py", "--data", str(tmp_path / "lsat.npz"), "--ref_check",
         str(parity_dir / "lsat" / "bnn_samples.npz"), "--out", "ref.json", cwd=tmp_path)
    out = json.loads((tmp_path / "ref.json").read_text())
    stated = json.loads((SHARED_REFERENCE / "pytorch-original.json").read_text())["lsat"]["bnn"]
    assert out["used_53"]["n_samples"] == 53 and out["all_54"]["n_samples"] == 54
    assert out["used_53"]["rmse"] == pytest.approx(stated["test_rmse"], abs=1e-5)
    assert out["used_53"]["ll_gmm_sig"] == pytest.approx(stated["test_ll_gauss_marginal_std"], abs=1e-4)


def test_vae_port_trains_one_epoch(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / ".tmp_vaediag").mkdir()
    np.savez(tmp_path / ".tmp_vaediag" / "lsat.npz", x_train=_lsat_like(300, rng), x_test=_lsat_like(50, rng))
    _run("vae_lsat_torch_port.py", "--epochs", "2", "--out", "out.json", cwd=tmp_path)
    out = json.loads((tmp_path / "out.json").read_text())
    assert [r["epoch"] for r in out["log"]] == [0, 1]
    assert all(np.isfinite(r["test_elbo"]) and r["test_kl"] >= 0 for r in out["log"])
    assert out["best"]["test_elbo"] == max(r["test_elbo"] for r in out["log"])
