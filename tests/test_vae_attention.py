"""Attention maps (VAE.attention): equal an explicit NumPy computation on a tiny ExpVAE, are independent of the batch,
are invariant to flipping the sign of the latent means (abs map), and have the documented shapes and range."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from common.seeding import set_seed
from VAE.attention import attention_map, attention_maps, minmax
from VAE.expvae import ExpVAE


@pytest.fixture(scope="module")
def tiny():
    model = ExpVAE(latent_dim=3, filters=(2, 4), hidden_dim=6)
    # N(0, 0.5^2) weights and binary images: both signs of A, of the hidden pre-activations and of the coarse
    # map occur (checked in the tests), so abs vs ReLU and every ReLU mask matter
    rs = np.random.RandomState(0)
    for v in model.trainable_variables:
        v.assign(rs.normal(0, 0.5, v.shape).astype(np.float32))
    x = (rs.uniform(size=(5, 784)) > 0.7).astype(np.float32)
    return model, x


def _upsample_np(maps: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling with half-pixel centres and edge clamping (PyTorch ``align_corners=False``), float64."""
    n = maps.shape[-1]
    src = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
    lo = np.floor(src).astype(int)
    hi, w = np.minimum(lo + 1, n - 1), src - lo
    rows = maps[:, lo, :] * (1 - w)[None, :, None] + maps[:, hi, :] * w[None, :, None]
    return rows[:, :, lo] * (1 - w)[None, None, :] + rows[:, :, hi] * w[None, None, :]


def _explicit_jacobian(model, a: np.ndarray) -> np.ndarray:
    """d mu_i / dA by hand for ``enc_b = mu_head(relu(fc(flatten(relu(A)))))``: ``[B, L, h, w, K]``, float64."""
    fc_w, fc_b = (v.numpy().astype(np.float64) for v in model.enc_b.get_layer("fc").weights)
    mu_w = model.enc_b.get_layer("mu").weights[0].numpy().astype(np.float64)  # [H, L]
    flat = np.maximum(a, 0).reshape(len(a), -1)  # Keras flattens H, W, C
    hidden_on = (flat @ fc_w + fc_b > 0).astype(np.float64)  # [B, H]
    assert 0 < hidden_on.mean() < 1
    d_flat = np.einsum("fh,bh,hl->blf", fc_w, hidden_on, mu_w)  # [B, L, F]
    return d_flat.reshape(len(a), mu_w.shape[1], *a.shape[1:]) * (a > 0)[:, None]


