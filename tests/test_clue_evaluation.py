"""Tests of the computational evaluation framework (CLUE.evaluation, CLUE.evaluate; spec 6.3, 6.4)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import data
from CLUE import evaluation as ev
from CLUE.evaluation import metrics as ev_metrics
from CLUE.evaluation import pipeline
from CLUE.evaluation import sweeps as ev_sweeps
from common import likelihoods as lk
from VAEAC.model import VAEAC
from VAEAC.under import UnderVAEAC

X_VEC = [3, 1, 2, 1]  # two categorical and two continuous variables: 7 flat columns


def _fake_real(name, vec, task, n_train=40, n_test=10):
    d = sum(vec)
    rng = np.random.default_rng(0)
    y = (rng.integers(0, 2, n_train + n_test).astype(np.float32) if task == "classification"
         else rng.normal(size=(n_train + n_test, 1)).astype(np.float32))
    x = rng.normal(size=(n_train + n_test, d)).astype(np.float32)
    return data.Dataset(name, task, x[:n_train], y[:n_train], x[n_train:], y[n_train:], tuple(vec),
                        tuple(f"f{i}" for i in range(d)), np.zeros(d), np.ones(d), np.zeros(1), np.ones(1),
                        class_names=("a", "b") if task == "classification" else None)


def _ground_truth(task, likelihood="gauss_cat"):
    tf.keras.utils.set_random_seed(1)
    if likelihood == "gauss":  # wine-like: all continuous, learned decoder scale
        vec = [1] * 5
        base = VAEAC(vec, latent_dim=2, likelihood="gauss", width=16, depth=2, pred_sig=True)
        return ev.GroundTruth(UnderVAEAC(base, width=8, depth=2), 4, task), [1] * 4
    vec = X_VEC + ([2] if task == "classification" else [1])
    base = VAEAC(vec, latent_dim=3, likelihood="gauss_cat", width=16, depth=2)
    return ev.GroundTruth(UnderVAEAC(base, width=8, depth=2), sum(X_VEC), task), X_VEC


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_artificial_dataset_has_the_declared_layout(task):
    gt, vec = _ground_truth(task)
    real = _fake_real("fake_real", vec, task, n_train=300, n_test=100)
    ds = ev.make_artificial_dataset(gt, real, seed=3, name=f"art_test_{task}")
    assert ds.x_train.shape == (300, 7) and ds.x_test.shape == (100, 7)
    assert ds.name == f"art_test_{task}"
    x = np.concatenate([ds.x_train, ds.x_test])
    for s in lk.block_slices(vec):
        if s.stop - s.start > 1:  # a sampled one-hot per categorical variable
            assert set(np.unique(x[:, s])) <= {0.0, 1.0}
            np.testing.assert_array_equal(x[:, s].sum(axis=1), 1.0)
            assert len(np.unique(x[:, s].argmax(1))) > 1  # sampled, not always the argmax of one decoder output
    assert len(np.unique(x[:, 3])) == len(x)  # continuous columns carry N(0, 1) noise
    if task == "classification":
        assert ds.y_train.shape == (300,) and set(np.unique(ds.y_train)) <= {0.0, 1.0}
    else:
        assert ds.y_train.shape == (300, 1) and np.isfinite(ds.y_train).all()
    again = ev.make_artificial_dataset(gt, real, seed=3, name=f"art_test_{task}")
    np.testing.assert_array_equal(again.x_train, ds.x_train)  # seeded
    other = ev.make_artificial_dataset(gt, real, seed=4, name=f"art_test_{task}")
    assert not np.array_equal(other.x_train, ds.x_train)


def test_artificial_regression_label_is_the_noise_free_output_and_gaussian_base_is_sampled():
    gt, _ = _ground_truth("regression")
    x, y, xy = ev.sample_artificial_xy(gt, 64, seed=0)
    raw_seed = tf.random.experimental.stateless_split(tf.constant([0, 7], tf.int64), 2)[0]
    raw = gt.under.sample(64, raw_seed).numpy()
    np.testing.assert_allclose(y[:, 0], raw[:, 7], rtol=1e-6)  # [nb]: y without noise
    assert np.abs(xy[:, 7] - raw[:, 7]).mean() > 0.3  # ... while the joint sample carries N(0, 1) noise
    gt_w, _ = _ground_truth("regression", "gauss")
    x, y, xy = ev.sample_artificial_xy(gt_w, 64, seed=0)
    assert x.shape == (64, 4) and y.shape == (64, 1)
    np.testing.assert_array_equal(y[:, 0], xy[:, 4])  # wine: y is part of the Gaussian sample


def test_summarize_conditional_matches_hand_computation():
    probs = np.array([[[0.9, 0.1], [1.0, 0.0]], [[0.1, 0.9], [1.0, 0.0]]], np.float32)  # [N=2, B=2, C=2]
    h, label = ev.summarize_conditional(probs, "classification")
    np.testing.assert_allclose(h, [math.log(2), 0.0], atol=1e-6)
    np.testing.assert_array_equal(label, [0, 0])
    mu = np.array([[1.0, 0.0], [3.0, 0.0]], np.float32)  # [N=2, B=2]
    sigma = np.array([[1.0, 2.0], [1.0, 2.0]], np.float32)
    h, mean = ev.summarize_conditional((mu, sigma), "regression")
    np.testing.assert_allclose(h, [math.sqrt(1 + 1), 2.0], rtol=1e-6)  # sqrt(mean sigma^2 + var mu)
    np.testing.assert_allclose(mean, [2.0, 0.0])


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_gt_conditional_uses_the_base_prior_net_with_y_masked(task):
    gt, _ = _ground_truth(task)
    x = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    samples = ev.gt_conditional_samples(gt, x, n_samples=4, seed=2)
    xy = np.concatenate([x, np.full((5, gt.y_width), 7.0, np.float32)], 1)  # y values must not matter
    mask = np.concatenate([np.zeros((5, 7)), np.ones((5, gt.y_width))], 1).astype(np.float32)
    loc, scale = gt.vaeac.prior(xy, mask)
    z = loc + scale * tf.random.stateless_normal((4, 5, 3), tf.constant([2, 11], tf.int64))
    out = tf.reshape(gt.vaeac.decode(tf.reshape(z, (20, 3))), (4, 5, -1))
    if task == "classification":
        np.testing.assert_allclose(samples, tf.nn.softmax(out[..., 7:9]), rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_allclose(samples[0], out[..., 7], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(samples[1], 1.0)  # gauss_cat regression: sigma = 1 (trap 30)


class _LinearGaussianUnder:
    """u ~ N(0, 1), x = w u + b + s eps in 3 columns (the last plays y): p(x_1, x_2) is Gaussian, known exactly."""

    latent_dim = 1

    def __init__(self, w, b, s):
        self.w, self.b, self.s = (np.asarray(v, np.float32) for v in (w, b, s))
        self.base = SimpleNamespace(likelihood="gauss", pred_sig=True, input_dim_vec=[1, 1, 1], input_dim=3)

    def u_mask_recognition(self, xy, mask):  # a deliberately imperfect Gaussian proposal
        return 0.5 * xy[:, :1], tf.fill([tf.shape(xy)[0], 1], 0.9)

    def u_regenerate(self, u):
        mean = u * self.w[None] + self.b[None]
        raw_s = np.log(np.expm1(self.s))  # softplus^{-1}: normal_parse_params recovers s
        return tf.concat([mean, tf.broadcast_to(raw_s[None], tf.shape(mean))], axis=1)


def test_log_px_matches_analytic_linear_gaussian_and_increases_with_samples():
    under = _LinearGaussianUnder(w=[1.0, -0.7, 0.3], b=[0.2, 0.1, 0.0], s=[0.5, 0.6, 0.4])
    gt = ev.GroundTruth(under, x_dim=2, task="regression")
    x = np.random.default_rng(1).normal(size=(6, 2)).astype(np.float32) * 1.3
    cov = np.outer(under.w[:2], under.w[:2]) + np.diag(under.s[:2] ** 2)
    diff = x - under.b[:2]
    exact = (-0.5 * np.einsum("bi,ij,bj->b", diff, np.linalg.inv(cov), diff)
             - 0.5 * np.log(np.linalg.det(2 * np.pi * cov)))
    estimate = ev.log_px(gt, x, n_samples=20000, seed=0)
    np.testing.assert_allclose(estimate, exact, atol=0.02)
    few = np.mean([ev.log_px(gt, x, n_samples=2, seed=s) for s in range(20)], axis=0)
    assert np.all(few < estimate - 1e-3)  # importance sampling is biased low; more samples close the gap


def test_selection_and_errors_respect_thresholds():
    u = {"aleatoric": np.array([0.1, 0.5, 0.2, 0.5]), "epistemic": np.array([0.0, 0.01, 0.3, 0.02])}
    np.testing.assert_array_equal(ev.select_uncertain(u, "aleatoric", 0.2), [1, 2, 3])
    np.testing.assert_array_equal(ev.select_uncertain(u, "epistemic", 0.02), [2, 3])
    with pytest.raises(ValueError):
        ev.select_uncertain(u, "total", 0.1)
    preds = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert ev.prediction_error(preds, np.array([0, 0, 0]), "classification") == pytest.approx(1 / 3)
    assert ev.prediction_error(np.array([1.0, 3.0]), np.array([0.0, 0.0]), "regression") == pytest.approx(
        math.sqrt(5))


def test_score_of_unchanged_inputs_is_zero():
    gt, vec = _ground_truth("classification")
    bnn = SimpleNamespace(predict_samples=lambda x: tf.nn.softmax(tf.stack([x[:, :2], x[:, 1:3]]), axis=-1))
    x0 = np.random.default_rng(2).normal(size=(9, 7)).astype(np.float32)
    budget = ev.EvalBudget(n_gt_samples=16, n_px_samples=16)
    ref = ev.Reference.build(gt, bnn, x0, budget)
    point = ev.score(gt, bnn, ref, x0.copy(), budget, "clue", "aleatoric", 1.0)
    assert point.mean_delta_h == pytest.approx(0.0, abs=1e-6) and point.delta_err == 0.0
    assert point.mean_l1 == 0.0 and point.mean_log_px == pytest.approx(float(ref.log_px.mean()), abs=1e-5)
    moved = ev.score(gt, bnn, ref, x0 + 1.0, budget, "clue", "aleatoric", 1.0)
    assert moved.mean_l1 == pytest.approx(7.0, rel=1e-5) and moved.mean_delta_h != 0.0
    per_point = ev.score_points(gt, bnn, ref, x0 + 1.0, budget, "aleatoric")
    h_c, _ = ev.gt_predictive(gt, x0 + 1.0, budget.n_gt_samples, budget.seed)  # the means are the float32 ones
    assert moved.mean_delta_h == pytest.approx(float(np.mean(ref.gt_uncertainty - h_c)), abs=1e-6)
    assert moved.mean_delta_h == pytest.approx(per_point.delta_h.mean()) and per_point.l1.shape == (9,)


def test_error_of_explanations_is_scored_against_the_ground_truth_at_the_explanations(monkeypatch):
    """Metric 2 calls evaluate_epistemic_explanation_*(BNN, VAEAC, X_c): the GT label is recomputed at X_c."""
    gt, _ = _ground_truth("regression")
    x0 = np.zeros((4, 7), np.float32)
    xc = np.ones((4, 7), np.float32)
    # GT mean = first column of x; the BNN predicts it exactly, wherever x is
    monkeypatch.setattr(ev_metrics, "gt_predictive", lambda gt, x, n, seed: (np.ones(len(x)), np.asarray(x)[:, 0]))
    monkeypatch.setattr(ev_metrics, "log_px", lambda gt, x, n, seed: np.zeros(len(x)))
    bnn = SimpleNamespace(predict_samples=lambda x: (x[None, :, 0], tf.ones_like(x[None, :, 0])))
    budget = ev.EvalBudget(n_gt_samples=4, n_px_samples=4)
    ref = ev.Reference.build(gt, bnn, x0, budget)
    point = ev.score(gt, bnn, ref, xc, budget, "clue", "epistemic", 1.0)
    assert ref.error == 0.0 and point.delta_err == 0.0  # against the GT at x0 it would be 0 - 1 = -1


def test_evaluate_tiny_end_to_end(tmp_path, data_dir):
    from CLUE import evaluate
    from common.config import with_preset

    config = with_preset(evaluate.Config, evaluate.PRESETS, "tiny", dataset="compas", out=str(tmp_path),
                         data_dir=str(data_dir))
    results = evaluate.main(config)
    table = pd.read_csv(tmp_path / "table.csv")
    assert set(table["method"]) == {"clue", "ufido", "sensitivity"} and len(table) >= 6
    numeric = table[["mean_delta_h", "delta_err", "mean_log_px", "mean_l1"]].to_numpy()
    assert np.isfinite(numeric).all()
    for target in results["references"]:
        if "n_explained" in results["references"][target]:
            assert (tmp_path / f"compas_{target}.png").stat().st_size > 1000
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == results["rows"]
    art = np.load(tmp_path / "artificial.npz")
    assert art["x_train"].shape == (5554, 17) and art["x_test"].shape == (618, 17)  # [nb]: real split sizes
    (tmp_path / "table.csv").unlink()  # a finished run with the same settings is returned, not recomputed
    assert evaluate.main(config)["rows"] == json.loads((tmp_path / "results.json").read_text())["rows"]
    assert not (tmp_path / "table.csv").exists()
    assert {r["verdict"] for r in results["verdicts"]} <= {"best", "tie", "alone"} and results["verdicts"]
    assert all(r["mean_delta_h_lo"] <= r["mean_delta_h"] <= r["mean_delta_h_hi"] for r in results["rows"])
    info = results["references"]["aleatoric"]
    assert info["fraction_selected"] == pytest.approx(info["n_selected"] / info["n_test"])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir):
    """A finished tiny LSAT evaluation run: (config, its folder, its results)."""
    from CLUE import evaluate
    from common.config import with_preset

    first = tmp_path_factory.mktemp("tiny_run") / "first"
    config = with_preset(evaluate.Config, evaluate.PRESETS, "tiny", dataset="lsat", out=str(first),
                         data_dir=str(data_dir), n_clue=1, n_ufido=1, n_sensitivity=1)
    return config, first, evaluate.main(config)


def _empty_weights(root):
    import weights

    root.mkdir()
    (root / "manifest.json").write_text(json.dumps({**json.loads(weights.MANIFEST.read_text()), "models": []}))
    return root


def _rows(results):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in results["rows"]]


def _models(results):
    """The stages' metrics without wall-clock seconds, which published copies leave out."""
    return {m: {k: v for k, v in metrics.items() if not k.split("/")[-1].startswith("seconds")}
            for m, metrics in results["models"].items()}


