"""Scale-adapted SG-HMC (BNN/sghmc.py): correct stationary distribution, determinism, resumability, clipping."""

import numpy as np
import pytest
import tensorflow as tf

from BNN.sghmc import GradientClipper, ScaleAdaptedSGHMC, SGHMCParams

N, D, NOISE, PRIOR_SIGMA, CHAINS, BATCH = 40, 3, 0.5, 0.3, 16, 10


def _regression_problem():
    rng = np.random.RandomState(0)
    x = rng.randn(N, D).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3 + NOISE * rng.randn(N)).astype(np.float32)
    xa = np.concatenate([x, np.ones((N, 1))], 1)  # bias as a 4th weight; it has the same N(0, PRIOR_SIGMA^2) prior
    cov = np.linalg.inv(xa.T @ xa / NOISE**2 + np.eye(D + 1) / PRIOR_SIGMA**2)
    return x, y, cov @ xa.T @ y / NOISE**2, cov


def _make_chain(x, y, seed=1, **hparams):
    """CHAINS independent chains as one [CHAINS, D] variable (every update is elementwise) and a run function."""
    w, b = tf.Variable(tf.zeros([CHAINS, D])), tf.Variable(tf.zeros([CHAINS]))
    sampler = ScaleAdaptedSGHMC([w, b], SGHMCParams(prior_sigma=PRIOR_SIGMA, grad_std_mul=20, grad_buffer_len=100,
                                                    **hparams), seed=seed)
    x, y = tf.constant(x), tf.constant(y)

    @tf.function
    def run(n_steps, burn_in):
        trace = tf.TensorArray(tf.float32, n_steps)
        for t in tf.range(n_steps):
            idx = sampler.rng.uniform([BATCH], 0, N, dtype=tf.int32)  # minibatch gradients, as in training
            with tf.GradientTape() as tape:
                pred = tf.matmul(w, tf.gather(x, idx), transpose_b=True) + b[:, None]  # [CHAINS, BATCH]
                nll = N * tf.reduce_sum(tf.reduce_mean(0.5 * tf.square(tf.gather(y, idx) - pred), 1)) / NOISE**2
            sampler.step(tape.gradient(nll, [w, b]), burn_in, t % 10 == 0, False)  # fixed prior: analytic target
            trace = trace.write(t, tf.concat([w, b[:, None]], 1))
        return trace.stack()  # [n_steps, CHAINS, D + 1]

    return sampler, run