def test_code_map_equals_explicit_computation(tiny):
    model, x = tiny
    a = model.enc_a(x).numpy().astype(np.float64)  # [B, 7, 7, K]
    assert (a < 0).any() and (a > 0).any()  # the target is pre-ReLU
    grad = _explicit_jacobian(model, a).sum(axis=1)  # d(sum_i mu_i)/dA, [B, 7, 7, K]
    alpha = grad.mean(axis=(1, 2))  # [B, K]
    coarse = np.einsum("bhwk,bk->bhw", a, alpha)
    assert (coarse < 0).any() and (coarse > 0).any()  # abs vs ReLU and its order matter on this net
    expected = np.abs(_upsample_np(coarse, 28))
    raw = attention_map(model, x, normalize=False).numpy()
    np.testing.assert_allclose(raw, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    low = expected.min(axis=(1, 2), keepdims=True)
    expected_norm = (expected - low) / (expected - low).max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(attention_map(model, x).numpy(), expected_norm, atol=1e-4)
    # the original's batch-wide RMS rescale divides every raw map by the same scalar
    rms = np.sqrt(np.mean(grad ** 2)) + 1e-5
    np.testing.assert_allclose(attention_map(model, x, normalize=False, batch_rms=True).numpy(), expected / rms,
                               rtol=1e-4, atol=1e-6 * np.abs(expected).max() / rms)


def test_paper_map_equals_explicit_computation(tiny):
    model, x = tiny
    a = model.enc_a(x).numpy().astype(np.float64)
    alpha = _explicit_jacobian(model, a).mean(axis=(2, 3))  # [B, L, K]
    per_dim = np.maximum(np.einsum("bhwk,bik->bihw", a, alpha), 0)  # [B, L, 7, 7]
    expected = _upsample_np(per_dim.mean(axis=1), 28)
    np.testing.assert_allclose(attention_map(model, x, method="paper", normalize=False).numpy(), expected,
                               rtol=1e-4, atol=1e-6 * expected.max())


def test_ablations_follow_their_definitions(tiny):
    model, x = tiny
    signed_ok = attention_map(model, x, normalize=False).numpy()
    relu = attention_map(model, x, normalize=False, rectify="relu").numpy()
    before = attention_map(model, x, normalize=False, upsample_first=False).numpy()
    # ReLU keeps one sign of the same upsampled signed map; |Up(L)| <= Up(|L|) since bilinear weights are convex
    assert np.all((np.isclose(relu, signed_ok, atol=1e-6)) | (relu == 0))
    assert np.all(before >= signed_ok - 1e-6) and np.any(before > signed_ok + 1e-4)
    with pytest.raises(ValueError, match="method"):
        attention_map(model, x, method="gradcam++")
    with pytest.raises(ValueError, match="rectifier"):
        attention_map(model, x, rectify="square")


@pytest.mark.parametrize("method", ["code", "paper"])
def test_maps_do_not_depend_on_the_rest_of_the_batch(tiny, method):
    model, x = tiny
    other = np.random.RandomState(9).uniform(size=(7, 784)).astype(np.float32)
    for normalize in (True, False):
        alone = attention_map(model, x[2:3], method=method, normalize=normalize).numpy()[0]
        in_batch = attention_map(model, x, method=method, normalize=normalize).numpy()[2]
        with_others = attention_map(model, np.concatenate([other, x[2:3]]), method=method,
                                    normalize=normalize).numpy()[-1]
        np.testing.assert_allclose(in_batch, alone, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(with_others, alone, rtol=1e-5, atol=1e-7)
    batched = attention_maps(model, x, batch_size=2, method=method).numpy()
    np.testing.assert_allclose(batched, attention_map(model, x, method=method).numpy(), atol=1e-6)


def test_batch_rms_couples_raw_maps_but_not_normalised_ones(tiny):
    """The original's quirk (spec trap 5): raw magnitudes depend on the batch; the displayed map does not."""
    model, x = tiny
    raw_alone = attention_map(model, x[:1], normalize=False, batch_rms=True).numpy()[0]
    raw_batch = attention_map(model, x, normalize=False, batch_rms=True).numpy()[0]
    assert not np.allclose(raw_alone, raw_batch, rtol=1e-3)
    np.testing.assert_allclose(attention_map(model, x[:1], batch_rms=True).numpy()[0],
                               attention_map(model, x, batch_rms=True).numpy()[0], atol=1e-5)


def test_abs_map_is_invariant_to_negating_the_mean_head(tiny):
    model, x = tiny
    head = model.enc_b.get_layer("mu")
    before = {k: attention_map(model, x, normalize=False, rectify=k).numpy() for k in ("abs", "relu")}
    paper_before = attention_map(model, x, method="paper", normalize=False).numpy()
    saved = [w.numpy() for w in head.weights]
    try:
        for w in head.weights:
            w.assign(-w)
        after = {k: attention_map(model, x, normalize=False, rectify=k).numpy() for k in ("abs", "relu")}
        paper_after = attention_map(model, x, method="paper", normalize=False).numpy()
    finally:
        for w, v in zip(head.weights, saved):
            w.assign(v)
    np.testing.assert_allclose(after["abs"], before["abs"], rtol=1e-5, atol=1e-7)
    # the same flip changes the ReLU variant and the paper's per-dimension ReLU map: the test can fail
    assert not np.allclose(after["relu"], before["relu"], atol=1e-4)
    assert not np.allclose(paper_after, paper_before, atol=1e-4)


def test_shapes_and_range_on_the_full_size_model():
    set_seed(0)
    model = ExpVAE()
    x = np.random.RandomState(0).uniform(size=(3, 784)).astype(np.float32)
    for method in ("code", "paper"):
        maps = attention_map(model, x, method=method).numpy()
        assert maps.shape == (3, 28, 28) and maps.dtype == np.float32
        assert np.all(maps >= 0) and np.all(maps <= 1)
        np.testing.assert_allclose(maps.min(axis=(1, 2)), 0, atol=1e-6)
        np.testing.assert_allclose(maps.max(axis=(1, 2)), 1, atol=1e-5)
        raw = attention_map(model, x, method=method, normalize=False).numpy()
        assert raw.shape == (3, 28, 28) and np.all(raw >= 0) and np.isfinite(raw).all()
        assert attention_map(model, x[:1], method=method).shape == (1, 28, 28)  # the original crashes on B = 1


def test_minmax_of_a_constant_map_is_finite():
    out = minmax(tf.ones([2, 4, 4])).numpy()
    assert np.isfinite(out).all() and np.all(out == 0)


# ------------------------------------------------------------------------------------- evaluation protocol
def _digit_like(rs, n):
    """Blobby 28x28 'digits' with ink in the centre, flat ``[n, 784]``."""
    images = np.zeros((n, 28, 28), np.float32)
    for im in images:
        r, c = rs.randint(6, 12, size=2)
        im[r:r + 12, c:c + 10] = rs.uniform(0.6, 1.0, size=(12, 10))
    return images.reshape(n, -1)


def test_synthetic_anomalies_follow_the_stated_protocol():
    from VAE.attention_eval import Protocol, additive_anomaly, subtractive_anomaly

    p = Protocol()
    rs = np.random.RandomState(0)
    bases, sources = _digit_like(rs, 6).reshape(-1, 28, 28), _digit_like(rs, 4).reshape(-1, 28, 28)
    draws = [additive_anomaly(b, sources, np.random.RandomState(k), p) for k, b in enumerate(bases)]
    for base, (image, gt) in zip(bases, draws):
        assert np.all(image >= base) and gt.sum() >= p.min_gt  # pixel-wise max: only adds ink
        np.testing.assert_array_equal(gt, image - base > p.gt_threshold)
        changed = np.argwhere(image != base)
        assert np.ptp(changed, axis=0).max() < p.crop  # one crop x crop patch
    again = additive_anomaly(bases[0], sources, np.random.RandomState(0), p)
    np.testing.assert_array_equal(again[0], draws[0][0])  # seeded
    for base in bases:
        image, gt = subtractive_anomaly(base, rs, p)
        assert np.all(image <= base) and gt.sum() >= p.min_ink and np.all(image[gt] == 0)
        np.testing.assert_array_equal(gt, base - image > p.gt_threshold)
    with pytest.raises(ValueError, match="ink"):
        subtractive_anomaly(np.zeros((28, 28), np.float32), rs, p)


def test_pixel_aurocs_and_aggregation():
    from VAE.attention_eval import aggregate, normalize_per_image, pixel_aurocs

    rs = np.random.RandomState(0)
    gt = np.zeros((3, 28, 28), bool)
    gt[:, 5:9, 5:9] = True
    perfect = gt * 2.0 + rs.uniform(0, 1, gt.shape)  # every GT pixel above every other pixel
    assert pixel_aurocs(perfect, gt) == {"pooled": 1.0, "per_image_mean": 1.0}
    assert pixel_aurocs(-perfect, gt) == {"pooled": 0.0, "per_image_mean": 0.0}
    # per-image scaling changes nothing per image; the pooled metric sees maps after per-image min-max
    scaled = perfect * np.array([1.0, 10.0, 100.0])[:, None, None]
    assert pixel_aurocs(scaled, gt)["per_image_mean"] == 1.0
    norm = normalize_per_image(scaled)
    np.testing.assert_allclose(norm.min((1, 2)), 0) and np.testing.assert_allclose(norm.max((1, 2)), 1)
    summary = aggregate({0: {"a": {"x": 1.0}}, 1: {"a": {"x": 3.0}}, 2: {"a": {"x": 2.0}}})
    assert summary["a/x"] == {"mean": 2.0, "sd": 1.0, "min": 1.0, "max": 3.0}


# ------------------------------------------------------------------- anomaly attention (the paper's Eq. 4)
class _LinearEncoder:
    """A hand-checkable encoder: a 2x2 one-channel image ``x`` ``[B, 4]`` is its own target ``A`` ``[B, 2, 2, 1]``;
    ``mu = flatten(A) @ W`` with ``W`` ``[4, 2]`` and a constant ``logvar``. The 2x2 "upsampling" is the identity, so
    the anomaly map is ``ReLU((sum_i u_i c_i) A)`` with ``c_i = mean_pixels W[:, i]``."""

    W = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 2.0]], np.float32)  # c = (1, 0.5)

    def __init__(self, logvar=(0.0, 0.0)):
        self.logvar = tf.constant(logvar, tf.float32)

    def enc_a(self, x):
        return tf.reshape(x, [-1, 2, 2, 1])

    def enc_b(self, a):
        mu = tf.reshape(a, [-1, 4]) @ self.W
        return mu, tf.broadcast_to(self.logvar, tf.shape(mu))


