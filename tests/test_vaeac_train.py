"""VAEAC training script: improves the ELBO on tiny data, trains the under-VAEAC, resumes, runs as a script."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from common.config import with_preset
from common.io import PROJECT_ROOT
from common.seeding import set_seed
from VAEAC import train
from VAEAC.export import load_model
from VAEAC.model import VAEAC


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vaeac") / "run"
    config = with_preset(train.Config, train.PRESETS, "tiny", dataset="digits", out=str(out), progress=False)
    return config, out, train.main(config)


def test_tiny_training_improves_the_elbo_and_trains_the_under_model(tiny_run):
    config, out, metrics = tiny_run
    import data
    _, _, x_test, model_cfg = train.prepare_data(data.load("digits"), config)
    assert len(model_cfg["input_dim_vec"]) == 64 + 10  # joint (pixels, one-hot label)
    set_seed(config.seed)
    untrained = VAEAC(**model_cfg)
    mask = train.masker(config, model_cfg["input_dim_vec"])
    import tensorflow as tf
    m = mask(tf.constant(x_test), tf.random.Generator.from_seed(config.seed + 12345)).numpy()
    before = train.evaluate_vaeac(untrained, x_test, m)["elbo"]
    assert metrics["test/elbo"] > before + 5.0, (before, metrics["test/elbo"])
    assert metrics["test/elbo"] == pytest.approx(metrics["best/test/elbo"])  # fixed masks: same number
    assert np.isfinite(metrics["test/under_elbo"]) and metrics["under/epochs_run"] == 3
    with open(out / "under" / "metrics.csv", newline="") as f:
        under_rows = list(csv.DictReader(f))
    assert float(under_rows[-1]["train/elbo"]) > float(under_rows[0]["train/elbo"])
    under = load_model(out / "under_best")
    assert under.sample(5, tf.constant([0, 1])).shape == (5, 74)


def test_resume_continues(tiny_run, tmp_path):
    config, out, metrics = tiny_run
    again = train.main(config)  # same --out: everything done, the same metrics come back
    assert again["test/elbo"] == pytest.approx(metrics["test/elbo"])
    longer = train.main(with_preset(train.Config, train.PRESETS, "tiny", dataset="digits", out=str(out),
                                    progress=False, max_epochs=10))
    with open(out / "metrics.csv", newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == list(range(10))
    assert longer["epochs_run"] == 10 and np.isfinite(longer["test/elbo"])
    assert longer["best/test/elbo"] >= metrics["best/test/elbo"]


def test_script_entry_point(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [sys.executable, str(PROJECT_ROOT / "VAEAC" / "train.py"), "--dataset", "digits", "--preset", "tiny",
           "--max-epochs", "1", "--under-epochs", "0", "--max-train-rows", "64", "--progress", "false",
           "--out", str(tmp_path / "s")]
    subprocess.run(cmd, check=True, env=env, cwd=tmp_path, capture_output=True, timeout=120)
    assert np.isfinite(json.loads((tmp_path / "s" / "metrics.json").read_text())["test/elbo"])


def test_an_interrupted_run_resumes_bit_for_bit_in_one_thread(tmp_path):
    """What ``--stages rebuild`` relies on: a single-threaded VAEAC run stopped in its VAEAC and again in its
    under-VAEAC, then resumed, writes the same model files, byte for byte, as one run straight through."""
    from CLUE.stages import SINGLE_THREAD_ENV
    from common.io import sha256_of

    env = {**os.environ, **SINGLE_THREAD_ENV, "TF_CPP_MIN_LOG_LEVEL": "3"}

    def run(out, epochs, under_epochs):
        cmd = [sys.executable, "-m", "VAEAC.train", "--dataset", "digits", "--preset", "tiny", "--seed", "3",
               "--max-train-rows", "256", "--max-epochs", str(epochs), "--under-epochs", str(under_epochs),
               "--progress", "false", "--out", str(out)]
        subprocess.run(cmd, check=True, env=env, cwd=PROJECT_ROOT, capture_output=True, timeout=300)

    run(tmp_path / "cut", 3, 0)  # stopped after 3 of 6 VAEAC epochs
    run(tmp_path / "cut", 6, 1)  # resumed; stopped after 1 of 3 under-VAEAC epochs
    run(tmp_path / "cut", 6, 3)  # resumed to the end
    run(tmp_path / "straight", 6, 3)
    for model in ("best", "under_best"):
        cut, straight = (sha256_of(tmp_path / r / model / "model.weights.h5") for r in ("cut", "straight"))
        assert cut == straight, model
    with open(tmp_path / "cut" / "under" / "metrics.csv", newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [0, 1, 2]  # the under-VAEAC really resumed
