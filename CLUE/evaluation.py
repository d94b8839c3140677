"""The paper's computational evaluation framework: artificial data with a known ground truth (spec 6.3, 6.4).

A VAEAC trained on the joint (x, y) of a real dataset, and an "under-VAEAC" on its latent space, define a generative
ground truth ``p_gt(x, y) = int N(u; 0, I) p_VAEAC(x, y | z = g(u)) du`` (section 5.1 and appendix E of [1]).
Artificial data are drawn from it; a BNN, a VAE (for CLUE) and a VAEAC (for U-FIDO in-filling) are trained on them;
and explanations of the BNN's uncertain test points are scored against the ground truth:

1. **GT uncertainty reduction** ``dH = H_gt(x0) - H_gt(xc)`` per point, where ``H_gt`` is the entropy of the
   ground-truth conditional ``p_gt(y | x)`` (classification) or its total std (regression). ``p_gt(y | x)`` comes
   from the *base* VAEAC's prior network with y masked, with ``n_gt_samples`` prior draws (spec trap 30);
   gauss_cat regression uses sigma = 1.
2. **Epistemic error change** ``d_err = err(X0) - err(Xc)``: error rate (classification) or RMS (regression) of the
   BNN's predictive mean against the ground-truth label (argmax / mean of ``p_gt(y | x)``), each set scored against
   the ground truth at its own inputs (``evaluate_epistemic_explanation_*(BNN, VAEAC, X)`` called on X0, then Xc).
3. **In-distribution-ness** ``log p_gt(x)``, importance-sampled with the under-VAEAC (``get_VAEAC_px``):
   ``u_i ~ q(u | x)`` (base prior-net mean -> under-encoder), ``w_i = log p(x | u_i) + log N(u_i) - log q(u_i)``,
   ``log p(x) ~ logsumexp_i w_i - log N``. The x log-likelihood is the VAEAC's own (for gauss_cat the original's
   unnormalised ``-(x - mu)^2`` on continuous columns; the y variable is excluded, ``override_y_dims=1``).
4. **Distance** ``sum_j |x0_j - xc_j|`` over flat columns.

All values are in the normalised units of the data.

#### References
[1] Antorán, J., Bhatt, U., Adel, T., Weller, A., Hernández-Lobato, J. M. "Getting a CLUE: A Method for Explaining
    Uncertainty Estimates." ICLR 2021 (section 5.1, appendix E).
[2] Ivanov, Figurnov & Vetrov. Variational Autoencoder with Arbitrary Conditioning. ICLR 2019.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

import data
from CLUE.baselines import UFIDOConfig, localized_sensitivity, u_fido
from CLUE.compat import OriginalGradientMLP
from CLUE.explainer import CLUE, CLUEConfig, CLUEWeights, uncertainties
from common import likelihoods as lk
from common.probability import decompose_entropy_cat, decompose_std_gauss
from common.training import traced

logger = logging.getLogger(__name__)

TARGETS = ("aleatoric", "epistemic")
METHODS = ("sensitivity", "clue", "ufido")
BNN_GRADIENTS = ("exact", "torch13")


@dataclass(frozen=True)
class DatasetSettings:
    """Per-dataset values of [nb]: selection thresholds (BNN U_ale >= tau_a, U_epi >= tau_e; entropies for
    classification, stds for regression) and the single-run CLUE lambdas (spec 5.3, 6.4)."""

    tau_aleatoric: float
    tau_epistemic: float
    lam_aleatoric: float
    lam_epistemic: float


SETTINGS = {
    "compas": DatasetSettings(0.15, 0.02, 1.0, 0.5),
    "wine": DatasetSettings(0.8, 0.35, 5.0 / 3.0, 1.25),
    "credit": DatasetSettings(0.45, 0.008, 3.0, 3.0),
    "lsat": DatasetSettings(0.68, 0.07, 0.375, 0.25),
}


# ------------------------------------------------------------------------------------------------ ground truth
@dataclass(frozen=True)
class GroundTruth:
    """The ground-truth pair: ``under.base`` is the VAEAC on the joint (x, y) with y last (spec 6.3).

    Attributes:
      under: the trained ``VAEAC.under.UnderVAEAC``.
      x_dim: flat width of x; the y variable occupies the remaining columns.
      task: ``"classification"`` or ``"regression"``.
    """

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
    """``sample_artificial_dataset`` with the [nb] post-processing (spec 6.3).

    ``u ~ N(0, I)`` is decoded by the under-decoder and the base decoder. Gaussian (``pred_sig``) bases are sampled
    from their Normal; gauss_cat bases through ``selective_softmax(mode="sample")``: a Gumbel-max one-hot per
    categorical variable and N(0, 1) noise on every continuous column (trap 10). Labels: the sampled one-hot's class
    (classification), the *noise-free* decoder output (gauss_cat regression, as [nb]), or the Gaussian sample (wine).

    Returns:
      ``(x float32 [n, x_dim], y, xy float32 [n, D_xy])``; y is float32 ``[n]`` class indices or ``[n, 1]``.
    """
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


def make_artificial_dataset(gt: GroundTruth, real: data.Dataset, seed: int, name: str | None = None,
                            register: bool = True) -> data.Dataset:
    """Draws ``N_train + N_test`` points of the real data; the first ``N_train`` are the training split ([nb]).

    The result has the real dataset's flat layout, variables and class names, in normalised units (means 0,
    stds 1), and is registered with :func:`data.register` (as ``art_<real name>`` by default) so that the training
    scripts accept it by name.
    """
    n_train, n_test = len(real.x_train), len(real.x_test)
    x, y, _ = sample_artificial_xy(gt, n_train + n_test, seed)
    d = x.shape[1]
    ds = data.Dataset(
        name=name or f"art_{real.name}", task=real.task, x_train=x[:n_train], y_train=y[:n_train],
        x_test=x[n_train:], y_test=y[n_train:], input_dim_vec=tuple(real.input_dim_vec),
        feature_names=tuple(real.feature_names), x_mean=np.zeros(d), x_std=np.ones(d), y_mean=np.zeros(1),
        y_std=np.ones(1), variables=tuple(real.variables), target_name=real.target_name,
        class_names=real.class_names, info={"artificial_from": real.name, "seed": seed})
    if register:
        data.register(ds, overwrite=True)
    return ds


def gt_conditional_samples(gt: GroundTruth, x: np.ndarray, n_samples: int, seed: int):
    """Samples of the ground-truth conditional ``p_gt(y | x)`` from the base VAEAC's prior net, y masked (spec 6.3).

    Returns:
      classification: probabilities float32 ``[N, B, C]``; regression: ``(mu [N, B], sigma [N, B])`` with
      ``sigma = 1`` for gauss_cat bases and the decoder scale for ``pred_sig`` bases.
    """
    # as a graph: about two thirds of the eager time, with the same random numbers
    return traced(gt, "conditional_samples")(tf.constant(np.asarray(x, np.float32)), n_samples,
                                             tf.constant([seed, 11], tf.int64))


def summarize_conditional(samples, task: str) -> tuple[np.ndarray, np.ndarray]:
    """``(uncertainty [B], target [B])`` of conditional samples: entropy of the mean probabilities and its argmax
    (classification), or the total std ``sqrt(mean sigma^2 + var mu)`` and the mean of mu (regression)."""
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
    """Importance-sampled ``log p_gt(x)`` ``[n]`` under the under-VAEAC (metric 3, ``get_VAEAC_px[_gauss_cat]``).

    The proposal is ``q(u | x) = under-encoder(base prior-net mean given x, y masked)``; see the module docstring.
    By Jensen's inequality the estimate is biased low, and the bias shrinks as ``n_samples`` grows.
    """
    x = np.asarray(x, np.float32)
    step = max(1, max_rows // n_samples)
    chunk = traced(gt, "log_px_chunk")  # as a graph, as gt_conditional_samples
    return np.concatenate([chunk(tf.constant(x[i:i + step]), n_samples, tf.constant([seed, i], tf.int64)).numpy()
                           for i in range(0, len(x), step)])


# ------------------------------------------------------------------------------------------------ selection
def bnn_uncertainties(bnn, x: np.ndarray, batch_size: int = 2048) -> dict[str, np.ndarray]:
    """``total``, ``aleatoric``, ``epistemic`` ``[n]`` and ``preds`` (mean probs ``[n, C]`` or mean ``[n]``)."""
    parts = [uncertainties(bnn, tf.constant(np.asarray(x[i:i + batch_size], np.float32)))
             for i in range(0, len(x), batch_size)]
    keys = ("total", "aleatoric", "epistemic", "preds")
    return {k: np.concatenate([p[j].numpy() for p in parts]) for j, k in enumerate(keys)}


def select_uncertain(u: dict[str, np.ndarray], target: str, threshold: float) -> np.ndarray:
    """Indices of the rows whose BNN ``target`` uncertainty is >= ``threshold`` (spec 6.4)."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    return np.flatnonzero(u[target] >= threshold)