def test_published_stages_rescore_to_the_same_results(tiny_run, tmp_path, monkeypatch):
    """The trained stages go into a weights folder with sha256s; a new run folder fed from it scores the same."""
    import weights
    from CLUE import evaluate, stages

    config, first, results = tiny_run
    root = _empty_weights(tmp_path / "weights")
    name = stages.publish(config, first, "python -m CLUE.evaluate --preset tiny", committed=True, root=root)
    manifest = weights.read_manifest(root / "manifest.json")
    assert manifest.entry(name).kind == stages.KIND and not weights.mismatches(name, manifest)
    monkeypatch.setattr(weights, "MANIFEST", root / "manifest.json")
    second = tmp_path / "second"
    again = evaluate.main(dataclasses.replace(config, out=str(second), stages="weights"))
    assert not stages.missing_stages(second)
    assert _rows(again) == _rows(results) and _models(again) == _models(results)
    assert "seconds_per_epoch" in results["models"]["bnn"]  # the training run's own record keeps them
    with pytest.raises(ValueError, match="no published evaluation stages match"):
        stages.fetch(dataclasses.replace(config, bnn_epochs=5), tmp_path / "third", manifest=manifest)
    (root / manifest.entry(name).path / "bnn" / "posterior" / "samples.npz").write_bytes(b"damaged")
    with pytest.raises(ValueError, match="sha256|differ"):
        stages.fetch(config, tmp_path / "fourth", manifest=weights.read_manifest(root / "manifest.json"))


