"""The evaluation's ground truth: a VAEAC on the joint (x, y) and its under-VAEAC (spec 6.3; metrics 1-3)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

import data
from common import likelihoods as lk
from common.probability import decompose_entropy_cat, decompose_std_gauss
from common.training import traced


@dataclass(frozen=True)
class GroundTruth:
    """The ground truth: ``under`` (a ``VAEAC.under.UnderVAEAC``), whose ``base`` is the VAEAC on (x, y), y last."""

    under: object
    x_dim: int
    task: str

    @property
    def vaeac(self):
        return self.under.base

    @property
    def y_width(self) -> int:
        return self.vaeac.input_dim - self.x_dim

    def with_y_masked(self, x: np.ndarray) -> tuple[tf.Tensor, tf.Tensor]:
        """``(xy [B, D_xy], mask [B, D_xy])``: zeros in the y columns, which the mask marks missing (1)."""
        x = tf.cast(x, tf.float32)
        b = tf.shape(x)[0]
        xy = tf.concat([x, tf.zeros([b, self.y_width])], axis=1)
        mask = tf.concat([tf.zeros([b, self.x_dim]), tf.ones([b, self.y_width])], axis=1)
        return xy, mask

    def conditional_samples(self, x: tf.Tensor, n_samples: int, seed: tf.Tensor):
        """Graph body of :func:`gt_conditional_samples`, traced once per ground truth."""
        xy, mask = self.with_y_masked(x)
        raw = self.vaeac.inpaint(xy, mask, n_samples=n_samples, z_mean=False, mode="raw", seed=seed)  # [N, B, D']
        d = self.vaeac.input_dim
        if self.task == "classification":
            return tf.nn.softmax(raw[..., self.x_dim:d], axis=-1)
        if self.vaeac.pred_sig:
            loc, scale = lk.normal_parse_params(raw, lk.MIN_DECODER_SIGMA)
            return loc[..., self.x_dim], scale[..., self.x_dim]
        mu = raw[..., self.x_dim]
        return mu, tf.ones_like(mu)

    def log_px_chunk(self, x: tf.Tensor, n_samples: int, seed: tf.Tensor) -> tf.Tensor:
        """Graph body of :func:`log_px` for one chunk of rows, traced once per ground truth."""
        base, under = self.vaeac, self.under
        xy, mask = self.with_y_masked(x)
        b = tf.shape(xy)[0]
        loc, scale = under.u_mask_recognition(xy, mask)  # [B, U]
        eps = tf.random.stateless_normal((n_samples, b, under.latent_dim), seed)
        u = loc + scale * eps  # [N, B, U]
        out = under.u_regenerate(tf.reshape(u, (n_samples * b, -1)))
        out = tf.reshape(out, (n_samples, b, out.shape[-1]))  # [N, B, D']
        ll = lk.log_likelihood(base.likelihood, out, tf.broadcast_to(xy, (n_samples, b, base.input_dim)),
                               base.input_dim_vec, base.pred_sig)
        # gauss_cat: per variable, y is the last variable; otherwise per flat column, y after x_dim
        ll = tf.reduce_sum(ll[..., :-1] if base.likelihood == "gauss_cat" else ll[..., :self.x_dim], axis=-1)
        log_prior = tf.reduce_sum(lk.normal_log_prob(u, 0.0, 1.0), axis=-1)
        log_q = tf.reduce_sum(lk.normal_log_prob(u, loc, scale), axis=-1)
        w = ll + log_prior - log_q  # [N, B]
        return tf.reduce_logsumexp(w, axis=0) - math.log(n_samples)


def sample_artificial_xy(gt: GroundTruth, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``sample_artificial_dataset`` with the [nb] post-processing (spec 6.3): ``(x [n, x_dim], y, xy [n, D_xy])``.

    ``u ~ N(0, I)`` goes through the under-decoder and the base decoder; ``pred_sig`` bases are sampled from their
    Normal, gauss_cat ones by ``selective_softmax(mode="sample")`` (trap 10). y: the sampled class ``[n]``, the
    noise-free decoder output (gauss_cat regression, as [nb]) or the Gaussian sample, ``[n, 1]``."""
    base = gt.vaeac
    seeds = tf.random.experimental.stateless_split(tf.constant([seed, 7], tf.int64), 2)
    out = gt.under.sample(n, seeds[0])  # [n, D'] raw base output
    if base.likelihood == "gauss_cat":
        xy = lk.selective_softmax(out, base.input_dim_vec, "sample", seeds[1])
        y_part = xy[:, gt.x_dim:] if gt.task == "classification" else out[:, gt.x_dim:base.input_dim]
    elif base.pred_sig:
        loc, scale = lk.normal_parse_params(out, lk.MIN_DECODER_SIGMA)
        xy = loc + scale * tf.random.stateless_normal(tf.shape(loc), seeds[1])
        y_part = xy[:, gt.x_dim:]
    else:
        raise ValueError("the ground truth must be a gauss_cat VAEAC or a Gaussian one with pred_sig")
    xy = xy.numpy().astype(np.float32)
    if gt.task == "classification":
        y = np.argmax(y_part.numpy(), axis=1).astype(np.float32)  # [n]
    else:
        y = np.asarray(y_part, np.float32).reshape(n, -1)  # [n, 1]
    return xy[:, :gt.x_dim].copy(), y, xy


