"""VAEAC masks: top_masker's per-row rate is U(0, p), NaNs are always missing, per-variable masks cover whole blocks."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from scipy import stats

from VAEAC.masks import apply_mask, mcar_masker, top_masker


def test_top_masker_row_rates_are_uniform():
    gen = tf.random.Generator.from_seed(0)
    x = tf.zeros((2000, 400))
    mask = top_masker(x, gen, p=0.6).numpy()
    assert set(np.unique(mask)) == {0.0, 1.0}
    row_rates = mask.mean(1)  # ~ r ~ U(0, 0.6), up to binomial noise of at most sqrt(.25/400) = 0.025
    assert stats.kstest(row_rates / 0.6, "uniform").statistic < 0.06
    assert abs(mask.mean() - 0.3) < 0.01  # marginal rate p/2
    assert row_rates.max() < 0.6 + 0.1


def test_top_masker_or_nan_and_per_variable_blocks():
    gen = tf.random.Generator.from_seed(1)
    x = np.zeros((500, 7), np.float32)
    x[::3, 2] = np.nan
    mask = top_masker(tf.constant(x), gen, p=1.0, input_dim_vec=[1, 3, 1, 2]).numpy()
    assert np.all(mask[::3, 2] == 1)
    np.testing.assert_array_equal(mask[:, 1], mask[:, 3])  # one-hot block masked whole
    np.testing.assert_array_equal(mask[:, 5], mask[:, 6])
    assert 0 < mask[:, 1].mean() < 1
    filled = apply_mask(tf.constant(x), tf.constant(mask)).numpy()
    assert not np.isnan(filled).any() and np.all(filled[mask == 1] == 0)


def test_mcar_masker_rate():
    mask = mcar_masker(tf.zeros((300, 300)), tf.random.Generator.from_seed(2), p=0.2).numpy()
    assert abs(mask.mean() - 0.2) < 0.005