X_HAND = np.array([[1.0, -1.0, 2.0, 0.0]], np.float32)  # mu = (2, 0), sigma^2 = (1, 1)


def _aggregate(mean, var):
    from VAE.attention import AggregatePosterior

    return AggregatePosterior(np.float32(mean), np.float32(var), 1)


def test_aggregate_posterior_is_the_moment_matched_mixture():
    from VAE.attention import aggregate_posterior

    model = _LinearEncoder(logvar=(0.0, np.log(4.0)))
    x = np.array([[2.0, 0, 0, 0], [0, 0, 0, 1.0], [1.0, 1.0, 1.0, 0.0]], np.float32)  # mu = (2,0), (1,2), (3,0)
    agg = aggregate_posterior(model, x)
    # mean of means; mean of (variance + mean^2) minus mean^2 (= mean variance + variance of the means)
    np.testing.assert_allclose(agg.mean, [2.0, 2.0 / 3.0], rtol=1e-6)
    np.testing.assert_allclose(agg.var, [1.0 + 2.0 / 3.0, 4.0 + 8.0 / 9.0], rtol=1e-6)
    assert agg.n_images == 3
    batched = aggregate_posterior(model, x, batch_size=2)
    np.testing.assert_allclose(batched.mean, agg.mean) and np.testing.assert_allclose(batched.var, agg.var)
    with pytest.raises(ValueError, match="at least one"):
        aggregate_posterior(model, x[:0])


