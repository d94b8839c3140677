"""Parallel SG-HMC chains and sharded CLUE on tf.distribute (BNN/chains.py, CLUE/explainer.py), and the R-hat and
ESS diagnostics (BNN/diagnostics.py). The two-device runs happen in a subprocess (tests/two_devices.py) with two
logical CPU devices."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import data
from BNN import chains, diagnostics, train
from BNN.sghmc import ScaleAdaptedSGHMC, SGHMCParams
from common.config import with_preset
from common.io import PROJECT_ROOT


def _two_devices(*args):
    result = subprocess.run([sys.executable, "tests/two_devices.py", *map(str, args)], capture_output=True, text=True,
                            timeout=600, cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]


def _samples(run_dir):
    with np.load(run_dir / "posterior" / "samples.npz") as f:
        return {k: f[k] for k in f.files}


def test_mirrored_chains_equal_sequential_chains(tmp_path):
    _two_devices("chains", tmp_path)
    pooled = _samples(tmp_path / "mirrored")
    metrics = json.loads((tmp_path / "mirrored" / "metrics.json").read_text())
    assert metrics["n_chains"] == 2 and metrics["n_replicas"] == 2 and metrics["n_samples"] == 6
    for k in range(2):  # chain k of the mirrored run (on device k) is the chain run alone with --chain-offset k
        alone = _samples(tmp_path / f"chain_{k}")
        for name, value in alone.items():
            np.testing.assert_array_equal(pooled[name][3 * k:3 * (k + 1)], value, err_msg=f"chain {k} {name}")
    assert not np.allclose(pooled["dense_0/kernel"][:3], pooled["dense_0/kernel"][3:])  # two different chains


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    return ports


def test_multiworker_chains_pool_on_the_chief_and_equal_sequential_chains(tmp_path):
    """Two local workers (MultiWorkerMirroredStrategy over 127.0.0.1), one chain each: the chief pools both."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
               "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "BNN.train", "--preset", "tiny", "--chains", "2", "--strategy", "multiworker",
             "--n-epochs", "5", "--n-saves", "3", "--progress", "false", "--out", str(tmp_path / f"worker_{index}")],
            cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for proc in procs:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output[-3000:]
    assert not (tmp_path / "worker_1" / "posterior").exists()  # only the chief exports
    assert (tmp_path / "worker_1" / "ckpt" / "chains_001-001").is_dir()  # each worker checkpoints its own chain
    pooled = _samples(tmp_path / "worker_0")
    for k in range(2):
        train.main(with_preset(train.Config, train.PRESETS, "tiny", chain_offset=k, n_epochs=5, n_saves=3,
                               progress=False, out=str(tmp_path / f"chain_{k}")))
        for name, value in _samples(tmp_path / f"chain_{k}").items():
            np.testing.assert_array_equal(pooled[name][3 * k:3 * (k + 1)], value, err_msg=f"chain {k} {name}")


def test_sharded_clue_equals_single_device(tmp_path, data_dir):
    _two_devices("clue", tmp_path, data_dir)
    single, sharded = (np.load(tmp_path / s / "explanations.npz") for s in ("default", "mirrored"))
    np.testing.assert_array_equal(single["test_index"], sharded["test_index"])
    np.testing.assert_array_equal(single["stop_step"], sharded["stop_step"])
    np.testing.assert_allclose(single["x"], sharded["x"], atol=2e-4)
    np.testing.assert_allclose(single["uncertainty_after"], sharded["uncertainty_after"], atol=1e-5)
    assert np.mean(single["uncertainty_after"] < single["uncertainty_before"]) > 0.8  # a real optimisation ran


def test_vectorised_chains_follow_separate_chains_up_to_rounding():
    """K chains in one batched group vs K one-chain groups: the same chains, up to float rounding."""
    config = with_preset(train.Config, train.PRESETS, "tiny")
    ds = data.load("digits")
    arch, likelihood, hparams = train.model_spec(config, ds)
    x, y = tf.constant(ds.x_train[:256]), tf.constant(ds.y_train[:256])
    groups = [chains.ChainGroup(arch, likelihood, seeds, hparams, 2, ds.pixel_norm) for seeds in ([3, 4], [3], [4])]
    for group in groups:
        epoch = tf.function(lambda g=group: g.train_epoch(x, y, 64, tf.constant(False), 5, 10))
        for _ in range(2):
            epoch()
    for k in range(2):
        for name in arch.param_shapes():
            np.testing.assert_allclose(groups[0].params[name].numpy()[k], groups[1 + k].params[name].numpy(),
                                       atol=1e-4, err_msg=f"chain {k} {name}")
    assert not np.allclose(groups[1].params["dense_0/kernel"].numpy(), groups[2].params["dense_0/kernel"].numpy())


