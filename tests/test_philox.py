"""``common.seeding.philox``: one independent random stream per (seed, stream), where ``from_seed`` overlaps."""
import numpy as np
import pytest
import tensorflow as tf

from common.errors import UserError
from common.seeding import philox


def _shared_draws(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.isin(a, b).sum())


def test_from_seed_streams_of_adjacent_seeds_overlap():
    """Why the helper exists: seed 1 of ``from_seed`` replays seed 0's stream, 4 draws later."""
    s0 = tf.random.Generator.from_seed(0).uniform([64]).numpy()
    s1 = tf.random.Generator.from_seed(1).uniform([64]).numpy()
    np.testing.assert_array_equal(s1[:60], s0[4:])


@pytest.mark.parametrize("a,b", [((0, 0), (1, 0)), ((1, 0), (2, 0)), ((0, 0), (0, 1)), ((5, 1), (5, 2))])
def test_distinct_seeds_and_streams_share_no_draws(a, b):
    long = philox(*a).uniform([20000]).numpy()
    short = philox(*b).uniform([256]).numpy()
    assert _shared_draws(short, long) <= 2  # float32 uniforms: a chance collision or two, never a shifted copy


def test_seed_zero_keeps_from_seed_zero_and_streams_are_reproducible():
    np.testing.assert_array_equal(philox(0).normal([16]).numpy(),
                                  tf.random.Generator.from_seed(0).normal([16]).numpy())
    np.testing.assert_array_equal(philox(7, 3).normal([16]).numpy(), philox(7, 3).normal([16]).numpy())
    assert philox(2**64 - 1).normal([2]).shape == (2,)


@pytest.mark.parametrize("seed,stream", [(-1, 0), (0, -2), (2**64, 0)])
def test_out_of_range_seed_is_a_clear_error(seed, stream):
    with pytest.raises(UserError, match="must be an integer in"):
        philox(seed, stream)


def test_chains_seeded_k_apart_draw_independent_noise():
    """The sampler of chain k (seed + k) must not replay chain 0's injected noise."""
    from BNN.sghmc import ScaleAdaptedSGHMC, SGHMCParams

    variables = [tf.Variable(tf.zeros([2, 50]))]
    sampler = ScaleAdaptedSGHMC(variables, SGHMCParams(), seed=[0, 1])
    draws = [rng.normal([200]).numpy() for rng in sampler.rngs]
    assert _shared_draws(draws[1], draws[0]) == 0
