"""CLUE.diverse (δ-CLUE): sets of K explanations inside latent balls, batched, and the CLUE.generate flags."""

from __future__ import annotations

import math

import numpy as np
import pytest
from toy_models import IdentityGenerator, ToyCategoricalBNN, ToyGaussianBNN

from CLUE import generate
from CLUE.diverse import DeltaCLUE, DiverseConfig, ball_distance, initial_latents
from CLUE.explainer import CLUE, CLUEConfig, CLUEWeights
from common.config import parse_config, with_preset
from common.errors import UserError

X0 = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
BNN, GEN = ToyCategoricalBNN(4), IdentityGenerator()


def _config(steps: int = 25, early_stop: int = 3, **kwargs) -> DiverseConfig:
    clue = CLUEConfig(CLUEWeights(distance=0.1), lr=0.05, max_steps=steps, n_early_stop=early_stop)
    return DiverseConfig(clue, **kwargs)


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("init", ["uniform", "normal"])
def test_every_explanation_lies_in_its_ball(norm, init):
    delta = 0.4
    config = _config(n_explanations=5, delta=delta, norm=norm, diversity_weight=1.0, init=init, seed=3)
    start = initial_latents(X0, config, np.random.default_rng(0))
    assert (ball_distance(start, np.repeat(X0, 5, 0), norm) <= delta * (1 + 1e-5)).all()
    sets = DeltaCLUE(BNN, GEN, config).explain(X0)
    assert sets.x.shape == (6, 5, 4) and sets.z.shape == (6, 5, 4)
    np.testing.assert_allclose(sets.z0, X0)  # IdentityGenerator: the encoder mean is x0
    dist = ball_distance(sets.z, X0[:, None], norm)
    np.testing.assert_allclose(dist, sets.latent_distance)
    assert (dist <= delta * (1 + 1e-5)).all()
    assert dist.max() > 0.9 * delta  # the constraint is active: the search pushes to the boundary
    assert (sets.uncertainty.min(axis=1) < sets.uncertainty_before).all()


def test_diversity_grows_with_the_diversity_weight():
    div = []
    for weight in (0.0, 0.1, 0.5):
        sets = DeltaCLUE(BNN, GEN, _config(steps=30, early_stop=0, n_explanations=4, delta=1.0,
                                           diversity_weight=weight, seed=0)).explain(X0)
        div.append(sets.diversity_x.mean())
    assert div[0] < div[1] < div[2], div
    assert div[2] > 1.5 * div[0]


@pytest.mark.parametrize("bnn", [BNN, ToyGaussianBNN(4)], ids=["categorical", "gaussian"])
def test_one_explanation_in_an_unbounded_ball_is_plain_clue(bnn):
    config = _config(steps=40, n_explanations=1, delta=None, init="center", seed=5)  # early stopping on
    plain = CLUE(bnn, GEN, config.clue).explain(X0)
    sets = DeltaCLUE(bnn, GEN, config).explain(X0)
    np.testing.assert_allclose(sets.x[:, 0], plain.x, atol=1e-6)
    np.testing.assert_allclose(sets.z[:, 0], plain.z, atol=1e-6)
    np.testing.assert_array_equal(sets.stop_step, plain.stop_step)
    np.testing.assert_allclose(sets.cost, plain.cost, atol=1e-6)
    np.testing.assert_allclose(sets.uncertainty[:, 0], plain.uncertainty_after, atol=1e-6)
    # a perturbed start is CLUE restarted there (CLUE.explain's z_start), with delta = inf
    config = _config(steps=40, n_explanations=1, delta=math.inf, init="normal", init_scale=0.3, seed=5)
    start = initial_latents(X0, config, np.random.default_rng(5))
    restarted = CLUE(bnn, GEN, config.clue).explain(X0, z_start=start)
    np.testing.assert_allclose(DeltaCLUE(bnn, GEN, config).explain(X0).x[:, 0], restarted.x, atol=1e-6)