def test_stages_neither_here_nor_hosted_are_rebuilt_and_used_only_if_every_sha256_matches(tmp_path, data_dir,
                                                                                            monkeypatch):
    """A run publishes its stages (not committed, not hosted) and its folder is lost; --stages rebuild retrains them
    in a fresh single-threaded process, finds every file equal to the published sha256s, installs them and scores
    the run the published stages scored. A retrained file that differs is never installed."""
    import subprocess
    import sys

    import weights
    from CLUE import evaluate, stages
    from common.config import with_preset

    root = _empty_weights(tmp_path / "weights")
    first = tmp_path / "first"
    config = with_preset(evaluate.Config, evaluate.PRESETS, "tiny", dataset="wine", out=str(first),
                         data_dir=str(data_dir), n_clue=1, n_ufido=1, n_sensitivity=1)
    publishing = (  # the published run: its own process, one thread, as the study runs its seeds
        "import json, sys\n"
        "from CLUE import evaluate, stages\nfrom CLUE.evaluation import pipeline\n"
        "config = evaluate.Config(**json.loads(sys.argv[1]))\n"
        "evaluate.main(config)\n"
        "stages.publish(config, config.out, pipeline.publish_command(config), committed=False, root=sys.argv[2])\n")
    subprocess.run([sys.executable, "-c", publishing, json.dumps(dataclasses.asdict(config)), str(root)], check=True,
                   env={**os.environ, **stages.SINGLE_THREAD_ENV}, cwd=stages.PROJECT_ROOT)
    results = json.loads((first / "results.json").read_text())
    manifest = weights.read_manifest(root / "manifest.json")
    (name,) = manifest.entries
    assert not manifest.entry(name).committed and str(first) in manifest.entry(name).command
    assert manifest.entry(name).info["rebuildable"] is True  # every stage recorded one thread
    shutil.rmtree(manifest.local_dir(name))  # a fresh checkout: listed in the manifest, files nowhere
    shutil.rmtree(first)
    monkeypatch.setattr(weights, "MANIFEST", root / "manifest.json")
    monkeypatch.delenv(weights.ENV_URL, raising=False)
    assert stages.needs_rebuild(config)

    again = evaluate.main(dataclasses.replace(config, out=str(tmp_path / "second"), stages="rebuild"))
    assert weights.available(name, manifest) and not stages.needs_rebuild(config)  # installed, sha256-verified
    assert _rows(again) == _rows(results) and _models(again) == _models(results)  # the published run's scores

    raw = json.loads((root / "manifest.json").read_text())
    entry = next(m for m in raw["models"] if m["name"] == name)
    next(f for f in entry["files"] if f["file"] == "vae/best/model.weights.h5")["sha256"] = "0" * 64
    other = _empty_weights(tmp_path / "other")
    (other / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"differ from the published(.|\n)*vae/best/model.weights.h5: sha256"):
        stages.install(config, first, manifest=weights.read_manifest(other / "manifest.json"))
    assert not (other / "cache" / entry["path"]).exists()
    assert not list((other / "cache" / "eval").glob(".*"))  # no staging folder left behind