def test_anomaly_map_by_hand_sign_follows_the_difference():
    """u = E[D] = mu_x - mu_agg: the map is ReLU(s A) with s = u . c, c = (1, 0.5)."""
    from VAE.attention import difference_distribution

    model = _LinearEncoder()
    above = _aggregate([1.0, 1.0], [0.25, 0.5])  # loc = (1, -1): s = 1 - 0.5 = 0.5
    loc, var = difference_distribution(*model.enc_b(model.enc_a(X_HAND)), above)
    np.testing.assert_allclose(loc.numpy(), [[1.0, -1.0]]) and np.testing.assert_allclose(var.numpy(), [[1.25, 1.5]])
    raw = attention_map(model, X_HAND, method="anomaly", aggregate=above, draws=0, normalize=False).numpy()
    np.testing.assert_allclose(raw.reshape(-1), [0.5, 0.0, 1.0, 0.0], atol=1e-6)  # the positive pixels of A
    below = _aggregate([3.0, -1.0], [0.25, 0.5])  # loc = (-1, 1): s = -0.5, the other sign of A lights up
    raw = attention_map(model, X_HAND, method="anomaly", aggregate=below, draws=0, normalize=False).numpy()
    np.testing.assert_allclose(raw.reshape(-1), [0.0, 0.5, 0.0, 0.0], atol=1e-6)
    # the code map's rectifier (abs after upsampling) is blind to that sign
    absolute = attention_map(model, X_HAND, method="anomaly", aggregate=below, draws=0, normalize=False,
                             rectify="abs", upsample_first=True).numpy()
    np.testing.assert_allclose(absolute.reshape(-1), [0.5, 0.5, 1.0, 0.0], atol=1e-6)
    # reverse: -u (the spec's aggregate - test), which lights up the other sign: the "below" map of "above"
    reversed_ = attention_map(model, X_HAND, method="anomaly", aggregate=above, draws=0, normalize=False,
                              reverse=True).numpy()
    np.testing.assert_allclose(reversed_.reshape(-1), [0.0, 0.5, 0.0, 0.0], atol=1e-6)


