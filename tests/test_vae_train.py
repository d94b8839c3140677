"""VAE training script: improves the ELBO on tiny data, writes its files, resumes exactly, runs as a script."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import data
from common.config import parse_config, with_preset
from common.io import PROJECT_ROOT
from common.seeding import set_seed
from VAE import train
from VAE.model import build_vae, load_vae


def _rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae") / "run"
    config = with_preset(train.Config, train.PRESETS, "tiny", dataset="digits", out=str(out), progress=False)
    return config, out, train.main(config)


def test_tiny_training_improves_the_test_elbo(tiny_run):
    config, out, metrics = tiny_run
    resolved = config.resolved()
    import data
    ds = data.load("digits")
    set_seed(resolved.seed)
    untrained = build_vae(train.model_config(resolved, ds))  # the run's initial weights
    before = train.evaluate_vae(untrained, ds.x_test)["elbo"]
    assert np.isfinite(metrics["test/elbo"])
    assert metrics["test/elbo"] > before + 1.0, (before, metrics["test/elbo"])
    assert metrics["test/elbo"] == pytest.approx(metrics["test/rec_loglik"] - metrics["test/kl"])
    assert metrics["epochs_run"] == 6 and 0 <= metrics["best_epoch"] < 6


def test_run_files_are_self_describing(tiny_run):
    config, out, metrics = tiny_run
    assert json.loads((out / "config.json").read_text())["latent_dim"] == data.spec("digits").latent_dim
    assert json.loads((out / "metrics.json").read_text())["test/elbo"] == pytest.approx(metrics["test/elbo"])
    rows = _rows(out)
    assert [int(r["epoch"]) for r in rows] == list(range(6))
    best_row = max(rows, key=lambda r: float(r["test/elbo"]))
    assert int(best_row["epoch"]) == metrics["best_epoch"]
    model = load_vae(out / "best")  # weights + model.json rebuild the model
    x = data.load("digits").x_test
    assert float(np.mean(model.elbo(x).numpy())) == pytest.approx(metrics["test/elbo"], rel=1e-5)


def test_resume_continues_and_matches_an_uninterrupted_run(tmp_path):
    def run(out, epochs):
        cfg = with_preset(train.Config, train.PRESETS, "tiny", dataset="digits", out=str(out), progress=False,
                          max_epochs=epochs, max_train_rows=256)
        return train.main(cfg)

    first = run(tmp_path / "a", 2)
    assert first["epochs_run"] == 2
    resumed = run(tmp_path / "a", 4)  # same --out: continues from epoch 2
    straight = run(tmp_path / "b", 4)
    assert resumed["epochs_run"] == 4 and np.isfinite(resumed["test/elbo"])
    assert resumed["test/elbo"] == pytest.approx(straight["test/elbo"], rel=1e-4)
    assert resumed["best/test/elbo"] >= first["best/test/elbo"]  # best-so-far survives the restart
    a, b = _rows(tmp_path / "a"), _rows(tmp_path / "b")
    assert [int(r["epoch"]) for r in a] == [0, 1, 2, 3]
    for key in ("train/elbo", "test/elbo"):
        np.testing.assert_allclose([float(r[key]) for r in a], [float(r[key]) for r in b], rtol=1e-4, err_msg=key)
    again = run(tmp_path / "a", 4)  # nothing left to do: returns the same best metrics
    assert again["test/elbo"] == pytest.approx(resumed["test/elbo"])


def test_script_entry_point(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, str(PROJECT_ROOT / "VAE" / "train.py"), "--dataset", "digits", "--preset", "tiny",
           "--max-epochs", "1", "--max-train-rows", "64", "--progress", "false", "--out", str(tmp_path / "s")]
    subprocess.run(cmd, check=True, env=env, cwd=tmp_path, capture_output=True, timeout=120)
    assert np.isfinite(json.loads((tmp_path / "s" / "metrics.json").read_text())["test/elbo"])
    with pytest.raises(SystemExit):
        parse_config(train.Config, train.PRESETS, ["--no-such-flag", "1"])
    with pytest.raises(ValueError):
        train.Config(dataset="nope").resolved()