def test_stage_thread_records_say_whether_a_single_threaded_retrain_can_repeat_the_stages(tmp_path, monkeypatch):
    from CLUE import stages

    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "1")
    monkeypatch.setenv("TF_NUM_INTEROP_THREADS", "1")
    assert stages.tf_threads() == {"intra_op": 1, "inter_op": 1}
    assert stages.rebuildable(tmp_path) is None  # nothing recorded: a run from before the record
    for stage in stages.TRAINED_STAGES[:-1]:
        stages.note_training(tmp_path, stage)
    assert stages.rebuildable(tmp_path) is None  # the in-filling VAEAC is not recorded yet
    stages.note_training(tmp_path, "art_vaeac")
    assert stages.rebuildable(tmp_path) is True
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "2")
    stages.note_training(tmp_path, "bnn")  # the BNN resumed in a two-thread process
    assert stages.rebuildable(tmp_path) is False
    record = json.loads((tmp_path / stages.THREADS_FILE).read_text())
    assert [t["intra_op"] for t in record["bnn"]] == [1, 2]
    assert record["gt_vaeac"] == [{"intra_op": 1, "inter_op": 1, "cpu": stages.cpu_signature()}]
    assert stages.trained_on(tmp_path) == [stages.cpu_signature()]  # one machine, listed once
    with pytest.raises(ValueError, match="unknown stage"):
        stages.note_training(tmp_path, "sweeps")