def prediction_error(preds: np.ndarray, gt_target: np.ndarray, task: str) -> float:
    """Error rate of the BNN's argmax against the GT label, or the RMS against the GT mean (metric 2)."""
    if task == "classification":
        return float(np.mean(np.argmax(preds, axis=-1) != gt_target))
    return float(np.sqrt(np.mean((np.reshape(preds, -1) - gt_target) ** 2)))


# ------------------------------------------------------------------------------------------------ scoring
@dataclass(frozen=True)
class EvalBudget:
    """Monte Carlo sizes of the metrics ([nb]: 500 conditional samples, 1000 importance samples)."""

    n_gt_samples: int = 500
    n_px_samples: int = 1000
    seed: int = 0


@dataclass
class Reference:
    """The explained points ``x0 [n, D]`` with their GT uncertainty, GT target, BNN error and log p(x)."""

    x0: np.ndarray
    gt_uncertainty: np.ndarray
    gt_target: np.ndarray
    error: float
    log_px: np.ndarray

    @classmethod
    def build(cls, gt: GroundTruth, bnn, x0: np.ndarray, budget: EvalBudget) -> Reference:
        h, target = gt_predictive(gt, x0, budget.n_gt_samples, budget.seed)
        err = prediction_error(bnn_uncertainties(bnn, x0)["preds"], target, gt.task)
        return cls(x0, h, target, err, log_px(gt, x0, budget.n_px_samples, budget.seed))


