"""The shared epoch loop: batches cover every row once, and compiling the step with XLA changes no arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from common.training import make_train_epoch, optimizer_step, shuffled_batches
from VAE import train as vae_train


def test_shuffled_batches_cover_every_row_once():
    batches = shuffled_batches(tf.random.Generator.from_seed(0), 10, 4).numpy()
    assert batches.shape == (3, 4)
    assert sorted(batches[batches >= 0].tolist()) == list(range(10))
    assert (batches[-1] == -1).sum() == 2  # the padded tail of the last batch


def _least_squares_epochs(jit_compile: bool, epochs: int = 3):
    """Plain SGD on a linear least-squares problem: no random numbers inside the step, so both modes must agree."""
    rng = np.random.RandomState(0)
    x = rng.randn(100, 5).astype(np.float32)
    y = x @ rng.randn(5, 1).astype(np.float32)
    data = np.concatenate([x, y], axis=1)  # 100 rows in batches of 32: the last batch has 4
    dense = tf.keras.layers.Dense(1)
    dense.build((None, 5))
    dense.set_weights([np.zeros((5, 1), np.float32), np.zeros(1, np.float32)])
    optimizer = tf.keras.optimizers.SGD(learning_rate=0.05)
    optimizer.build(dense.trainable_variables)

    def step(batch):
        def loss():
            mse = tf.reduce_mean(tf.square(dense(batch[:, :5]) - batch[:, 5:]))
            return mse, -mse

        return optimizer_step(dense, optimizer, loss)

    epoch = make_train_epoch(step, data, tf.random.Generator.from_seed(1), 32, key="neg_mse",
                             jit_compile=jit_compile)
    values = [epoch(i)["neg_mse"] for i in range(epochs)]
    return values, [w.copy() for w in dense.get_weights()]


def test_xla_step_matches_the_graph_step():
    plain, plain_weights = _least_squares_epochs(jit_compile=False)
    xla, xla_weights = _least_squares_epochs(jit_compile=True)
    assert plain[-1] > plain[0]  # the problem is being solved
    np.testing.assert_allclose(xla, plain, rtol=1e-5)
    for a, b in zip(xla_weights, plain_weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_xla_step_is_compiled():
    """XLA's random-number kernels draw another stream from the same generator state: the witness that the step
    really runs compiled (the documented reason an XLA run is not identical to a graph run)."""
    def draws(jit_compile):
        generator = tf.random.Generator.from_seed(3)
        epoch = make_train_epoch(lambda batch: tf.reduce_mean(generator.normal([8])), np.zeros((16, 2), np.float32),
                                 generator, 8, jit_compile=jit_compile)
        return epoch(0)["train/elbo"], generator.state.numpy()

    (plain, plain_state), (xla, xla_state) = draws(False), draws(True)
    assert plain != xla
    np.testing.assert_array_equal(plain_state, xla_state)  # the same state advance: resuming stays exact


@pytest.mark.parametrize("dataset, model, expected", [("lsat", "vae", True), ("digits", "vae", True),
                                                      ("mnist_t10k", "vae", False),
                                                      ("mnist_t10k", "expvae", False)])
def test_vae_compiles_mlp_steps_only(dataset, model, expected):
    assert vae_train.Config(dataset=dataset, model=model).resolved().xla is expected
    assert vae_train.Config(dataset=dataset, model=model, xla=not expected).resolved().xla is (not expected)
