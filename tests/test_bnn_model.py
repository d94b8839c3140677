"""Networks over one or S stacked weight sets (BNN/model.py) and the vectorised Posterior (BNN/posterior.py)."""

import numpy as np
import pytest
import tensorflow as tf

from BNN import posterior as posterior_module
from BNN.model import Architecture, forward, forward_unrolled, get_likelihood, init_params, unrolled_layers
from BNN.posterior import UNROLLED_MIN_BATCH, Posterior, SampleBuffer

MLP = Architecture("mlp", input_dim=6, output_dim=3, width=16, depth=2)
CNN = Architecture("cnn", input_dim=64, output_dim=4, image_shape=(8, 8, 1))


def _stacked(arch, n_samples):
    per = [init_params(arch, seed) for seed in range(n_samples)]
    return per, {k: np.stack([p[k] for p in per]) for k in per[0]}


@pytest.mark.parametrize("arch", [MLP, CNN], ids=["mlp", "cnn"])
def test_stacked_forward_equals_per_sample_forward(arch):
    per, stacked = _stacked(arch, 5)
    x = tf.random.stateless_uniform([7, arch.input_dim], seed=[1, 2])
    out = forward(arch, {k: tf.constant(v) for k, v in stacked.items()}, x).numpy()
    assert out.shape == (5, 7, arch.output_dim)
    for s, params in enumerate(per):
        np.testing.assert_allclose(out[s], forward(arch, params, x).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("transposed", [False, True], ids=["batch-on-rows", "transposed-copy"])
def test_unrolled_forward_equals_batched_forward_and_its_gradient(transposed):
    _, stacked = _stacked(MLP, 4)
    params = {k: tf.constant(v) for k, v in stacked.items()}
    layers = unrolled_layers(MLP, params) if transposed else None
    x = tf.random.stateless_uniform([9, MLP.input_dim], seed=[3, 4])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        batched, unrolled = forward(MLP, params, x), forward_unrolled(MLP, params, x, layers)
        loss_b, loss_u = tf.reduce_sum(tf.sin(batched)), tf.reduce_sum(tf.sin(unrolled))
    np.testing.assert_allclose(unrolled.numpy(), batched.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tape.gradient(loss_u, x).numpy(), tape.gradient(loss_b, x).numpy(), rtol=1e-4,
                               atol=1e-6)
    with pytest.raises(ValueError, match="MLPs only"):
        forward_unrolled(CNN, {}, x)


@pytest.mark.parametrize("copy_cap", [None, 0], ids=["transposed-copy", "no-copy"])
def test_posterior_takes_the_unrolled_path_for_large_batches_with_the_same_values(monkeypatch, copy_cap):
    if copy_cap is not None:  # a posterior too large for a rearranged copy of its weights: batch on rows
        monkeypatch.setattr(posterior_module, "UNROLLED_MAX_COPY_FLOATS", copy_cap)
    _, stacked = _stacked(MLP, 3)
    post, batched = Posterior(MLP, "gaussian", stacked), Posterior(MLP, "gaussian", stacked, unroll=False)
    x = np.random.RandomState(2).normal(size=(UNROLLED_MIN_BATCH + 5, MLP.input_dim)).astype(np.float32)
    np.testing.assert_allclose(post.forward(x).numpy(), batched.forward(x).numpy(), rtol=1e-5, atol=1e-6)
    assert post._forward_unrolled.experimental_get_tracing_count() == 1  # the large batch went the unrolled way
    assert (post._unrolled_layers is not None) == (copy_cap is None)  # the layout the parameter names
    post.forward(x[:UNROLLED_MIN_BATCH - 1])
    assert post._forward.experimental_get_tracing_count() == 1 and batched._forward_unrolled is None
    assert post[:2]._forward_unrolled is not None and Posterior(MLP, "gaussian", stacked,
                                                                jit_compile=True)._forward_unrolled is None


def test_cnn_shapes_follow_the_original_small_cnn():
    shapes = Architecture("cnn", 784, 10, image_shape=(28, 28, 1)).param_shapes()
    assert shapes["conv_0/kernel"] == (5, 5, 1, 128) and shapes["conv_1/kernel"] == (5, 5, 128, 64)
    assert shapes["dense_0/kernel"] == (3136, 600) and shapes["dense_1/kernel"] == (600, 10)


def test_mnist_mlp_shapes():
    shapes = Architecture("mlp", 784, 10, width=1200, depth=2).param_shapes()
    assert list(shapes.values()) == [(784, 1200), (1200,), (1200, 1200), (1200,), (1200, 10), (10,)]


def test_init_is_pytorch_default_uniform():
    params = init_params(Architecture("mlp", 100, 2, width=400, depth=1), seed=0)
    for name, fan_in in [("dense_0/kernel", 100), ("dense_0/bias", 100), ("dense_1/kernel", 400)]:
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(params[name]).max() <= bound and np.abs(params[name]).max() > 0.95 * bound
        assert abs(np.var(params[name]) - bound**2 / 3) < 0.15 * bound**2 / 3  # variance of U(-a, a)
    np.testing.assert_array_equal(init_params(MLP, 3)["dense_0/kernel"], init_params(MLP, 3)["dense_0/kernel"])


def test_gaussian_likelihood_nll_and_floor():
    lik = get_likelihood("gaussian")
    out = tf.constant([[0.5, 0.0], [1.0, -30.0]])  # sigma = softplus(0) = log 2; softplus(-30) ~ 1e-13 -> 1e-3
    y = tf.constant([[1.5], [1.0]])
    sigma = np.log(2.0)
    expected0 = 0.5 * np.log(2 * np.pi) + np.log(sigma) + 0.5 / sigma**2
    nll = lik.nll(out, y).numpy()
    assert nll[0] == pytest.approx(expected0, rel=1e-5)
    assert nll[1] == pytest.approx(0.5 * np.log(2 * np.pi) + np.log(1e-3), rel=1e-5)
    mu, s = lik.predict(out)
    assert mu.shape == (2,) and s.numpy()[1] < 1e-3  # predictions are not floored


def test_categorical_likelihood():
    lik = get_likelihood("categorical")
    out = tf.constant([[2.0, 0.0, -1.0], [0.0, 0.0, 3.0]])
    y = tf.constant([0.0, 1.0])
    logp = out.numpy() - np.log(np.exp(out.numpy()).sum(-1, keepdims=True))
    np.testing.assert_allclose(lik.nll(out, y).numpy(), [-logp[0, 0], -logp[1, 1]], rtol=1e-6)
    np.testing.assert_array_equal(lik.error(out, y).numpy(), [0.0, 1.0])
    with pytest.raises(ValueError, match="unknown likelihood"):
        get_likelihood("poisson")


@pytest.mark.parametrize("likelihood, out_dim", [("categorical", 3), ("gaussian", 2)])
def test_predict_samples_returns_exactly_s_distinct_samples(likelihood, out_dim):
    arch = Architecture("mlp", 6, out_dim, width=16, depth=2)
    _, stacked = _stacked(arch, 4)
    post = Posterior(arch, likelihood, stacked)
    x = np.random.RandomState(0).randn(9, 6).astype(np.float32)
    pred = post.predict_samples(x)
    first = pred if likelihood == "categorical" else pred[0]
    assert first.shape[:2] == (4, 9)  # all S samples, none dropped (the original returned S - 1)
    flat = first.numpy().reshape(4, -1)
    assert len({tuple(np.round(r, 6)) for r in flat}) == 4
    total, ale, epi = post.uncertainty(x)
    assert total.shape == ale.shape == epi.shape == (9,)
    assert post[:-1].n_samples == 3 and post[1:3].predict_samples(x) is not None


def test_uncertainty_gradient_reaches_inputs():
    _, stacked = _stacked(MLP, 3)
    post = Posterior(MLP, "categorical", stacked)
    x = tf.Variable(np.random.RandomState(0).randn(5, 6).astype(np.float32))
    with tf.GradientTape() as tape:
        total, _, _ = post.uncertainty(x)
        loss = tf.reduce_sum(total)
    grad = tape.gradient(loss, x)
    assert grad is not None and np.all(np.isfinite(grad.numpy())) and np.any(grad.numpy() != 0)


def test_posterior_applies_input_normalisation():
    _, stacked = _stacked(CNN, 2)
    x = np.random.RandomState(0).uniform(size=(3, 64)).astype(np.float32)
    raw = Posterior(CNN, "categorical", stacked, input_norm=(0.1307, 0.3081)).forward(x).numpy()
    normalised = Posterior(CNN, "categorical", stacked).forward((x - 0.1307) / 0.3081).numpy()
    np.testing.assert_allclose(raw, normalised, rtol=1e-5, atol=1e-6)
    # A one-sample posterior normalises as the unstacked network on normalised inputs (SG-HMC's chain weights).
    params = init_params(CNN, 0)
    single = Posterior(CNN, "categorical", {k: v[None] for k, v in params.items()}, (0.1307, 0.3081))
    unstacked = forward(CNN, params, (x - 0.1307) / 0.3081).numpy()
    np.testing.assert_allclose(single.forward(x).numpy()[0], unstacked, rtol=1e-4, atol=1e-5)


def test_posterior_rejects_bad_inputs(tmp_path):
    _, stacked = _stacked(MLP, 2)
    with pytest.raises(ValueError, match="dense_1/kernel"):
        Posterior(MLP, "categorical", {**stacked, "dense_1/kernel": stacked["dense_1/kernel"][:, :3]})
    with pytest.raises(ValueError, match="lack parameters"):
        Posterior(MLP, "categorical", {k: v for k, v in stacked.items() if k != "dense_2/bias"})
    with pytest.raises(ValueError, match=r"\[B, 6\]"):
        Posterior(MLP, "categorical", stacked).forward(np.zeros((2, 5), np.float32))
    np.savez(tmp_path / "bad.npz", foo=np.zeros(3))
    with pytest.raises(ValueError, match="dense_0/kernel"):
        Posterior.from_npz(tmp_path / "bad.npz", "categorical")
    with pytest.raises(FileNotFoundError, match="Posterior.save"):
        Posterior.load(tmp_path)


def test_cnn_posterior_round_trip(tmp_path):
    _, stacked = _stacked(CNN, 2)
    post = Posterior(CNN, "categorical", stacked, input_norm=(0.5, 0.25))
    post.save(tmp_path / "p")
    loaded = Posterior.load(tmp_path / "p")
    assert loaded.arch == CNN and loaded.input_norm == (0.5, 0.25)
    imported = Posterior.from_npz(tmp_path / "p" / "samples.npz", "categorical", (0.5, 0.25), image_shape=(8, 8, 1))
    x = np.random.RandomState(1).uniform(size=(4, 64)).astype(np.float32)
    np.testing.assert_array_equal(loaded.forward(x).numpy(), imported.forward(x).numpy())


def test_sample_buffer_keeps_last_n_oldest_first():
    arch = Architecture("mlp", 2, 2, width=3, depth=1)
    buffer = SampleBuffer(arch, capacity=3)
    assert buffer.n_kept == 0
    for value in range(5):
        buffer.add({k: tf.fill(s, float(value)) for k, s in arch.param_shapes().items()})
    kept = buffer.samples()["dense_0/kernel"][:, 0, 0]
    np.testing.assert_array_equal(kept, [2.0, 3.0, 4.0])
    assert buffer.n_kept == 3