@dataclass(frozen=True)
class SweepPoint:
    """One method at one sweep value, averaged over the explained points.

    Attributes:
      mean_delta_h: mean of ``H_gt(x0) - H_gt(xc)`` (positive = GT uncertainty reduced).
      delta_err: ``err(X0) - err(Xc)``, each against the GT label/mean at its own inputs (positive = BNN error
        reduced).
      mean_log_px: mean importance-sampled ``log p_gt(xc)``.
      mean_l1: mean ``sum_j |x0_j - xc_j|``.
      mean_bnn_delta: mean reduction of the targeted BNN uncertainty.
    """

    method: str
    target: str
    param: float
    n_points: int
    mean_delta_h: float
    delta_err: float
    mean_log_px: float
    mean_l1: float
    mean_bnn_delta: float
    seconds: float


def score(gt: GroundTruth, bnn, ref: Reference, xc: np.ndarray, budget: EvalBudget, method: str, target: str,
          param: float, seconds: float = 0.0) -> SweepPoint:
    """The four metrics of explanations ``xc [n, D]`` of ``ref.x0`` (spec 6.4)."""
    h_c, target_c = gt_predictive(gt, xc, budget.n_gt_samples, budget.seed)
    u0, uc = bnn_uncertainties(bnn, ref.x0), bnn_uncertainties(bnn, xc)
    err_c = prediction_error(uc["preds"], target_c, gt.task)  # against the GT at xc: evaluate_epistemic_*(..., X_c)
    lp = log_px(gt, xc, budget.n_px_samples, budget.seed)
    return SweepPoint(method, target, float(param), len(xc), float(np.mean(ref.gt_uncertainty - h_c)),
                      ref.error - err_c, float(np.mean(lp)), float(np.mean(np.abs(ref.x0 - xc).sum(axis=1))),
                      float(np.mean(u0[target] - uc[target])), seconds)


# ------------------------------------------------------------------------------------------------ sweeps
@dataclass(frozen=True)
class Sweep:
    """Sweep grids and method settings ([nb]: 30 lambdas in [1e-4, 30], 30 L1w in [1e-5, 100], 20 steps in
    [1e-3, 200], all log-spaced; CLUE lr 0.1, 55/65 steps for aleatoric/epistemic, early-stopping window 3; U-FIDO
    3000 points a batch).

    ``bnn_gradient`` is the BNN input gradient the three methods follow: ``exact`` (ours), or ``torch13``, the
    original's under torch 1.3, where ``sample_predict(grad=True)`` back-propagates every sample through the last
    saved sample's kernels and drops that sample from the forward average (``CLUE.compat.OriginalGradientMLP``).
    Scoring always uses the exact BNN.
    """

    clue_lambdas: tuple[float, ...] = tuple(np.logspace(-4, math.log10(30), 30))
    ufido_l1ws: tuple[float, ...] = tuple(np.logspace(-5, 2, 30))
    sensitivity_steps: tuple[float, ...] = tuple(np.logspace(-3, math.log10(200), 20))
    clue_lr: float = 0.1
    clue_max_steps_aleatoric: int = 55
    clue_max_steps_epistemic: int = 65
    clue_n_early_stop: int = 3
    ufido_iterations: int = 30
    ufido_batch: int = 3000
    bnn_gradient: str = "exact"

    def __post_init__(self):
        if self.bnn_gradient not in BNN_GRADIENTS:
            raise ValueError(f"bnn_gradient must be one of {BNN_GRADIENTS}, got {self.bnn_gradient!r}")

    def grid(self, method: str) -> tuple[float, ...]:
        return {"clue": self.clue_lambdas, "ufido": self.ufido_l1ws, "sensitivity": self.sensitivity_steps}[method]


