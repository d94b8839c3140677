"""Factor score (Kim & Mnih 2018) on codes known in advance: the factors themselves, noise, a code missing a factor."""

from __future__ import annotations

import numpy as np
import pytest

from VAE.disentanglement import PRESETS, DSpritesFactors, factor_score, preset

SIZES = (3, 6, 40, 32, 32)  # dSprites without color


class FactorsAsObservations:
    """A sampler whose observations are the factor classes themselves (float), so codes cost nothing."""

    factor_sizes = SIZES

    def sample_factors(self, n, rng):
        return np.stack([rng.integers(0, s, n) for s in self.factor_sizes], axis=1)

    def observations(self, factors):
        return factors.astype(np.float64)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_oracle_code_scores_one(name):
    result = factor_score(lambda x: x, FactorsAsObservations(), name, seed=0)
    assert result["score"] == 1.0 and result["train_accuracy"] == 1.0
    assert result["num_active_dims"] == 5


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_oracle_code_rescaled_and_permuted_scores_one(name):
    scale = np.array([0.3, 2.0, 10.0, 0.7, 5.0])
    perm = np.array([3, 0, 4, 1, 2])
    result = factor_score(lambda x: (x * scale)[:, perm] - 7.0, FactorsAsObservations(), name, seed=1)
    assert result["score"] == 1.0
    votes = np.array(result["votes"])
    assert np.count_nonzero(votes) == 5  # each dimension votes for one factor only: the permutation
    assert list(np.argmax(votes, axis=1)) == list(perm)


def test_random_code_scores_near_chance():
    noise = np.random.default_rng(123)
    random_code = lambda x: noise.normal(size=(len(x), 10))
    evaluated = factor_score(random_code, FactorsAsObservations(), "disentanglement_lib", seed=2)
    assert evaluated["eval_accuracy"] == pytest.approx(1 / 5, abs=0.03)
    # the reproductions' training accuracy overfits the majority vote a little: above chance, far below 1
    trained = factor_score(random_code, FactorsAsObservations(), "reproductions", seed=3)
    assert 1 / 5 <= trained["score"] <= 1 / 5 + 0.12


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_code_missing_one_factor_scores_four_fifths(name):
    result = factor_score(lambda x: x[:, :4], FactorsAsObservations(), name, seed=4)
    assert result["score"] == pytest.approx(0.8, abs=0.03)


def test_pruning_by_std_and_by_kl():
    dead = lambda x: np.concatenate([x, np.zeros((len(x), 1)), 0.01 * x[:, :1]], axis=1)
    assert factor_score(dead, FactorsAsObservations(), "disentanglement_lib", seed=5)["active_dims"] == [0, 1, 2, 3, 4]
    # with log-variances, a dimension at the prior (mean ~ 0, logvar 0) is pruned by the KL rule
    prior_dim = lambda x: (np.concatenate([x / 40, np.random.default_rng(0).normal(0, 1e-3, (len(x), 1))], axis=1),
                           np.concatenate([np.full((len(x), 5), -4.0), np.zeros((len(x), 1))], axis=1))
    result = factor_score(prior_dim, FactorsAsObservations(), preset("reproductions", num_train=100), seed=6)
    assert result["active_dims"] == [0, 1, 2, 3, 4] and result["score"] == 1.0


def test_collapsed_representation_scores_zero():
    result = factor_score(lambda x: np.zeros((len(x), 3)), FactorsAsObservations(), "reproductions", seed=7)
    assert result["score"] == 0.0 and result["num_active_dims"] == 0


def test_dsprites_sampler_with_the_renderer():
    from data.dsprites import DSprites

    sampler = DSpritesFactors(DSprites.procedural())
    assert sampler.factor_sizes == SIZES
    factors = sampler.sample_factors(4, np.random.default_rng(0))
    images = sampler.observations(factors)
    assert images.shape == (4, 64, 64) and images.dtype == np.uint8
    # ink centroid as a 2-D code of position only: posX and posY are found, the other three factors are not
    def centroid(x):
        r, c = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
        mass = x.reshape(len(x), 64, 64).sum((1, 2))
        return np.stack([(x * c).sum((1, 2)) / mass, (x * r).sum((1, 2)) / mass], axis=1)
    config = preset("reproductions", batch_size=16, num_train=50, num_variance_estimate=200)
    result = factor_score(centroid, sampler, config, seed=0)
    votes = np.array(result["votes"])
    assert votes[0, 3] == 10 and votes[1, 4] == 10  # the posX and posY votes all go to their own dimension
    assert result["score"] == pytest.approx(20 / 50)  # the other factors' votes are lost: (10 + 10) / 50


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_dimensions_are_compared_after_scaling_by_their_data_std(name):
    """Each dimension codes one factor with 10% noise at scales 1e3 ... 0.2: raw variances would pick a
    small-scale dimension (it varies least in absolute terms), the scaled ones the factor held fixed."""
    scale = np.array([1e3, 10.0, 1.0, 0.5, 0.2])
    noise = np.random.default_rng(5)
    code = lambda x: (x + 0.1 * noise.normal(size=x.shape)) * scale
    result = factor_score(code, FactorsAsObservations(), name, seed=6)
    assert result["score"] >= 0.95