def make_artificial_dataset(gt: GroundTruth, real: data.Dataset, seed: int, name: str | None = None) -> data.Dataset:
    """Draws ``N_train + N_test`` points shaped like ``real`` (normalized units); the first ``N_train`` train ([nb])."""
    n_train, n_test = len(real.x_train), len(real.x_test)
    x, y, _ = sample_artificial_xy(gt, n_train + n_test, seed)
    return artificial_dataset(real, x[:n_train], y[:n_train], x[n_train:], y[n_train:], seed, name)


def artificial_dataset(real: data.Dataset, x_train, y_train, x_test, y_test, seed: int,
                       name: str | None = None) -> data.Dataset:
    """Artificial points as a :class:`data.Dataset` in the layout of ``real``, named ``art_<real name>`` by default."""
    d = real.x_dim
    return data.Dataset(
        name=name or f"art_{real.name}", task=real.task, x_train=x_train, y_train=y_train, x_test=x_test,
        y_test=y_test, input_dim_vec=tuple(real.input_dim_vec), feature_names=tuple(real.feature_names),
        x_mean=np.zeros(d), x_std=np.ones(d), y_mean=np.zeros(1), y_std=np.ones(1), variables=tuple(real.variables),
        target_name=real.target_name, class_names=real.class_names, info={"artificial_from": real.name, "seed": seed})


def gt_conditional_samples(gt: GroundTruth, x: np.ndarray, n_samples: int, seed: int):
    """Samples of ``p_gt(y | x)`` from the base VAEAC's prior net, y masked (spec 6.3): probabilities ``[N, B, C]``, or
    ``(mu, sigma)`` each ``[N, B]`` (sigma = 1 for gauss_cat bases)."""
    # as a graph, with the same random numbers as eager
    return traced(gt, "conditional_samples")(tf.constant(np.asarray(x, np.float32)), n_samples,
                                             tf.constant([seed, 11], tf.int64))


def summarize_conditional(samples, task: str) -> tuple[np.ndarray, np.ndarray]:
    """``(uncertainty [B], target [B])``: entropy of the mean probabilities and its argmax, or ``sqrt(mean sigma^2 + var
    mu)`` and the mean of mu."""
    if task == "classification":
        probs = tf.convert_to_tensor(samples)
        total = decompose_entropy_cat(probs)[0]
        return total.numpy(), np.argmax(tf.reduce_mean(probs, axis=0).numpy(), axis=-1)
    mu, sigma = samples
    return decompose_std_gauss(mu, sigma)[0].numpy(), tf.reduce_mean(mu, axis=0).numpy()


def gt_predictive(gt: GroundTruth, x: np.ndarray, n_samples: int = 500, seed: int = 0,
                  max_rows: int = 1 << 17) -> tuple[np.ndarray, np.ndarray]:
    """GT uncertainty and GT label/mean ``[n]`` of every row (metric 1 and the reference of metric 2)."""
    x = np.asarray(x, np.float32)
    step = max(1, max_rows // n_samples)
    parts = [summarize_conditional(gt_conditional_samples(gt, x[i:i + step], n_samples, seed + i), gt.task)
             for i in range(0, len(x), step)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def log_px(gt: GroundTruth, x: np.ndarray, n_samples: int = 1000, seed: int = 0,
           max_rows: int = 1 << 16) -> np.ndarray:
    """Importance-sampled ``log p_gt(x)`` ``[n]`` under the under-VAEAC (metric 3, ``get_VAEAC_px[_gauss_cat]``); biased
    low (Jensen's inequality), less so as ``n_samples`` grows."""
    x = np.asarray(x, np.float32)
    step = max(1, max_rows // n_samples)
    chunk = traced(gt, "log_px_chunk")  # as a graph, as gt_conditional_samples
    return np.concatenate([chunk(tf.constant(x[i:i + step]), n_samples, tf.constant([seed, i], tf.int64)).numpy()
                           for i in range(0, len(x), step)])