def explain(method: str, target: str, param: float, x0: np.ndarray, bnn, vae=None, vaeac=None,
            sweep: Sweep = Sweep(), seed: int = 0) -> np.ndarray:
    """Explanations ``[n, D]`` of ``x0`` by one method at one sweep value.

    * ``clue``: distance weight ``param / D`` with L1, weight 1 on the ``target`` uncertainty, z0 = encoder mean;
    * ``ufido``: ``L1w = param`` with the in-filling ``vaeac`` trained on artificial x;
    * ``sensitivity``: one localized-sensitivity step of size ``-param`` (descent).
    """
    a, e = float(target == "aleatoric"), float(target == "epistemic")
    if method == "clue":
        steps = sweep.clue_max_steps_aleatoric if target == "aleatoric" else sweep.clue_max_steps_epistemic
        config = CLUEConfig(CLUEWeights.paper(param, x0.shape[1], target), lr=sweep.clue_lr, max_steps=steps,
                            n_early_stop=sweep.clue_n_early_stop)
        return CLUE(bnn, vae, config).explain(x0).x
    if method == "ufido":
        config = UFIDOConfig(l1_weight=param, aleatoric=a, epistemic=e, n_iterations=sweep.ufido_iterations)
        return np.concatenate([u_fido(bnn, vaeac, x0[i:i + sweep.ufido_batch], config, seed=seed + i).x
                               for i in range(0, len(x0), sweep.ufido_batch)])
    if method == "sensitivity":
        return localized_sensitivity(bnn, x0, -param, aleatoric=a, epistemic=e)
    raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


def run_sweeps(gt: GroundTruth, bnn, refs: dict[str, Reference], vae, vaeac, sweep: Sweep, budget: EvalBudget,
               methods=METHODS, progress: bool = True, journal: str | os.PathLike | None = None) -> list[SweepPoint]:
    """Every method over its grid, for each target's explained set; one :class:`SweepPoint` per value.

    Args:
      journal: a JSON-lines file to which each finished point is appended as soon as it is scored. A later call
        with the same journal reuses the points it holds for the same explained points, sweep settings and budget
        (a fingerprint of all three is stored with each line), so an interrupted sweep resumes where it stopped.
        Points scored under other settings are ignored, and an unreadable last line (a crash mid-write) is skipped.
    """
    import time

    fingerprints = {t: sweep_fingerprint(ref, sweep, budget) for t, ref in refs.items()}
    explaining_bnn = OriginalGradientMLP.from_posterior(bnn) if sweep.bnn_gradient == "torch13" else bnn
    saved = read_journal(journal) if journal is not None else {}
    jobs = [(t, m, p) for t in refs for m in methods for p in sweep.grid(m)]
    points, reused = [], 0
    for target, method, param in tqdm(jobs, desc="sweeps", disable=not progress):
        key = (fingerprints[target], target, method, float(param))
        if key in saved:
            points.append(saved[key])
            reused += 1
            continue
        start = time.perf_counter()
        xc = explain(method, target, param, refs[target].x0, explaining_bnn, vae, vaeac, sweep, budget.seed)
        seconds = time.perf_counter() - start
        point = score(gt, bnn, refs[target], xc, budget, method, target, param, seconds)
        logger.info("%s %s %.3g: dH %.4f d_err %.4f log p(x) %.3f L1 %.3f", target, method, param,
                    point.mean_delta_h, point.delta_err, point.mean_log_px, point.mean_l1)
        if journal is not None:
            _append_line(journal, json.dumps({"fingerprint": fingerprints[target], **dataclasses.asdict(point)}))
        points.append(point)
    if reused:
        logger.info("reused %d of %d sweep points from %s", reused, len(jobs), journal)
    return points


def sweep_fingerprint(ref: Reference, sweep: Sweep, budget: EvalBudget) -> str:
    """A digest of what a sweep point depends on besides the models: the explained points, the sweep, the budget."""
    digest = hashlib.sha256(np.ascontiguousarray(ref.x0, np.float32).tobytes())
    settings = dataclasses.asdict(sweep)
    if settings["bnn_gradient"] == "exact":  # added later: left out at its default, so older journals still match
        del settings["bnn_gradient"]
    digest.update(json.dumps([settings, dataclasses.asdict(budget)], sort_keys=True, default=float).encode())
    return digest.hexdigest()[:16]