def test_anomaly_map_draws_are_weighted_by_the_difference_distribution_and_seeded():
    from VAE.attention import anomaly_noise

    model = _LinearEncoder()
    agg = _aggregate([1.0, 1.0], [0.25, 0.5])  # loc = (1, -1), scale = sqrt(1.25, 1.5)
    c, a = np.array([1.0, 0.5]), X_HAND.reshape(-1).astype(np.float64)
    eps = anomaly_noise(1, 3, 2, seed=7)[0]  # [draws, L]
    u = np.array([1.0, -1.0]) + np.sqrt([1.25, 1.5]) * eps
    expected = np.mean([np.maximum((ud @ c) * a, 0) for ud in u], axis=0)
    assert len({np.sign(ud @ c) for ud in u}) == 2  # the draws disagree in sign: averaging after ReLU matters
    raw = attention_map(model, X_HAND, method="anomaly", aggregate=agg, draws=3, seed=7, normalize=False).numpy()
    np.testing.assert_allclose(raw.reshape(-1), expected, rtol=1e-5, atol=1e-6)
    again = attention_map(model, X_HAND, method="anomaly", aggregate=agg, draws=3, seed=7, normalize=False).numpy()
    np.testing.assert_array_equal(again, raw)  # seeded
    other = attention_map(model, X_HAND, method="anomaly", aggregate=agg, draws=3, seed=8, normalize=False).numpy()
    assert not np.allclose(other, raw)
    with pytest.raises(ValueError, match="noise"):
        attention_map(model, X_HAND, method="anomaly", aggregate=agg, noise=np.zeros((1, 1, 3), np.float32))
    with pytest.raises(ValueError, match="aggregate"):
        attention_map(model, X_HAND, method="anomaly")


def test_test_posterior_equal_to_the_aggregate_gives_zero_mean_differences():
    from VAE.attention import anomaly_noise, difference_distribution

    model = _LinearEncoder(logvar=(np.log(0.5), np.log(2.0)))
    same = _aggregate([2.0, 0.0], [0.5, 2.0])  # exactly the test image's posterior
    loc, var = difference_distribution(*model.enc_b(model.enc_a(X_HAND)), same)
    np.testing.assert_array_equal(loc.numpy(), 0.0)
    np.testing.assert_allclose(var.numpy(), [[1.0, 4.0]], rtol=1e-6)  # twice each variance
    mean_map = attention_map(model, X_HAND, method="anomaly", aggregate=same, draws=0, normalize=False).numpy()
    np.testing.assert_array_equal(mean_map, 0.0)
    # a draw is then pure noise of the summed variance: u = (1, 2) * eps
    u = np.array([1.0, 2.0]) * anomaly_noise(1, 1, 2, seed=3)[0, 0]
    drawn = attention_map(model, X_HAND, method="anomaly", aggregate=same, seed=3, normalize=False).numpy()
    np.testing.assert_allclose(drawn.reshape(-1), np.maximum((u @ [1.0, 0.5]) * X_HAND[0], 0), rtol=1e-5, atol=1e-6)


