"""Smoke run of experiments/vae_attention.ipynb with papermill (smoke=True: tiny training, a dozen images)."""

from __future__ import annotations

import json

import pytest

from common.utils import PROJECT_ROOT

NOTEBOOK = PROJECT_ROOT / "experiments" / "vae_attention.ipynb"


def _python3_kernel_available() -> bool:
    try:
        from jupyter_client.kernelspec import find_kernel_specs
    except ImportError:
        return False
    return "python3" in find_kernel_specs()


def test_notebook_runs_in_smoke_mode(tmp_path, data_dir):
    papermill = pytest.importorskip("papermill")
    if not _python3_kernel_available():
        pytest.skip("no 'python3' Jupyter kernel: run `python -m ipykernel install --sys-prefix --name python3`")
    out = tmp_path / "out"
    papermill.execute_notebook(
        str(NOTEBOOK), str(tmp_path / "vae_attention.ipynb"), kernel_name="python3", progress_bar=False,
        cwd=str(PROJECT_ROOT),
        parameters={"smoke": True, "weights_dir": str(tmp_path / "weights"), "out_dir": str(out)})
    results = json.loads((out / "results" / "attention_mnist_t10k.json").read_text())
    assert results["seeds"] == [0] and results["n_images"]["inliers"] == 12
    for kind in ("additive", "subtractive"):
        value = results["summary"][f"pixel/{kind}/attention_code/pooled"]["mean"]
        assert 0.0 <= value <= 1.0
    for name in ("outliers", "inliers", "additive"):
        assert (out / "figures" / f"attention_{name}_mnist_t10k.png").stat().st_size > 1000
    assert (tmp_path / "weights" / "seed0" / "best" / "model_config.json").exists()
