"""The CLUE optimiser: early-stopping semantics, freezing, conditional CLUE, latent-L2, restarts, batching."""

from __future__ import annotations

import numpy as np
import pytest
from toy_models import IdentityGenerator, ToyGaussianBNN

from CLUE.explainer import CLUE, CLUEConfig, CLUEWeights, early_stop_steps, freeze


@pytest.fixture()
def toy():
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=(40, 5)).astype(np.float32) * 1.5
    return ToyGaussianBNN(5), IdentityGenerator(), x0


def _config(**kw):
    base = dict(weights=CLUEWeights(uncertainty=1.0, distance=0.05), lr=0.05, max_steps=40)
    return CLUEConfig(**{**base, **kw})


def test_stopping_rule_on_constructed_costs():
    """The spec's worked example (n = 3, min_steps = 3): 10, 8, 6, 5, 5, 5 stops at 6; a constant cost at 4."""
    falling = np.array([10, 8, 6, 5, 5, 5, 5, 5], np.float32)
    constant = np.full(8, 2.0, np.float32)
    slow = 10.0 - 0.03 * np.arange(8, dtype=np.float32)  # changes by 0.09 < 1% of 10 over 3 steps
    fast = 10.0 - 1.0 * np.arange(8, dtype=np.float32)  # never settles
    cost = np.stack([falling, constant, slow, fast], axis=1)
    stop = early_stop_steps(cost, min_steps=3, n_early_stop=3)
    np.testing.assert_array_equal(stop, [6, 4, 4, 0])
    frozen = freeze(cost, stop, n_early_stop=3)
    np.testing.assert_array_equal(frozen[:, 0], [10, 8, 6, 5, 5, 5, 5, 5])  # frozen at index 4
    np.testing.assert_array_equal(frozen[:, 1], constant)
    np.testing.assert_array_equal(frozen[2:, 2], slow[2])  # frozen at index 2
    np.testing.assert_array_equal(frozen[:, 3], fast)
    # A non-positive initial cost can only stop through the absolute threshold.
    assert early_stop_steps(np.stack([-5.0 - 0.01 * np.arange(8)], 1).astype(np.float32))[0] == 0
    assert early_stop_steps(np.zeros((8, 1), np.float32))[0] == 4
    # n_early_stop = 0 disables stopping.
    assert early_stop_steps(cost, n_early_stop=0).sum() == 0