def test_log_px_diagnostic_reproduces_the_runs_estimate_and_reads_the_run_only(tiny_run, tmp_path):
    """experiments/diagnostics/log_px_convergence.py at the run's own sample count gives the run's log p(x) of its
    explained points; more samples change the estimate; an explanation set moves the points; the run is not
    written."""
    import importlib.util

    from common.errors import UserError

    config, first, results = tiny_run
    path = Path(__file__).resolve().parent.parent / "experiments" / "diagnostics" / "log_px_convergence.py"
    spec = importlib.util.spec_from_file_location("log_px_convergence", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    before = sorted((p.relative_to(first), p.stat().st_mtime_ns) for p in first.rglob("*"))
    out = tmp_path / "lpx.json"
    # a target the tiny run explains (whether a tiny BNN's aleatoric uncertainty crosses the threshold depends on the
    # CPU's kernels)
    target = next(t for t in ev.TARGETS if results["references"][t].get("n_explained"))
    module.main(["--run", str(first), "--target", target, "--n-points", "100000", "--samples",
                 str(config.n_px_samples), "64", "--explain", "sensitivity:1", "--out", str(out)])
    rows = {(r["set"], r["samples"]): r for r in json.loads(out.read_text())["rows"]}
    reference = results["references"][target]
    original = rows[("original", config.n_px_samples)]
    assert original["mean"] == pytest.approx(reference["mean_log_px_x0"], abs=1e-5)
    assert original["mean_l1"] == 0 and original["rise_of_10_lowest"] == 0
    assert rows[("original", 64)]["mean"] != original["mean"]
    assert rows[("sensitivity:1", 64)]["mean_l1"] > 0
    assert sorted((p.relative_to(first), p.stat().st_mtime_ns) for p in first.rglob("*")) == before
    with pytest.raises(SystemExit):  # the parser names what is wrong (pipeline.load_trained_run)
        module.main(["--run", str(tmp_path), "--target", "aleatoric", "--out", str(tmp_path / "no.json")])
    partial = tmp_path / "partial"
    shutil.copytree(first, partial)
    (partial / "vae" / "metrics.json").unlink()
    with pytest.raises(UserError, match="vae is not trained yet"):
        pipeline.load_trained_run(partial)
    assert not (tmp_path / "no.json").exists()


def test_rebuild_refuses_at_once_stages_trained_with_several_threads(tiny_run, tmp_path, monkeypatch):
    """An entry published from a multi-threaded run is marked so, and --stages rebuild says what to do instead of
    retraining for an hour and then finding every sha256 different."""
    import subprocess

    import weights
    from CLUE import stages

    config, first, _ = tiny_run
    root = _empty_weights(tmp_path / "weights")
    thread_record = first / stages.THREADS_FILE
    saved = thread_record.read_text()
    record = json.loads(saved)
    record["vae"].append({"intra_op": 2, "inter_op": 2})
    thread_record.write_text(json.dumps(record))
    try:
        name = stages.publish(config, first, "python -m CLUE.evaluate --preset tiny --out x", committed=False,
                              root=root)
    finally:
        thread_record.write_text(saved)
    manifest = weights.read_manifest(root / "manifest.json")
    assert manifest.entry(name).info["rebuildable"] is False
    assert manifest.entry(name).info["trained_on"] == [stages.cpu_signature()]
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("rebuild started a retrain"))
    with pytest.raises(ValueError, match="more than one TensorFlow thread"):
        pipeline.rebuild_stages(config, manifest)

    # one thread, but another CPU: TensorFlow's kernels differ, so the retrain is refused as well
    raw = json.loads((root / "manifest.json").read_text())
    raw["models"][0].update(rebuildable=True, trained_on=[{"model": "AMD EPYC", "simd": ["avx", "avx2", "fma"]}])
    monkeypatch.setattr(stages, "cpu_signature", lambda: {"model": "Intel Xeon", "simd": ["avx2", "avx512f"]})
    (root / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"trained on AMD EPYC \(avx, avx2, fma\); this machine is Intel Xeon"):
        pipeline.rebuild_stages(config, weights.read_manifest(root / "manifest.json"))


def test_compare_at_distance_interpolates_within_each_sweep():
    table = pd.DataFrame({"target": "aleatoric", "method": ["clue"] * 2 + ["ufido"] * 2,
                          "mean_l1": [0.0, 2.0, 1.0, 3.0], "mean_delta_h": [0.0, 0.4, 0.1, 0.3],
                          "delta_err": [0.0, 0.2, 0.0, 0.0], "mean_log_px": [-5.0, -7.0, -6.0, -6.0]})
    rows = {(r["method"], r["l1"]): r for r in ev.compare_at_distance(table, distances=(0.5, 1.0))}
    assert rows[("clue", 1.0)]["delta_h"] == pytest.approx(0.2) and rows[("clue", 0.5)]["log_px"] == -5.5
    assert rows[("ufido", 1.0)]["delta_h"] == pytest.approx(0.1)
    assert math.isnan(rows[("ufido", 0.5)]["delta_h"])  # below U-FIDO's smallest distance: no extrapolation