@pytest.mark.parametrize("burn_in_steps, n_steps", [(0, 8000), (2000, 25000)])
def test_recovers_bayesian_linear_regression_posterior(burn_in_steps, n_steps):
    x, y, mean, cov = _regression_problem()
    _, run = _make_chain(x, y)
    if burn_in_steps:
        run(tf.constant(burn_in_steps), tf.constant(True))
    # After burn-in the adapted mass M^-1 ~ 1e-2 slows mixing, hence the longer chain; the first 20% is discarded.
    trace = run(tf.constant(n_steps), tf.constant(False)).numpy()[n_steps // 5::10].reshape(-1, D + 1)
    std = np.sqrt(np.diag(cov))
    # Means within 0.3 posterior std (ignoring the prior would shift them by > 1 std); stds within 20%.
    np.testing.assert_array_less(np.abs(trace.mean(0) - mean) / std, 0.3)
    np.testing.assert_allclose(trace.std(0) / std, 1.0, atol=0.2)


def test_same_seed_same_chain_other_seed_other_chain():
    x, y, _, _ = _regression_problem()
    traces = [_make_chain(x, y, seed=s)[1](tf.constant(200), tf.constant(True)).numpy() for s in (3, 3, 4)]
    np.testing.assert_array_equal(traces[0], traces[1])
    assert np.abs(traces[0][-1] - traces[2][-1]).max() > 1e-3


def test_checkpoint_round_trip_continues_identical_chain(tmp_path):
    x, y, _, _ = _regression_problem()
    sampler, run = _make_chain(x, y)
    run(tf.constant(300), tf.constant(True))  # burn-in state (tau, g, V), momentum, clip buffer all non-trivial
    path = tf.train.Checkpoint(sampler=sampler).write(str(tmp_path / "ckpt"))
    expected = run(tf.constant(100), tf.constant(False)).numpy()

    fresh, fresh_run = _make_chain(x, y, seed=99)  # different seed: everything must come from the checkpoint
    tf.train.Checkpoint(sampler=fresh).read(path).assert_consumed()
    np.testing.assert_array_equal(fresh_run(tf.constant(100), tf.constant(False)).numpy(), expected)


def test_gibbs_draw_of_prior_precision_follows_gamma_posterior():
    theta = tf.Variable(tf.random.stateless_normal([20, 5], seed=[0, 1]) * 0.2)
    sampler = ScaleAdaptedSGHMC([theta], SGHMCParams(alpha0=10.0, beta0=10.0), seed=0)

    @tf.function
    def draw(n):
        out = tf.TensorArray(tf.float32, n)
        for i in tf.range(n):
            sampler._resample_prior_precision(0, theta)
            out = out.write(i, sampler.prior_precision[0])
        return out.stack()

    draws = draw(tf.constant(4000)).numpy()
    alpha = 10.0 + 100 / 2
    beta = 10.0 + 0.5 * float(tf.reduce_sum(theta**2))
    assert np.mean(draws) == pytest.approx(alpha / beta, rel=0.01)  # Gamma(shape alpha, rate beta) moments
    assert np.var(draws) == pytest.approx(alpha / beta**2, rel=0.1)


def test_prior_resampled_and_noise_injected_in_one_step():
    theta = tf.Variable(tf.ones([50]))
    sampler = ScaleAdaptedSGHMC([theta], SGHMCParams(), seed=0)
    sampler.step([tf.zeros([50])], burn_in=False, resample_momentum=True, resample_prior=True)
    assert float(sampler.prior_precision[0]) != pytest.approx(100.0)  # 1 / prior_sigma^2 was replaced
    moved = theta.numpy() - 1.0
    assert np.std(moved) > 1e-3  # momentum draw and noise, not just the deterministic prior pull


@pytest.mark.parametrize("seed", [5, (5, 6)], ids=["one_chain", "two_chains"])
def test_tensor_flags_branch_without_autograph_as_python_flags_do(seed):
    """The step's flags may be tensors even where AutoGraph does not convert `apply`: same chain as Python bools."""
    flags = [(True, True, True), (True, False, False), (False, True, False), (False, False, True), (True, False, True)]
    shape = [3, 4] if isinstance(seed, int) else [2, 3, 4]
    grad = tf.reshape(tf.range(np.prod(shape), dtype=tf.float32), shape) / 7.0 - 1.0

    def run(step):
        theta = tf.Variable(tf.fill(shape, 0.5))
        sampler = ScaleAdaptedSGHMC([theta], SGHMCParams(), seed=seed)
        for burn_in, momentum, prior in flags:
            step(sampler, burn_in, momentum, prior)
        return theta.numpy(), sampler.prior_precision[0].numpy(), sampler.v_hat[0].numpy()

    eager = run(lambda sampler, *f: sampler.step([grad], *f))
    graph_step = tf.function(lambda sampler, b, m, p: sampler.step([grad], b, m, p), autograph=False)
    graph = run(lambda sampler, *f: graph_step(sampler, *[tf.constant(x) for x in f]))
    for ours, expected in zip(graph, eager, strict=True):
        # graph against eager float rounding (~1e-6); a draw out of order or a branch not taken moves theta by O(lr)
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(eager[2], 1.0)  # burn-in steps adapted V, so the burn-in branch ran


def _reference_clipper(norms, std_mul, buffer_len):
    """The wrappers' list-based rule (spec 2.3), in plain Python: returns the max_grad used at every step."""
    buff, max_grad, used = [], 1e20, []
    for norm in norms:
        if len(buff) > buffer_len:
            max_grad = np.mean(buff) + std_mul * np.std(buff)
            buff.pop(0)
        used.append(max_grad)
        buff.append(norm)
        if norm >= max_grad:
            buff.pop()
    return np.array(used)


def test_gradient_clipper_matches_reference_rule():
    rng = np.random.RandomState(0)
    norms = rng.uniform(1.0, 2.0, 300)
    norms[[40, 120, 121, 250]] = [50.0, 80.0, 3.0, 1e3]  # outliers: must be clipped and kept out of the buffer
    clipper = GradientClipper(std_mul=3.0, buffer_len=20)
    used, clipped_norms = [], []
    for n in norms:
        grad = tf.constant([n, 0.0], tf.float32)  # global norm = n
        (g,), pre = clipper([grad])
        used.append(float(clipper.max_norm))  # the threshold is updated before clipping, so this is the one used
        clipped_norms.append(float(tf.norm(g)))
        assert float(pre) == pytest.approx(n, rel=1e-6)
    expected = _reference_clipper(norms, 3.0, 20)
    np.testing.assert_allclose(used, expected, rtol=1e-5)
    np.testing.assert_allclose(clipped_norms, np.minimum(norms, expected), rtol=1e-5)
    assert int(clipper.n_clipped) == int(np.sum(norms >= expected)) >= 3


# ----------------------------------------------------------------------------- the sampler's stationary bias
# Bayesian linear regression with an orthogonal design (X^T X = N I): the posterior is N(mu, I / h) with
# h = N / noise^2 + 1 (prior N(0, 1)) in every dimension, and each dimension is an independent linear recurrence
# once V is fixed. V is set to h, what burn-in adaptation converges to (E[d^2] = h at the posterior), so every
# (chain, dimension) pair is an independent replicate and the expected ratio is known exactly (BNN/README.md,
# "Sampler bias"; benchmarks/sghmc_bias.py measures the same with adapted V).
BLR_N, BLR_D, BLR_NOISE, BLR_CHAINS = 625, 4, 0.5, 256


def _blr_orthogonal():
    rng = np.random.RandomState(0)
    q, _ = np.linalg.qr(rng.randn(BLR_N, BLR_D))
    x = np.sqrt(BLR_N) * q
    y = x @ np.array([0.5, -1.0, 0.3, 0.8]) + BLR_NOISE * rng.randn(BLR_N)
    h = BLR_N / BLR_NOISE**2 + 1.0
    return x.astype(np.float32), y.astype(np.float32), x.T @ y / BLR_NOISE**2 / h, h


def _predicted_ratio(lr, h, correction=True, resample_every=0, c=0.05):
    """Exact stationary Var(w) * h of ``v' = (1 - c) v - a (w - mu) + eta, w' = w + v'`` (a = lr^2 M^-1 h), averaged
    over the momentum-resampling period (v ~ N(0, lr^2 M^-1) every ``resample_every`` steps)."""
    m_inv = 1.0 / (np.sqrt(h) + 1e-6)
    a_ = lr**2 * m_inv * h
    a = np.array([[1 - a_, 1 - c], [-a_, 1 - c]])
    q = max(2 * lr**2 * m_inv * c - (lr**4 if correction else 0.0), 1e-16) * np.ones((2, 2))
    if not resample_every:
        return np.linalg.solve(np.eye(4) - np.kron(a, a), q.ravel())[0] * h

    def period(var_w):  # one resampling period, from v redrawn independently of w: (Var(w) after, mean Var(w))
        s, acc = np.array([[var_w, 0.0], [0.0, lr**2 * m_inv]]), 0.0
        for _ in range(resample_every):
            s = a @ s @ a.T + q
            acc += s[0, 0]
        return s[0, 0], acc / resample_every

    offset = period(0.0)[0]  # the map is affine in Var(w): solve for its fixed point
    return period(offset / (1.0 - (period(1.0)[0] - offset)))[1] * h


def _variance_ratio(lr, correction=True, resample_every=0, warm=300):
    """Sampled Var(w) / analytic, mean over BLR_CHAINS x BLR_D replicates, and its standard error."""
    steps = int(3000 * max(1.0, 1e-2 / lr))  # a smaller step mixes more slowly
    x, y, mean, h = _blr_orthogonal()
    rng = np.random.RandomState(1)
    w = tf.Variable((mean + rng.randn(BLR_CHAINS, BLR_D) / np.sqrt(h)).astype(np.float32))  # start in the target
    sampler = ScaleAdaptedSGHMC([w], SGHMCParams(lr=lr, prior_sigma=1.0, noise_correction=correction), seed=2)
    sampler.v_hat[0].assign(tf.fill(w.shape, float(h)))
    xt, yt, mean_t = tf.constant(x), tf.constant(y), tf.constant(mean, tf.float32)

    @tf.function
    def run(n, record):
        s2 = tf.zeros(w.shape, tf.float64)
        for t in tf.range(n):
            grad = tf.matmul(tf.matmul(w, xt, transpose_b=True) - yt, xt) / BLR_NOISE**2  # full batch
            sampler.apply([grad], False, (t % resample_every == 0) if resample_every else False, False)
            if record:
                s2 += tf.square(tf.cast(w - mean_t, tf.float64))
        return s2

    run(tf.constant(warm), False)
    ratio = run(tf.constant(steps), True).numpy() / steps * h
    return float(ratio.mean()), float(ratio.std() / np.sqrt(ratio.size))


def test_variance_shortfall_vanishes_as_the_step_size_falls():
    """Full-batch gradients, no momentum resampling: the shortfall is the -lr^4 term of the injected noise (a
    correction for minibatch noise that is not there), ~ lr^2 sqrt(V) / (2 C): it falls 4x per halving of lr."""
    h = _blr_orthogonal()[3]
    shortfall = {}
    for lr in (2e-2, 1e-2, 5e-3):
        ratio, se = _variance_ratio(lr)
        assert abs(ratio - _predicted_ratio(lr, h)) < 4 * se + 2e-3, (lr, ratio, se, _predicted_ratio(lr, h))
        shortfall[lr] = 1.0 - ratio
    assert shortfall[2e-2] > 0.15  # 20% at lr 2e-2 on this problem (sqrt(V) = 50)
    assert 2.5 < shortfall[2e-2] / shortfall[1e-2] < 6.0  # quadratic in lr (4x), not linear (2x)
    assert shortfall[5e-3] < 0.5 * shortfall[1e-2] and abs(shortfall[5e-3]) < 0.03
    # Without the term the same run is unbiased up to the integrator's own O(lr^2 sqrt(V)) error (+0.5% here).
    ratio, se = _variance_ratio(2e-2, correction=False)
    assert abs(ratio - _predicted_ratio(2e-2, h, correction=False)) < 4 * se + 2e-3
    assert abs(ratio - 1.0) < 0.03


def test_momentum_resampling_every_10_steps_leaves_a_step_size_free_shortfall():
    """The training schedule resamples v ~ N(0, lr^2 M^-1) every 10 steps (spec 2.4): in this kick-then-drift
    integrator v is a half-step velocity, so a fresh v gets a full kick where leapfrog would give half, and the
    variance falls ~10% short at every step size (the original's behaviour; BNN/README.md, "Sampler bias")."""
    h = _blr_orthogonal()[3]
    expected = _predicted_ratio(5e-3, h, resample_every=10)
    assert 0.85 < expected < 0.92 and abs(_predicted_ratio(1e-3, h, False, 10) - expected) < 0.02
    ratio, se = _variance_ratio(5e-3, resample_every=10)
    assert abs(ratio - expected) < 4 * se + 2e-3, (ratio, se, expected)


def test_the_adaptation_all_but_absorbs_at_tau_one_and_keeps_only_the_last_gradient():
    """With r = 1/tau, tau = 1 all but absorbs (r ~ 1 sets g = d and V = d^2, so the next tau is ~1 again): V-hat
    tracks the last d^2, not its mean, and is frozen so at the end of burn-in (the MNIST BNN, DEVIATIONS.md)."""
    rng = np.random.default_rng(0)
    grads = np.exp(rng.normal(0.0, 0.3, size=(300, 64))).astype(np.float32)  # one sign, magnitudes vary
    theta = tf.Variable(tf.zeros([64]))
    sampler = ScaleAdaptedSGHMC([theta], SGHMCParams(lr=1e-6), seed=0)
    for g in grads:
        sampler.apply([tf.constant(g)], True, False, False)
    last, mean_sq = grads[-1].astype(np.float64) ** 2, (grads.astype(np.float64) ** 2).mean(0)
    np.testing.assert_allclose(sampler.tau[0].numpy(), 1.0, atol=1e-3)
    np.testing.assert_allclose(sampler.v_hat[0].numpy(), last, rtol=0.1)
    assert np.std(np.log(sampler.v_hat[0].numpy() / mean_sq)) > 0.4  # the spread of one draw of log d^2, not less
