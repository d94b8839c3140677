"""CLUE.evaluation.sweeps: each method's sweep, its journal and its switches (spec 6.4)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
from evaluation_fakes import X_VEC, ground_truth

from CLUE import evaluation as ev
from CLUE.evaluation import sweeps as ev_sweeps


def test_clue_sweep_passes_its_early_stopping_window(monkeypatch):
    seen = []

    class RecordingCLUE:
        def __init__(self, bnn, vae, config):
            seen.append(config)

        def explain(self, x0):
            return SimpleNamespace(x=x0)

    monkeypatch.setattr(ev_sweeps, "CLUE", RecordingCLUE)
    x0 = np.zeros((2, 7), np.float32)
    ev.explain_with("clue", "aleatoric", 1.0, x0, bnn=None, vae=None)
    ev.explain_with("clue", "epistemic", 1.0, x0, bnn=None, vae=None, sweep=ev.Sweep(clue_n_early_stop=0))
    assert [(c.n_early_stop, c.max_steps) for c in seen] == [(3, 55), (0, 65)]  # [nb]: window 3, 55 / 65 steps


def test_an_interrupted_sweep_resumes_from_its_journal(tmp_path, monkeypatch):
    gt, _ = ground_truth("classification")
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

    monkeypatch.setattr(ev_sweeps, "explain_with", explain)
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

    gt, _ = ground_truth("classification")
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

    monkeypatch.setattr(ev_sweeps, "explain_with", explain)
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


def test_ufido_mnist_norm_reaches_ufido_and_keeps_default_journals(monkeypatch):
    seen = []
    monkeypatch.setattr(ev_sweeps, "u_fido", lambda bnn, vaeac, x, config, seed: seen.append(config)
                        or SimpleNamespace(x=x))
    x0 = np.zeros((2, 7), np.float32)
    ev.explain_with("ufido", "aleatoric", 1.0, x0, bnn=None, sweep=ev.Sweep(ufido_mnist_norm=True))
    ev.explain_with("ufido", "aleatoric", 1.0, x0, bnn=None)
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
    small, large = (ev.explain_with("clue", "aleatoric", 0.5, x0, bnn, vae, sweep=ev.Sweep(clue_batch=b,
                                                                                      clue_max_steps_aleatoric=12))
                    for b in (256, 1024))
    np.testing.assert_allclose(small, large, atol=1e-4)