def test_online_stopping_and_freezing_match_the_rule(toy):
    """Stopped rows leave the computation, yet the result equals the original's post-hoc freezing."""
    bnn, gen, x0 = toy
    raw = CLUE(bnn, gen, _config(n_early_stop=0)).explain(x0, record_trajectory=True)
    expected_stop = early_stop_steps(raw.cost, min_steps=3, n_early_stop=3)
    assert 0 < np.sum(expected_stop > 0) < len(x0)  # some rows stop, some run to the end
    res = CLUE(bnn, gen, _config(n_early_stop=3)).explain(x0, record_trajectory=True)
    np.testing.assert_array_equal(res.stop_step, expected_stop)
    # Values agree to float32 rounding (gathering rows can change SIMD alignment by one ulp).
    np.testing.assert_allclose(res.cost, freeze(raw.cost, expected_stop, 3), rtol=1e-6)
    np.testing.assert_allclose(res.x_trajectory, freeze(raw.x_trajectory, expected_stop, 3), rtol=1e-5, atol=1e-6)
    rows = np.arange(len(x0))
    np.testing.assert_allclose(res.x, raw.x_trajectory[res.freeze_index, rows], rtol=1e-5, atol=1e-6)
    never = expected_stop == 0
    np.testing.assert_allclose(res.x[never], raw.x[never], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(res.freeze_index[~never], expected_stop[~never] - 2)


@pytest.mark.parametrize("n_early_stop", [3, 0])
def test_the_compiled_optimisation_is_the_stepwise_one(toy, n_early_stop):
    """The whole optimisation in one graph (the default) gives the Python step loop's result, row by row: the same
    stop steps, costs, trajectories and explanations, with and without a feature mask."""
    bnn, gen, x0 = toy
    clue = CLUE(bnn, gen, _config(n_early_stop=n_early_stop))
    mask = (np.arange(5) % 2).astype(np.float32)
    for cond in (None, np.broadcast_to(mask, x0.shape)):
        z = clue.encode(x0)
        graph = clue._explain_batch(x0, z, z, cond, None, record_trajectory=True)
        steps = clue._explain_batch_stepwise(x0, z, z, cond, None, record_trajectory=True)
        assert set(graph) == set(steps)
        if n_early_stop:
            assert 0 < np.sum(steps["stop_step"] > 0) < len(x0)
        np.testing.assert_array_equal(graph["stop_step"], steps["stop_step"])
        for key in graph:
            np.testing.assert_allclose(graph[key], steps[key], rtol=1e-6, atol=1e-7, err_msg=key)
        if cond is not None:  # fixed features stay at x0
            np.testing.assert_array_equal(graph["x_final"][:, mask == 0], x0[:, mask == 0])


def test_result_does_not_depend_on_batching(toy):
    bnn, gen, x0 = toy
    a = CLUE(bnn, gen, _config(batch_size=256)).explain(x0)
    b = CLUE(bnn, gen, _config(batch_size=7)).explain(x0)
    np.testing.assert_allclose(a.x, b.x, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a.stop_step, b.stop_step)


def test_clue_lowers_the_objective_it_minimises(toy):
    bnn, gen, x0 = toy
    res = CLUE(bnn, gen, _config(n_early_stop=0)).explain(x0)
    assert np.all(res.cost[-1] < res.cost[0])
    assert np.mean(res.uncertainty_after < res.uncertainty_before) > 0.9


def test_conditional_clue_keeps_fixed_features(toy):
    bnn, gen, x0 = toy
    mask = np.array([1, 0, 1, 0, 0], np.float32)  # 1: may change
    res = CLUE(bnn, gen, _config()).explain(x0, cond_mask=mask)
    np.testing.assert_array_equal(res.x[:, mask == 0], x0[:, mask == 0])
    assert np.abs(res.x[:, mask == 1] - x0[:, mask == 1]).max() > 0.1
    assert np.mean(res.uncertainty_after < res.uncertainty_before) > 0.8


def test_latent_l2_term_acts(toy):
    """Unlike the original (where z_init aliases z), a large latent-L2 weight keeps z near z_init."""
    bnn, gen, x0 = toy
    free = CLUE(bnn, gen, _config(n_early_stop=0)).explain(x0)
    tied = CLUE(bnn, gen, _config(n_early_stop=0, weights=CLUEWeights(distance=0.05, latent_l2=50.0))).explain(x0)
    move = lambda r: np.linalg.norm(r.z - r.z_init, axis=1).mean()  # noqa: E731
    assert move(tied) < 0.2 * move(free)


def test_prediction_similarity_moves_towards_the_target(toy):
    bnn, gen, x0 = toy
    target = np.full(len(x0), 3.0, np.float32)
    weights = CLUEWeights(uncertainty=0.0, prediction_similarity=1.0)
    res = CLUE(bnn, gen, _config(weights=weights, n_early_stop=0)).explain(x0, desired_preds=target)
    mean_pred = lambda x: bnn.predict_samples(x)[0].numpy().mean(0)  # noqa: E731
    assert np.mean(np.abs(mean_pred(res.x) - 3.0)) < 0.5 * np.mean(np.abs(mean_pred(x0) - 3.0))


def test_restarts_give_distinct_explanations(toy):
    bnn, gen, x0 = toy
    results = CLUE(bnn, gen, _config()).explain_many(x0[:6], n_explanations=3, init_std=0.5, seed=0)
    assert len(results) == 3
    assert not np.allclose(results[0].x, results[1].x)
    np.testing.assert_array_equal(results[0].z_init, results[1].z_init)  # the anchor is the unperturbed start


def test_bad_input_is_refused(toy):
    bnn, gen, x0 = toy
    with pytest.raises(ValueError, match=r"x0 must be \[n, D\]"):
        CLUE(bnn, gen, _config()).explain(x0[0])
    with pytest.raises(ValueError, match="distance"):
        CLUEConfig(distance_metric="cosine")
    with pytest.raises(ValueError, match="min_steps"):
        CLUEConfig(min_steps=0, n_early_stop=3)


# ----------------------------------------------------------------------------- with the original's trained models


@pytest.fixture(scope="module")
def lsat_models(parity_dir):
    from BNN.posterior import Posterior
    from VAE.model import load_parity_npz

    io = np.load(parity_dir / "lsat" / "io.npz")
    return (Posterior.from_npz(parity_dir / "lsat" / "bnn_samples.npz", "gaussian"),
            load_parity_npz(parity_dir / "lsat" / "vae.npz"), io["clue/x0"])


def test_clue_beats_the_reconstruction_baseline_on_trained_models(lsat_models):
    """On LSAT's most uncertain points CLUE lowers the BNN's uncertainty and stays closer to x0 than the plain
    VAE reconstruction does (the paper's point: a small, in-distribution change)."""
    bnn, vae, x0 = lsat_models
    clue = CLUE(bnn, vae, CLUEConfig(CLUEWeights.paper(lam=2.0, x_dim=12), lr=0.1))
    res = clue.explain(x0)
    recon = vae.reconstruct(x0)
    assert np.mean(res.uncertainty_after < res.uncertainty_before) > 0.9
    assert res.l1_distance.mean() < 0.7 * np.abs(recon - x0).sum(1).mean()


def test_large_lambda_keeps_the_explanation_close(lsat_models):
    """With a very large distance weight CLUE never ends further from x0 than the reconstruction it starts from,
    and trades away most of the uncertainty reduction that lambda = 0 achieves."""
    bnn, vae, x0 = lsat_models
    runs = {lam: CLUE(bnn, vae, CLUEConfig(CLUEWeights.paper(lam, 12), lr=0.1)).explain(x0) for lam in (0.0, 1e4)}
    recon = vae.reconstruct(x0)
    near = runs[1e4].l1_distance <= np.abs(recon - x0).sum(1) + 1e-3
    assert np.mean(near) > 0.95
    assert runs[1e4].l1_distance.mean() < 0.5 * runs[0.0].l1_distance.mean()
    gain = lambda r: np.mean(r.uncertainty_before - r.uncertainty_after)  # noqa: E731
    assert gain(runs[1e4]) < 0.5 * gain(runs[0.0])


def test_result_says_where_the_predicted_class_changed():
    """The predictive at x0 and at the explanation is kept; ``prediction_changed`` compares their argmax."""
    from toy_models import IdentityGenerator, ToyCategoricalBNN

    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(30, 4)).astype(np.float32)
    bnn = ToyCategoricalBNN(4)
    res = CLUE(bnn, IdentityGenerator(), _config(max_steps=30, weights=CLUEWeights(uncertainty=1.0, distance=0.01))
               ).explain(x0)
    assert res.prediction_before.shape == (30, 3) and res.prediction_after.shape == (30, 3)
    expected = res.prediction_before.argmax(1) != res.prediction_after.argmax(1)
    np.testing.assert_array_equal(res.prediction_changed, expected)
    assert res.summary()["fraction_prediction_changed"] == pytest.approx(expected.mean())
    np.testing.assert_allclose(res.prediction_after, bnn.predict_samples(res.x).numpy().mean(0), rtol=1e-5)


def test_a_batch_whose_rows_all_stop_early_with_a_conv_decoder():
    """Every row stops before max_steps, so no row is left for the final hard decode: the conv VAE's decoder is not
    run on an empty batch (it failed on one), and every row ends at its frozen step."""
    from BNN.model import Architecture, init_params
    from BNN.posterior import Posterior
    from common.seeding import set_seed
    from VAE.model import VAE

    set_seed(0)
    arch = Architecture("mlp", 784, 10, 8, 2)
    draws = [init_params(arch, seed=s) for s in range(2)]
    bnn = Posterior(arch, "categorical", {k: np.stack([d[k] for d in draws]) for k in draws[0]})
    vae = VAE([1] * 784, 20, likelihood="bernoulli", arch="mnist_conv")
    x0 = np.random.default_rng(0).uniform(size=(3, 784)).astype(np.float32)
    result = CLUE(bnn, vae, CLUEConfig(CLUEWeights.paper(4.0, 784), lr=0.1, max_steps=35)).explain(x0)
    assert (result.stop_step > 0).all() and (result.freeze_index < 35).all()
    assert result.x.shape == (3, 784) and np.isfinite(result.x).all()
