"""Which points are explained, and how explanations are scored against the ground truth, per point (spec 6.4)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

import data
from CLUE.evaluation.ground_truth import GroundTruth, gt_predictive, log_px
from common.predictive import uncertainties

TARGETS = ("aleatoric", "epistemic")


@dataclass(frozen=True)
class DatasetSettings:
    """Per-dataset selection thresholds of [nb]: BNN U_ale >= tau_a, U_epi >= tau_e (entropies or stds; spec 6.4)."""

    tau_aleatoric: float
    tau_epistemic: float

    def threshold(self, target: str) -> float:
        return self.tau_aleatoric if target == "aleatoric" else self.tau_epistemic


# the datasets the evaluation runs on, with their thresholds (from each dataset's row, data.DatasetSpec.thresholds)
SETTINGS = {name: DatasetSettings(*s.thresholds) for name, s in data.DATASETS.items() if s.thresholds is not None}


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


def selection_threshold(u: dict[str, np.ndarray], target: str, dataset: str, quantile: float | None) -> float:
    """The [nb] constant of ``dataset`` (``quantile=None``), or the ``quantile`` of the BNN's ``target`` uncertainty."""
    if quantile is None:
        return SETTINGS[dataset].threshold(target)
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"the threshold quantile must be in [0, 1), got {quantile}")
    return float(np.quantile(u[target], quantile))


def error_terms(preds: np.ndarray, gt_target: np.ndarray, task: str) -> np.ndarray:
    """Per row: 1 where the BNN's argmax misses the GT label, or the squared error against the GT mean (metric 2)."""
    if task == "classification":
        return (np.argmax(preds, axis=-1) != gt_target).astype(np.float64)
    return (np.reshape(preds, -1).astype(np.float64) - gt_target) ** 2


def error_from_terms(terms: np.ndarray, task: str, axis=None):
    """Error rate, or root mean squared error, of :func:`error_terms` (along ``axis``)."""
    mean = np.mean(terms, axis=axis)
    return mean if task == "classification" else np.sqrt(mean)


def prediction_error(preds: np.ndarray, gt_target: np.ndarray, task: str) -> float:
    """Error rate of the BNN's argmax against the GT label, or the RMS against the GT mean (metric 2)."""
    return float(error_from_terms(error_terms(preds, gt_target, task), task))


@dataclass(frozen=True)
class EvalBudget:
    """Monte Carlo sizes of the metrics ([nb]: 500 conditional samples, 1000 importance samples)."""

    n_gt_samples: int = 500
    n_px_samples: int = 1000
    seed: int = 0


@dataclass
class Reference:
    """The explained points ``x0 [n, D]``: GT uncertainty, GT target, BNN error (``error_terms [n]``), log p(x)."""

    x0: np.ndarray
    gt_uncertainty: np.ndarray
    gt_target: np.ndarray
    error: float
    log_px: np.ndarray
    error_terms: np.ndarray | None = None

    @classmethod
    def build(cls, gt: GroundTruth, bnn, x0: np.ndarray, budget: EvalBudget) -> Reference:
        h, target = gt_predictive(gt, x0, budget.n_gt_samples, budget.seed)
        terms = error_terms(bnn_uncertainties(bnn, x0)["preds"], target, gt.task)
        return cls(x0, h, target, float(error_from_terms(terms, gt.task)),
                   log_px(gt, x0, budget.n_px_samples, budget.seed), terms)


@dataclass(frozen=True)
class SweepPoint:
    """One method at one sweep value ``param`` (CLUE's lambda, U-FIDO's L1 weight, a step), averaged over the points.

    ``mean_delta_h``: mean ``H_gt(x0) - H_gt(xc)``; ``delta_err``: ``err(X0) - err(Xc)``, each against the GT at its
    own inputs; ``mean_log_px``: mean ``log p_gt(xc)``; ``mean_l1``: mean ``sum_j |x0_j - xc_j|``;
    ``mean_bnn_delta``: mean reduction of the targeted BNN uncertainty."""

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

    @classmethod
    def from_row(cls, row: dict) -> SweepPoint:
        """The point of a ``results.json`` row, whose interval bounds (``*_lo``, ``*_hi``) are left out."""
        return cls(**{f.name: row[f.name] for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class PointScores:
    """The metrics of one sweep value per explained point ``[n]``, float64; their means make the :class:`SweepPoint`."""

    delta_h: np.ndarray
    err0: np.ndarray
    errc: np.ndarray
    log_px: np.ndarray
    l1: np.ndarray
    bnn_delta: np.ndarray

    FIELDS = ("delta_h", "err0", "errc", "log_px", "l1", "bnn_delta")

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in self.FIELDS}


def score_points(gt: GroundTruth, bnn, ref: Reference, xc: np.ndarray, budget: EvalBudget,
                 target: str) -> PointScores:
    """The four metrics of explanations ``xc [n, D]`` of ``ref.x0``, per point (spec 6.4)."""
    h_c, target_c = gt_predictive(gt, xc, budget.n_gt_samples, budget.seed)
    u0, uc = bnn_uncertainties(bnn, ref.x0), bnn_uncertainties(bnn, xc)
    err0 = ref.error_terms if ref.error_terms is not None else error_terms(u0["preds"], ref.gt_target, gt.task)
    errc = error_terms(uc["preds"], target_c, gt.task)  # against the GT at xc: evaluate_epistemic_*(..., X_c)
    lp = log_px(gt, xc, budget.n_px_samples, budget.seed)
    f64 = lambda a: np.asarray(a, np.float64)
    return PointScores(f64(ref.gt_uncertainty) - f64(h_c), f64(err0), f64(errc), f64(lp),
                       f64(np.abs(ref.x0 - xc).sum(axis=1)), f64(u0[target]) - f64(uc[target]))


def summarize(scores: PointScores, ref: Reference, task: str, method: str, target: str, param: float,
              seconds: float = 0.0) -> SweepPoint:
    """The :class:`SweepPoint` of per-point scores: means, and metric 2 as ``err(X0) - err(Xc)``."""
    return SweepPoint(method, target, float(param), len(scores.l1), float(np.mean(scores.delta_h)),
                      ref.error - float(error_from_terms(scores.errc, task)), float(np.mean(scores.log_px)),
                      float(np.mean(scores.l1)), float(np.mean(scores.bnn_delta)), seconds)


def score(gt: GroundTruth, bnn, ref: Reference, xc: np.ndarray, budget: EvalBudget, method: str, target: str,
          param: float, seconds: float = 0.0) -> SweepPoint:
    """The four metrics of explanations ``xc [n, D]`` of ``ref.x0``, averaged over the points (spec 6.4)."""
    return summarize(score_points(gt, bnn, ref, xc, budget, target), ref, gt.task, method, target, param, seconds)