def test_parallel_chains_resume_and_report_diagnostics(tmp_path):
    tiny = dict(chains=3, n_epochs=8, burn_in=2, n_saves=4, progress=False)
    straight = train.main(with_preset(train.Config, train.PRESETS, "tiny", out=str(tmp_path / "straight"), **tiny))
    train.main(with_preset(train.Config, train.PRESETS, "tiny", out=str(tmp_path / "resumed"), **{**tiny,
                                                                                                  "n_epochs": 4}))
    resumed = train.main(with_preset(train.Config, train.PRESETS, "tiny", out=str(tmp_path / "resumed"), **tiny))
    a, b = _samples(tmp_path / "straight"), _samples(tmp_path / "resumed")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert straight["test/accuracy"] == resumed["test/accuracy"] and straight["test/nll"] == resumed["test/nll"]
    assert straight["n_samples"] == 12 and straight["n_chains"] == 3
    for key in ("rhat/test_loglik", "ess/test_loglik", "rhat/probe_max", "ess/probe_min"):
        assert np.isfinite(straight[f"diagnostics/{key}"]), key
    assert {f"chains/{k}/test/accuracy" for k in range(3)} <= set(straight)
    traces = np.load(tmp_path / "straight" / "diagnostics.npz")
    assert traces["test_loglik"].shape == (4, 3) and traces["probe"].shape == (4, 3, diagnostics.N_PROBE)
    rows = (tmp_path / "resumed" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 8 and "train/nll/chain_2" in rows[0]


def test_resume_with_another_chain_layout_is_refused(tmp_path):
    config = with_preset(train.Config, train.PRESETS, "tiny", chains=2, n_epochs=2, out=str(tmp_path / "run"))
    train.main(config)
    with pytest.raises(ValueError, match=r"other settings \(chains: 2 -> 3\)"):
        train.main(with_preset(train.Config, train.PRESETS, "tiny", chains=3, n_epochs=2, out=str(tmp_path / "run")))
    # The same --chains on another number of replicas groups the chains differently (as if two replicas wrote it).
    (tmp_path / "run" / "ckpt" / "chains_000-001").rename(tmp_path / "run" / "ckpt" / "chains_000-000")
    with pytest.raises(ValueError, match="another chain layout"):
        train.main(config)


def _linear_regression_chains(n_chains, seed, shift=0.0, n_steps=8000):
    """Chained SG-HMC on a conjugate Bayesian linear regression: traces `[n, K, 2]` of (w, b) and the exact
    posterior mean and std of w."""
    rng = np.random.RandomState(0)
    n, noise, prior_sigma = 40, 0.5, 1.0
    x = rng.randn(n).astype(np.float32)
    y = (1.5 * x - 0.5 + noise * rng.randn(n) + shift).astype(np.float32)
    xa = np.stack([x, np.ones(n)], 1)
    cov = np.linalg.inv(xa.T @ xa / noise**2 + np.eye(2) / prior_sigma**2)
    mean = cov @ xa.T @ y / noise**2
    w, b = tf.Variable(tf.zeros([n_chains])), tf.Variable(tf.zeros([n_chains]))
    sampler = ScaleAdaptedSGHMC([w, b], SGHMCParams(prior_sigma=prior_sigma, grad_std_mul=20, grad_buffer_len=100),
                                seed=[seed + k for k in range(n_chains)])

    @tf.function
    def run():
        trace = tf.TensorArray(tf.float32, n_steps)
        for t in tf.range(n_steps):
            with tf.GradientTape() as tape:
                pred = w[:, None] * x[None] + b[:, None]
                nll = tf.reduce_sum(0.5 * tf.square(y[None] - pred)) / noise**2
            sampler.step(tape.gradient(nll, [w, b]), False, t % 10 == 0, False)  # fixed prior, no adaptation
            trace = trace.write(t, tf.stack([w, b], -1))
        return trace.stack()

    return run().numpy()[n_steps // 5::5], mean, np.sqrt(np.diag(cov))


def test_rhat_near_one_on_a_known_posterior_and_large_on_mismatched_chains():
    trace, mean, std = _linear_regression_chains(4, seed=0)
    # The chained sampler (one seed per chain) targets the analytic posterior ...
    np.testing.assert_array_less(np.abs(trace.reshape(-1, 2).mean(0) - mean) / std, 0.3)
    np.testing.assert_allclose(trace.reshape(-1, 2).std(0) / std, 1.0, atol=0.2)
    good = diagnostics.convergence({"w": trace[..., 0], "wb": trace})
    assert good["diagnostics/rhat/w"] < 1.05 and good["diagnostics/rhat/wb_max"] < 1.05
    assert good["diagnostics/ess/w"] > 100
    # ... and two chains of another posterior (targets shifted by 1) among them are flagged.
    other, _, _ = _linear_regression_chains(2, seed=10, shift=1.0)
    bad = diagnostics.convergence({"w": np.concatenate([trace[:, :2, 1], other[:, :, 1]], axis=1)})
    assert bad["diagnostics/rhat/w"] > 1.5


def test_convergence_needs_four_samples():
    with pytest.raises(ValueError, match="at least 4"):
        diagnostics.convergence({"x": np.zeros((3, 2))})