def test_clue_sweep_passes_its_early_stopping_window(monkeypatch):
    seen = []

    class RecordingCLUE:
        def __init__(self, bnn, vae, config):
            seen.append(config)

        def explain(self, x0):
            return SimpleNamespace(x=x0)

    monkeypatch.setattr(ev_sweeps, "CLUE", RecordingCLUE)
    x0 = np.zeros((2, 7), np.float32)
    ev.explain("clue", "aleatoric", 1.0, x0, bnn=None, vae=None)
    ev.explain("clue", "epistemic", 1.0, x0, bnn=None, vae=None, sweep=ev.Sweep(clue_n_early_stop=0))
    assert [(c.n_early_stop, c.max_steps) for c in seen] == [(3, 55), (0, 65)]  # [nb]: window 3, 55 / 65 steps


def test_a_run_saved_before_a_setting_existed_matches_that_settings_default():
    from CLUE import evaluate
    from common.utils import jsonable

    config = evaluate.Config(dataset="lsat", out="runs/x")
    saved = jsonable(dataclasses.asdict(config))
    del saved["clue_n_early_stop"]
    assert pipeline.saved_settings(saved) == jsonable(dataclasses.asdict(config))
    changed = dataclasses.replace(config, clue_n_early_stop=0)
    assert pipeline.saved_settings(saved) != jsonable(dataclasses.asdict(changed))


def test_an_interrupted_sweep_resumes_from_its_journal(tmp_path, monkeypatch):
    gt, _ = _ground_truth("classification")
    bnn = SimpleNamespace(predict_samples=lambda x: tf.nn.softmax(tf.stack([x[:, :2], x[:, 1:3]]), axis=-1))
    x0 = np.random.default_rng(3).normal(size=(6, 7)).astype(np.float32)
    budget = ev.EvalBudget(n_gt_samples=8, n_px_samples=8)
    refs = {"aleatoric": ev.Reference.build(gt, bnn, x0, budget)}
    sweep = ev.Sweep(sensitivity_steps=(0.1, 0.5, 1.0, 2.0))
    calls = []

    def explain(method, target, param, x, *args):  # a stand-in explainer: moves every feature by the sweep value
        calls.append(param)
        if len(calls) == 3 and crash:
            raise KeyboardInterrupt  # the run is stopped while the third value is being explained
        return x + param

    monkeypatch.setattr(ev_sweeps, "explain", explain)
    journal = tmp_path / "sweep_points.jsonl"
    crash = True
    with pytest.raises(KeyboardInterrupt):
        ev.run_sweeps(gt, bnn, refs, None, None, sweep, budget, methods=("sensitivity",), progress=False,
                      journal=journal)
    assert len(journal.read_text().splitlines()) == 2
    with open(journal, "a") as f:
        f.write('{"fingerprint": "torn')  # a write cut short by the crash
    crash, calls[:] = False, []
    resumed = ev.run_sweeps(gt, bnn, refs, None, None, sweep, budget, methods=("sensitivity",), progress=False,
                            journal=journal)
    assert calls == [1.0, 2.0]  # only the values not yet scored
    straight = ev.run_sweeps(gt, bnn, refs, None, None, sweep, budget, methods=("sensitivity",), progress=False)
    strip = [{k: v for k, v in dataclasses.asdict(p).items() if k != "seconds"} for p in resumed]
    assert strip == [{k: v for k, v in dataclasses.asdict(p).items() if k != "seconds"} for p in straight]
    assert [p.mean_l1 for p in resumed] == pytest.approx([0.7, 3.5, 7.0, 14.0], rel=1e-5)
    assert sorted(resumed.per_point) == sorted(straight.per_point) and len(resumed.per_point) == 4
    for key, scores in straight.per_point.items():  # the per-point scores come back from the journal's files
        for name, values in scores.arrays().items():
            np.testing.assert_array_equal(getattr(resumed.per_point[key], name), values)
    calls[:] = []  # the journal now holds every value, the torn line notwithstanding
    ev.run_sweeps(gt, bnn, refs, None, None, sweep, budget, methods=("sensitivity",), progress=False,
                  journal=journal)
    assert calls == []
    calls[:] = []  # other explained points: nothing in the journal applies
    ev.run_sweeps(gt, bnn, {"aleatoric": ev.Reference.build(gt, bnn, x0 + 1, budget)}, None, None, sweep, budget,
                  methods=("sensitivity",), progress=False, journal=journal)
    assert calls == [0.1, 0.5, 1.0, 2.0]