def test_anomaly_map_equals_explicit_computation_on_the_tiny_expvae(tiny):
    from VAE.attention import aggregate_posterior, anomaly_noise

    model, x = tiny
    agg = aggregate_posterior(model, np.random.RandomState(1).uniform(size=(9, 784)).astype(np.float32))
    mu, logvar = (t.numpy().astype(np.float64) for t in model.encode(x))
    eps = anomaly_noise(len(x), 2, 3, seed=5)
    u = (mu - agg.mean)[:, None] + np.sqrt(np.exp(logvar) + agg.var)[:, None] * eps  # [B, 2, L]
    a = model.enc_a(x).numpy().astype(np.float64)
    alpha = np.einsum("bdi,bihwk->bdk", u, _explicit_jacobian(model, a)) / 49  # spatial mean of sum_i u_i dmu_i/dA
    coarse = np.einsum("bhwk,bdk->bdhw", a, alpha)
    assert (coarse < 0).any() and (coarse > 0).any()
    expected = _upsample_np(np.maximum(coarse, 0).reshape(-1, 7, 7), 28).reshape(len(x), 2, 28, 28).mean(1)
    raw = attention_map(model, x, method="anomaly", aggregate=agg, draws=2, seed=5, normalize=False).numpy()
    np.testing.assert_allclose(raw, expected, rtol=1e-4, atol=1e-6 * expected.max())
    # noise for the whole set is drawn at once: no dependence on the batch size
    batched = attention_maps(model, x, batch_size=2, method="anomaly", aggregate=agg, draws=2, seed=5).numpy()
    np.testing.assert_allclose(batched, attention_map(model, x, method="anomaly", aggregate=agg, draws=2,
                                                      seed=5).numpy(), atol=1e-6)
    # back-propagating u = 1 with the code map's rectifier is the code map
    ones = (1.0 - (mu - agg.mean)) / np.sqrt(np.exp(logvar) + agg.var)
    as_code = attention_map(model, x, method="anomaly", aggregate=agg, normalize=False, rectify="abs",
                            upsample_first=True, noise=ones[:, None].astype(np.float32)).numpy()
    np.testing.assert_allclose(as_code, attention_map(model, x, normalize=False).numpy(), rtol=1e-4, atol=1e-6)


def test_one_class_protocol_data_and_the_new_maps(tiny):
    """outlier_digit=None: every other digit is an outlier; the anomaly map and the mean-inlier baseline appear."""
    from types import SimpleNamespace

    from VAE.attention_eval import Protocol, evaluate_model, make_eval_data, score_maps

    model, _ = tiny
    rs = np.random.RandomState(0)
    y_train, y_test = np.repeat(np.arange(10), 3), np.repeat(np.arange(10), 2)
    ds = SimpleNamespace(name="toy", x_train=_digit_like(rs, 30), y_train=y_train.astype(np.float32),
                         x_test=_digit_like(rs, 20), y_test=y_test.astype(np.float32))
    p = Protocol(inlier_digit=4, outlier_digit=None)
    data = make_eval_data(ds, p)
    assert len(data.inliers) == 2 and len(data.outliers) == 18 and len(data.train_inliers) == 3
    np.testing.assert_array_equal(data.train_inliers, ds.x_train[y_train == 4])
    background = data.train_inliers.mean(0)
    maps = score_maps(model, data.additive, p, 0, background=background)
    np.testing.assert_allclose(maps["baseline_mean_inlier"], np.abs(data.additive - background).reshape(-1, 28, 28))
    assert "attention_anomaly" not in maps
    results = evaluate_model(model, data, p, seed=0)
    for kind in ("additive", "subtractive"):
        assert {"attention_anomaly", "ablation_anomaly_mean", "ablation_anomaly_abs", "ablation_anomaly_reversed",
                "baseline_mean_inlier"} <= set(results["pixel"][kind])
    assert {"loss", "bce", "attention_anomaly_max", "attention_anomaly_mean"} <= set(results["image"])


def test_image_aurocs_count_the_outliers_as_positives(monkeypatch):
    """An anomaly score higher on every outlier gives AUROC 1, one higher on every inlier 0 (labels not swapped)."""
    from VAE import attention_eval

    inliers, outliers = np.zeros((3, 784), np.float32), np.ones((4, 784), np.float32)
    monkeypatch.setattr(attention_eval, "image_scores", lambda model, x, aggregate=None, seed=0: {
        "up": x.mean(axis=1), "down": -x.mean(axis=1)})
    assert attention_eval.image_aurocs(None, inliers, outliers) == {"up": 1.0, "down": 0.0}