def test_sets_are_one_batch_and_independent_of_the_batch_size():
    kwargs = dict(n_explanations=3, delta=0.5, norm="linf", diversity_weight=0.5, seed=2)
    whole = DeltaCLUE(BNN, GEN, _config(**kwargs)).explain(X0)
    clue = CLUEConfig(CLUEWeights(distance=0.1), lr=0.05, max_steps=25, batch_size=2)
    pairs = DeltaCLUE(BNN, GEN, DiverseConfig(clue, **kwargs)).explain(X0)
    np.testing.assert_allclose(pairs.x, whole.x, atol=1e-6)
    np.testing.assert_array_equal(pairs.stop_step, whole.stop_step)
    summary = whole.summary()
    assert summary["n_explanations"] == 3 and 1 <= summary["n_classes_reached"] <= 3
    assert whole.n_classes_reached.shape == (6,)
    assert ((0 <= whole.fraction_changed) & (whole.fraction_changed <= 1)).all()
    changed = (whole.predicted_class != whole.original_class[:, None]).mean(1)
    np.testing.assert_allclose(whole.fraction_changed, changed)


@pytest.mark.parametrize("field, value, message", [
    ("n_explanations", 0, "--diverse"), ("delta", -1.0, "--delta"), ("delta", 0.0, "--delta"),
    ("norm", "l1", "--delta-norm"), ("diversity_weight", -0.5, "--diversity-weight"),
    ("init", "sobol", "--diverse-init")])
def test_bad_settings_are_user_errors(field, value, message):
    with pytest.raises(UserError, match=message):
        DiverseConfig(**{field: value})


def test_generate_flags_parse_and_bad_values_stop_before_loading(tmp_path):
    parsed = parse_config(generate.Config, generate.PRESETS, ["--diverse", "10", "--delta", "0.5", "--delta-norm",
                                                              "linf", "--diversity-weight", "2"])
    assert (parsed.diverse, parsed.delta, parsed.delta_norm, parsed.diversity_weight) == (10, 0.5, "linf", 2.0)
    assert parse_config(generate.Config, generate.PRESETS, []).diverse == 0  # default: plain CLUE only
    for bad, message in (({"diverse": -2}, "--diverse"), ({"diverse": 3, "delta": -1.0}, "--delta"),
                         ({"diverse": 3, "delta_norm": "l3"}, "--delta-norm")):
        config = with_preset(generate.Config, generate.PRESETS, "tiny", dataset="digits", bnn=str(tmp_path / "b"),
                             vae=str(tmp_path / "v"), out=str(tmp_path / "out"), **bad)
        with pytest.raises(UserError, match=message):
            generate.main(config)
        assert not (tmp_path / "out").exists()


def test_generate_with_diverse_writes_the_sets(tmp_path, data_dir):
    from common.io import PROJECT_ROOT

    config = with_preset(generate.Config, generate.PRESETS, "tiny", dataset="compas", n_explain=4, n_figure=0,
                         bnn=str(PROJECT_ROOT / "weights" / "bnn" / "compas"),
                         vae=str(PROJECT_ROOT / "weights" / "vae" / "compas"), out=str(tmp_path / "out"),
                         diverse=3, delta=0.5, diversity_weight=1.0)
    summary = generate.main(config)
    sets = np.load(tmp_path / "out" / "diverse.npz")
    assert sets["x"].shape == (4, 3, 17) and (sets["latent_distance"] <= 0.5 * (1 + 1e-5)).all()
    np.testing.assert_array_equal(sets["test_index"], np.load(tmp_path / "out" / "explanations.npz")["test_index"])
    assert summary["diverse"]["n_explanations"] == 3 and summary["diverse"]["delta"] == 0.5
    assert 1 <= summary["diverse"]["n_classes_reached"] <= 2 and summary["n_explained"] == 4