def test_torch13_sweeps_explain_with_the_original_gradient_and_score_with_the_exact_bnn(monkeypatch):
    from BNN.model import Architecture, init_params
    from BNN.posterior import Posterior
    from CLUE.compat import OriginalGradientMLP

    gt, _ = _ground_truth("classification")
    arch = Architecture("mlp", input_dim=7, output_dim=2, width=8, depth=1)
    draws = [init_params(arch, seed) for seed in range(3)]
    bnn = Posterior(arch, "categorical", {k: np.stack([d[k] for d in draws]) for k in draws[0]})
    x0 = np.random.default_rng(3).normal(size=(6, 7)).astype(np.float32)
    budget = ev.EvalBudget(n_gt_samples=8, n_px_samples=8)
    refs = {"aleatoric": ev.Reference.build(gt, bnn, x0, budget)}
    seen = []

    def explain(method, target, param, x, explaining_bnn, *args):
        seen.append(explaining_bnn)
        return x + param

    monkeypatch.setattr(ev_sweeps, "explain", explain)
    sweeps = {g: ev.Sweep(sensitivity_steps=(0.5,), bnn_gradient=g, clue_batch=256) for g in ("exact", "torch13")}
    points = {g: ev.run_sweeps(gt, bnn, refs, None, None, s, budget, methods=("sensitivity",), progress=False)
              for g, s in sweeps.items()}
    assert seen[0] is bnn and isinstance(seen[1], OriginalGradientMLP)
    assert seen[1].kernels[0].shape[0] == 2  # the original's forward drops the last saved sample
    strip = lambda p: {k: v for k, v in dataclasses.asdict(p).items() if k != "seconds"}
    assert strip(points["exact"][0]) == strip(points["torch13"][0])  # the same x_c is scored the same way
    # The journal keeps the two apart; the default's fingerprint is the one journals had before the setting existed.
    fingerprints = {g: ev.sweep_fingerprint(refs["aleatoric"], s, budget) for g, s in sweeps.items()}
    assert fingerprints["exact"] != fingerprints["torch13"]
    added_later = ("bnn_gradient", "ufido_mnist_norm", "clue_batch")
    old = {k: v for k, v in dataclasses.asdict(sweeps["exact"]).items() if k not in added_later}
    digest = hashlib.sha256(np.ascontiguousarray(x0, np.float32).tobytes())
    digest.update(json.dumps([old, dataclasses.asdict(budget)], sort_keys=True, default=float).encode())
    assert fingerprints["exact"] == digest.hexdigest()[:16]
    with pytest.raises(ValueError, match="bnn_gradient"):
        ev.Sweep(bnn_gradient="stale")


def test_equal_distance_interpolates_between_adjacent_sweep_values_only():
    """A sweep whose L1 is not monotone in its parameter: sorting by L1 would pair values that are not neighbours."""
    table = pd.DataFrame({"target": "aleatoric", "method": "clue", "param": [1.0, 2.0, 3.0],
                          "mean_l1": [0.0, 4.0, 2.0], "mean_delta_h": [0.0, 0.4, 1.0], "delta_err": 0.0,
                          "mean_log_px": [-5.0, -9.0, -7.0], "n_points": 3})
    row = ev.compare_at_distance(table, distances=(1.0,))[0]
    assert row["delta_h"] == pytest.approx(0.1) and row["log_px"] == pytest.approx(-6.0)  # sorted by L1: 0.5, -6
    assert (row["lam_lo"], row["lam_hi"]) == (1.0, 2.0)
    assert math.isnan(ev.compare_at_distance(table, distances=(5.0,))[0]["delta_h"])


def _scores(rng, n, dh_mean, l1_mean, task="classification"):
    err0 = rng.integers(0, 2, n).astype(float)
    return ev.PointScores(delta_h=rng.normal(dh_mean, 0.05, n), err0=err0, errc=err0.copy(),
                          log_px=rng.normal(-5.0, 1.0, n), l1=rng.normal(l1_mean, 0.1, n), bnn_delta=np.zeros(n))


def _table_and_scores(gaps, n=400, seed=0):
    """Two sweep values per method, L1 about 1 and 3; method m's dH is ``gaps[m]`` higher than U-FIDO's."""
    rng = np.random.default_rng(seed)
    points, per_point = [], {}
    for method, gap in gaps.items():
        for lam, l1 in ((0.1, 1.0), (1.0, 3.0)):
            s = _scores(rng, n, 0.2 + gap + 0.05 * l1, l1)
            per_point[("aleatoric", method, lam)] = s
            points.append(ev.summarize(s, SimpleNamespace(error=float(s.err0.mean())), "classification", method,
                                       "aleatoric", lam))
    return ev.points_table(points), per_point


def test_verdicts_name_a_best_method_only_where_its_paired_interval_excludes_zero():
    table, per_point = _table_and_scores({"clue": 0.1, "ufido": 0.0, "sensitivity": -0.05})
    rows = {r["l1"]: r for r in ev.verdicts(table, per_point, "classification", distances=(2.0, 5.0))}
    assert rows[2.0]["best"] == "clue" and rows[2.0]["verdict"] == "best" and rows[2.0]["gap_lo"] > 0
    assert 5.0 not in rows  # outside every sweep: no comparison at all
    table, per_point = _table_and_scores({"clue": 0.001, "ufido": 0.0}, n=50)
    row = ev.verdicts(table, per_point, "classification", distances=(2.0,))[0]
    assert row["verdict"] == "tie" and row["gap_lo"] < 0 < row["gap_hi"]
    compared = {(r["method"]): r for r in ev.compare_at_distance(table, distances=(2.0,), per_point=per_point,
                                                                  task="classification")}
    clue = compared["clue"]
    assert clue["delta_h_lo"] < clue["delta_h"] < clue["delta_h_hi"]
    assert clue["delta_h_hi"] - clue["delta_h_lo"] == pytest.approx(2 * 1.96 * 0.05 / math.sqrt(50), rel=0.3)


def test_resampled_error_change_is_the_rms_difference_for_regression():
    rng = np.random.default_rng(4)
    s = ev.PointScores(*(rng.random(30) for _ in range(6)))
    idx = np.arange(30)[None]
    from CLUE.evaluation.report import resampled_means

    got = resampled_means(s, idx, "regression")["delta_err"][0]
    assert got == pytest.approx(math.sqrt(s.err0.mean()) - math.sqrt(s.errc.mean()))


