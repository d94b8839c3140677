"""CLUE's settings (objective weights, optimizer, stopping rule) and its result (spec 5.2-5.5)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from common.io import save_npz

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam defaults, as the original
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class CLUEWeights:
    """Weights of the terms of the CLUE objective J(z) (spec 5.3; see :mod:`CLUE.explainer`).

    ``distance`` weighs d(x, x0) (the paper: lambda / D); ``prior`` weighs +log N(z; 0, I) (a positive weight pushes
    z away from the prior mode); ``latent_l2`` weighs ||z - z_init||^2; ``prediction_similarity`` needs
    ``desired_preds``."""

    uncertainty: float = 1.0
    aleatoric: float = 0.0
    epistemic: float = 0.0
    distance: float = 0.0
    prior: float = 0.0
    latent_l2: float = 0.0
    prediction_similarity: float = 0.0

    @classmethod
    def paper(cls, lam: float, x_dim: int, target: str = "total") -> CLUEWeights:
        """The weighting of the paper: one uncertainty term with weight 1 and distance weight ``lam / x_dim``."""
        if target not in ("total", "aleatoric", "epistemic"):
            raise ValueError(f"target must be total, aleatoric or epistemic, got {target!r}")
        terms = {"uncertainty": 0.0, "aleatoric": 0.0, "epistemic": 0.0}
        terms["uncertainty" if target == "total" else target] = 1.0
        return cls(**terms, distance=lam / x_dim)


@dataclass(frozen=True)
class CLUEConfig:
    """Optimization settings (spec 5.4-5.6; the reference tabular run: lr 0.1, 3 / 50 / 3, batch 256).

    ``lr``: Adam step on z; the stopping rule (window ``n_early_stop``, 0 = off) is checked for t > ``min_steps``;
    ``batch_size`` does not change results (rows are independent); ``distance_metric``: ``"l1"`` (the paper's) or
    ``"l2"``."""

    weights: CLUEWeights = field(default_factory=CLUEWeights)
    lr: float = 0.1
    min_steps: int = 3
    max_steps: int = 50
    n_early_stop: int = 3
    batch_size: int = 256
    distance_metric: str = "l1"

    def __post_init__(self):
        if self.distance_metric not in ("l1", "l2"):
            raise ValueError(f"distance_metric must be 'l1' or 'l2', got {self.distance_metric!r}")
        if self.max_steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("max_steps and batch_size must be >= 1 and lr > 0")
        if self.n_early_stop and self.min_steps < self.n_early_stop - 1:
            raise ValueError("min_steps must be >= n_early_stop - 1 (the rule looks n steps back)")


@dataclass
class CLUEResult:
    """CLUEs of ``n`` points; per-step arrays are frozen after each row's early stop, as the original returns them.

    ``x``, ``x0`` ``[n, D]``; ``z``, ``z_init`` ``[n, L]``; per-step ``[T, n]``: ``uncertainty``, ``aleatoric``,
    ``epistemic``, ``distance_term`` (weighted distance), ``cost``; ``stop_step [n]`` (0: never stopped);
    ``freeze_index [n]``: ``stop_step - n_early_stop + 1``, or ``T``; ``uncertainty_before`` / ``_after [n]``: total
    uncertainty of x0 / x; ``prediction_*``: predictive mean, ``[n, C]`` or ``[n]``; ``seconds``: wall time;
    ``x_trajectory`` / ``z_trajectory`` ``[T + 1, n, .]`` when recorded."""

    x: np.ndarray
    z: np.ndarray
    x0: np.ndarray
    z_init: np.ndarray
    uncertainty: np.ndarray
    aleatoric: np.ndarray
    epistemic: np.ndarray
    distance_term: np.ndarray
    cost: np.ndarray
    stop_step: np.ndarray
    freeze_index: np.ndarray
    uncertainty_before: np.ndarray
    uncertainty_after: np.ndarray
    prediction_before: np.ndarray | None = None
    prediction_after: np.ndarray | None = None
    seconds: float = 0.0
    x_trajectory: np.ndarray | None = None
    z_trajectory: np.ndarray | None = None

    @property
    def l1_distance(self) -> np.ndarray:
        """``[n]`` unweighted L1 distance between each explanation and its input."""
        return np.abs(self.x - self.x0).sum(axis=1)

    @property
    def prediction_changed(self) -> np.ndarray | None:
        """bool ``[n]``: whether the explanation's predicted class differs from its input's (None for regression)."""
        if self.prediction_before is None or self.prediction_before.ndim != 2:
            return None
        return self.prediction_before.argmax(axis=1) != self.prediction_after.argmax(axis=1)

    def summary(self) -> dict[str, float]:
        """The ``summary.json`` figures of DESIGN.md."""
        return {
            "n_explained": int(len(self.x)),
            "uncertainty_before": float(self.uncertainty_before.mean()),
            "uncertainty_after": float(self.uncertainty_after.mean()),
            "l1_distance": float(self.l1_distance.mean()),
            "fraction_reduced": float(np.mean(self.uncertainty_after < self.uncertainty_before)),
            **({} if self.prediction_changed is None else
               {"fraction_prediction_changed": float(np.mean(self.prediction_changed))}),
            "seconds": float(self.seconds),
        }

    def save(self, path, **extra: np.ndarray) -> None:
        """Writes every array (and ``extra`` ones, e.g. the explained rows' indices) to an ``.npz`` atomically."""
        arrays = {k: v for k, v in dataclasses.asdict(self).items() if isinstance(v, np.ndarray)}
        save_npz(path, compressed=True, **arrays, **extra, seconds=np.float64(self.seconds))