def _append_line(path, line: str) -> None:
    """Appends one line and syncs it; a torn last line (no newline) is closed first so that it stays alone."""
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write(line.encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())


def read_journal(path) -> dict[tuple, SweepPoint]:
    """The points of a sweep journal, keyed by (fingerprint, target, method, param); a torn line is skipped."""
    saved = {}
    if not os.path.exists(path):
        return saved
    with open(path) as f:
        for line in f:
            try:
                row = json.loads(line)
                fingerprint = row.pop("fingerprint")
                point = SweepPoint(**row)
            except (ValueError, TypeError, KeyError):
                logger.warning("%s: skipping an unreadable line (an interrupted write)", path)
                continue
            saved[(fingerprint, point.target, point.method, float(point.param))] = point
    return saved


def points_table(points: list[SweepPoint]):
    """The sweep points as a pandas DataFrame (one row each)."""
    import pandas as pd

    return pd.DataFrame([dataclasses.asdict(p) for p in points])


def compare_at_distance(table, distances=(0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0)) -> list[dict]:
    """Each method's GT metrics linearly interpolated at common mean L1 distances (NaN outside its sweep's range).

    Args:
      table: :func:`points_table` output (or ``table.csv`` read back).
      distances: mean L1 distances at which to compare.

    Returns:
      one dict per (target, method, distance) with ``delta_h``, ``delta_err`` and ``log_px``.
    """
    rows = []
    for (target, method), group in table.groupby(["target", "method"]):
        group = group.sort_values("mean_l1")
        l1 = group["mean_l1"].to_numpy()
        for dist in distances:
            inside = l1.min() <= dist <= l1.max()
            rows.append({"target": target, "method": method, "l1": dist, **{
                name: float(np.interp(dist, l1, group[col].to_numpy())) if inside else float("nan")
                for name, col in (("delta_h", "mean_delta_h"), ("delta_err", "delta_err"),
                                  ("log_px", "mean_log_px"))}})
    return rows


def plot_sweeps(points: list[SweepPoint], target: str, log_px_x0: float, n_points: int, path,
                title: str = "", max_log_px_drop: float = 15.0) -> None:
    """The paper's figure for one target: the GT metric against mean L1 and against mean log p(x), with the mean
    log p(X0) as a vertical line; one curve per method. Aleatoric uses -dH, epistemic uses -d_err (as [nb]).
    The log p(x) axis is cut ``max_log_px_drop`` nats below log p(X0), and the metric axis 1.5x its best value below
    zero: large sensitivity steps fall far off both (their values are in ``table.csv``)."""
    from matplotlib.figure import Figure

    key, label = (("mean_delta_h", "GT uncertainty reduction  H(x0) - H(xc)") if target == "aleatoric" else
                  ("delta_err", "GT error reduction  err(X0) - err(Xc)"))
    fig = Figure(figsize=(10, 3.8))  # no pyplot: the caller's backend is left alone
    axes = fig.subplots(1, 2)
    for method in METHODS:
        rows = sorted((p for p in points if p.method == method and p.target == target), key=lambda p: p.mean_l1)
        if not rows:
            continue
        y = [getattr(p, key) for p in rows]
        axes[0].plot([p.mean_l1 for p in rows], y, "o-", ms=3, label=method)
        axes[1].plot([p.mean_log_px for p in rows], y, "o-", ms=3, label=method)
    ys = [getattr(p, key) for p in points if p.target == target]
    if ys and min(ys) < 0:  # very large sensitivity steps can wreck the GT metric; keep the informative range
        top = max(max(ys), 1e-3)
        for ax in axes:
            ax.set_ylim(max(min(ys), -1.5 * top) - 0.1 * top, 1.1 * top)
    axes[0].set_xscale("symlog", linthresh=1e-2)
    axes[0].set_xlim(left=0.0)
    axes[0].set_xlabel("mean L1 distance to x0")
    axes[1].axvline(log_px_x0, color="k", ls="--", lw=1, label="log p(X0)")
    lows = [p.mean_log_px for p in points if p.target == target]
    left = max(min(lows + [log_px_x0]), log_px_x0 - max_log_px_drop)
    right = max(lows + [log_px_x0])
    axes[1].set_xlim(left - 0.5, right + 0.05 * (right - left) + 0.5)
    axes[1].set_xlabel("mean log p_gt(x)")
    for ax in axes:
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"{title} {target} (n = {n_points})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