def test_quantile_threshold_selects_the_top_fraction_and_nb_constants_stay_the_default():
    u = {"aleatoric": np.linspace(0.0, 1.0, 1001), "epistemic": np.zeros(1001)}
    assert ev.selection_threshold(u, "aleatoric", "lsat", None) == 0.68
    tau = ev.selection_threshold(u, "aleatoric", "lsat", 0.8)
    assert len(ev.select_uncertain(u, "aleatoric", tau)) == 201
    with pytest.raises(ValueError, match="quantile"):
        ev.selection_threshold(u, "aleatoric", "lsat", 1.5)


def test_ufido_mnist_norm_reaches_ufido_and_keeps_default_journals(monkeypatch):
    seen = []
    monkeypatch.setattr(ev_sweeps, "u_fido", lambda bnn, vaeac, x, config, seed: seen.append(config)
                        or SimpleNamespace(x=x))
    x0 = np.zeros((2, 7), np.float32)
    ev.explain("ufido", "aleatoric", 1.0, x0, bnn=None, sweep=ev.Sweep(ufido_mnist_norm=True))
    ev.explain("ufido", "aleatoric", 1.0, x0, bnn=None)
    assert [c.mnist_norm_quirk for c in seen] == [True, False]
    ref = SimpleNamespace(x0=x0)
    budget = ev.EvalBudget()
    assert (ev.sweep_fingerprint(ref, ev.Sweep(ufido_mnist_norm=True), budget)
            != ev.sweep_fingerprint(ref, ev.Sweep(), budget))


def test_sweep_paper_is_the_nb_grid():
    sweep = ev.Sweep.paper()
    assert sweep == ev.Sweep() and len(sweep.clue_lambdas) == 30 and len(sweep.sensitivity_steps) == 20
    assert sweep.clue_lambdas[0] == pytest.approx(1e-4) and sweep.clue_lambdas[-1] == pytest.approx(30)
    assert ev.Sweep.paper({"clue": 8, "ufido": 8, "sensitivity": 8}).ufido_l1ws[-1] == pytest.approx(100)


def test_clue_sweep_batch_size_leaves_the_explanations_unchanged():
    """The sweep optimises 1024 rows together where CLUE's default is 256: rows are independent, so the
    explanations agree to float32 rounding."""
    from BNN.model import Architecture, init_params
    from BNN.posterior import Posterior
    from VAE.model import VAE

    arch = Architecture("mlp", input_dim=7, output_dim=2, width=8, depth=1)
    draws = [init_params(arch, seed) for seed in range(3)]
    bnn = Posterior(arch, "categorical", {k: np.stack([d[k] for d in draws]) for k in draws[0]})
    tf.keras.utils.set_random_seed(0)
    vae = VAE(X_VEC, latent_dim=3, width=16, depth=2)
    x0 = np.random.default_rng(5).normal(size=(600, 7)).astype(np.float32)
    small, large = (ev.explain("clue", "aleatoric", 0.5, x0, bnn, vae, sweep=ev.Sweep(clue_batch=b,
                                                                                      clue_max_steps_aleatoric=12))
                    for b in (256, 1024))
    np.testing.assert_allclose(small, large, atol=1e-4)


def test_seed_summary_averages_the_seeds_and_counts_their_verdicts():
    runs = []
    for seed, gap in ((0, 0.1), (1, 0.1), (2, 0.0005)):
        table, per_point = _table_and_scores({"clue": gap, "ufido": 0.0}, n=60, seed=seed)
        kw = {"per_point": per_point, "task": "classification", "distances": (2.0,)}
        runs.append({"dataset": "compas", "config": {"seed": seed}, "at_equal_distance": ev.compare_at_distance(
            table, **kw), "verdicts": ev.verdicts(table, **kw)})
    summary = ev.summarize_seeds(runs)
    clue = next(r for r in summary if r["kind"] == "method" and r["method"] == "clue")
    assert clue["n_seeds"] == 3 and clue["delta_h"] == pytest.approx(np.mean(clue["delta_h_per_seed"]))
    assert clue["delta_h_min"] <= clue["delta_h"] <= clue["delta_h_max"] and len(clue["delta_h_intervals"]) == 3
    verdict = next(r for r in summary if r["kind"] == "verdict")
    assert verdict["counts"] == {"clue": 2, "tie": 1}


def test_stage_settings_map_onto_the_training_scripts_configs():
    from BNN import train as bnn_train
    from CLUE import evaluate
    from VAEAC import train as vaeac_train

    config = evaluate.Config(dataset="lsat", gt_width=77, under_lr=1e-3, bnn_epochs=12, bnn_width=9)
    gt = pipeline.script_config(config, vaeac_train.Config, {"gt_": "", "under_": "under_"}, dataset="lsat")
    assert (gt.width, gt.under_lr, gt.max_epochs) == (77, 1e-3, config.gt_max_epochs)
    bnn = pipeline.script_config(config, bnn_train.Config, {"bnn_": ""}, {"bnn_epochs": "n_epochs"}, dataset="x")
    assert (bnn.n_epochs, bnn.width) == (12, 9)
    with pytest.raises(TypeError, match="n_epochs|epochs"):  # a setting whose name the script does not have
        pipeline.script_config(config, bnn_train.Config, {"bnn_": ""}, dataset="x")
