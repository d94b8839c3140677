"""The factor score of Kim & Mnih [1] (the "FactorVAE metric"), for any representation and any factor sampler.

A vote fixes a factor ``k`` at a random value, draws ``L`` images, encodes them ``z = r(x)`` ``[L, D]``, scales each
dimension by its data std ``s_d`` and votes ``(argmin_d Var_L(z_d / s_d), k)`` over the active dimensions (``s_d > 0``,
``s_d >= prune_std``, mean ``KL(q(z_d|x) || N(0, 1)) >= prune_kl``). The score is the accuracy of the majority vote
``c(d) = argmax_k V[d, k]`` over vote counts ``V`` ``[D_active, K]``, on the training votes or on evaluation votes.

Presets: ``"reproductions"`` (of Liu et al. [2]: ``L = 100``, 800 balanced votes, KL pruning at 1e-5) and
``"disentanglement_lib"`` ([3]: ``L = 64``, 10,000 + 5,000 votes, std pruning at 0.05).

References: [1] Kim & Mnih. Disentangling by Factorising. ICML 2018. [2] Liu et al. Towards Visually Explaining VAEs.
CVPR 2020. [3] Locatello et al. Challenging Common Assumptions in ... Disentangled Representations. ICML 2019."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)

Codes = np.ndarray | tuple[np.ndarray, np.ndarray]
Representation = Callable[[np.ndarray], Any]  # observations [n, ...] -> codes [n, D] or (means, logvars)


class FactorSampler(Protocol):
    """Ground-truth factors (``factor_sizes``: classes per factor, ``(K,)``) and their observations."""

    factor_sizes: tuple[int, ...]

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` independent uniform factor vectors, int64 ``[n, K]``."""

    def observations(self, factors: np.ndarray) -> np.ndarray:
        """The observations (images) of factor vectors ``[n, K]``: ``[n, ...]``."""


@dataclass(frozen=True)
class FactorScoreConfig:
    """Settings of :func:`factor_score` (``batch_size`` is ``L``; ``num_eval = 0``: score the training votes)."""

    batch_size: int = 100
    num_train: int = 800
    num_eval: int = 0
    num_variance_estimate: int = 10000
    prune_std: float | None = None
    prune_kl: float | None = 1e-5
    balanced: bool = True
    encode_batch_size: int = 1024

    def __post_init__(self):
        if self.batch_size < 2:
            raise ValueError(f"batch_size (L) must be >= 2 for a variance, got {self.batch_size}")
        if self.num_train < 1 or self.num_eval < 0 or self.num_variance_estimate < 2:
            raise ValueError("need num_train >= 1, num_eval >= 0 and num_variance_estimate >= 2")


PRESETS: dict[str, FactorScoreConfig] = {
    "reproductions": FactorScoreConfig(),
    "disentanglement_lib": FactorScoreConfig(batch_size=64, num_train=10000, num_eval=5000,
                                             num_variance_estimate=10000, prune_std=0.05, prune_kl=None,
                                             balanced=False),
}


def preset(name: str, **overrides: Any) -> FactorScoreConfig:
    """The named :data:`PRESETS` entry with field overrides (e.g. fewer votes for a quick check)."""
    if name not in PRESETS:
        raise ValueError(f"unknown factor-score preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


class DSpritesFactors:
    """The dSprites grid as a :class:`FactorSampler` (``include_constant``: keep single-class factors)."""

    def __init__(self, dataset, include_constant: bool = False):
        from data.dsprites import FACTOR_SIZES

        self.dataset = dataset
        self.columns = tuple(k for k, n in enumerate(FACTOR_SIZES) if include_constant or n > 1)
        self.factor_sizes = tuple(FACTOR_SIZES[k] for k in self.columns)
        self._all_sizes = FACTOR_SIZES

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.stack([rng.integers(0, size, n) for size in self.factor_sizes], axis=1).astype(np.int64)

    def observations(self, factors: np.ndarray) -> np.ndarray:
        full = np.zeros((len(factors), len(self._all_sizes)), np.int64)
        full[:, list(self.columns)] = factors
        return self.dataset.images_of(full)


def _encode(representation: Representation, observations: np.ndarray,
            batch_size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Codes ``[n, D]`` float64 (and log-variances or None) of observations, ``batch_size`` at a time."""
    means, logvars = [], []
    for start in range(0, len(observations), batch_size):
        out = representation(observations[start:start + batch_size])
        if isinstance(out, tuple):
            means.append(np.asarray(out[0], np.float64))
            logvars.append(np.asarray(out[1], np.float64))
        else:
            means.append(np.asarray(out, np.float64))
    mean = np.concatenate(means).reshape(len(observations), -1)
    return mean, (np.concatenate(logvars).reshape(mean.shape) if logvars else None)


def active_dimensions(codes: np.ndarray, logvars: np.ndarray | None, config: FactorScoreConfig) -> np.ndarray:
    """Boolean ``[D]``: the dimensions kept by the pruning rules."""
    std = codes.std(axis=0, ddof=1)
    active = std > 0
    if config.prune_std is not None:
        active &= std >= config.prune_std
    if config.prune_kl is not None and logvars is not None:
        kl = np.mean(-0.5 * (1 + logvars - codes ** 2 - np.exp(logvars)), axis=0)
        active &= kl >= config.prune_kl
    return active


def _vote_factors(sampler: FactorSampler, n_votes: int, config: FactorScoreConfig,
                  rng: np.random.Generator, first_vote: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed factor ``[n]`` and the factor vectors ``[n, L, K]`` of ``n_votes`` votes."""
    num_factors = len(sampler.factor_sizes)
    if config.balanced:
        ks = (np.arange(first_vote, first_vote + n_votes) % num_factors).astype(np.int64)
    else:
        ks = rng.integers(0, num_factors, n_votes)
    factors = sampler.sample_factors(n_votes * config.batch_size, rng).reshape(n_votes, config.batch_size, -1)
    rows = np.arange(n_votes)
    factors[rows, :, ks] = factors[rows, 0, ks][:, None]  # factor k fixed at the first sample's value
    return ks, factors


def collect_votes(representation: Representation, sampler: FactorSampler, n_votes: int, scales: np.ndarray,
                  active: np.ndarray, config: FactorScoreConfig, rng: np.random.Generator) -> np.ndarray:
    """Vote counts ``V`` int64 ``[D_active, K]`` of ``n_votes`` votes, given scales ``s_d`` and the ``active`` mask."""
    num_factors = len(sampler.factor_sizes)
    votes = np.zeros((int(active.sum()), num_factors), np.int64)
    per_chunk = max(1, config.encode_batch_size * 4 // config.batch_size)  # bounds the images held at once
    for first in range(0, n_votes, per_chunk):
        n = min(per_chunk, n_votes - first)
        ks, factors = _vote_factors(sampler, n, config, rng, first)
        obs = sampler.observations(factors.reshape(n * config.batch_size, -1))
        codes, _ = _encode(representation, obs, config.encode_batch_size)
        codes = codes.reshape(n, config.batch_size, -1)[:, :, active] / scales[active]
        d = np.argmin(codes.var(axis=1, ddof=1), axis=1)  # [n]
        np.add.at(votes, (d, ks), 1)
    return votes


def factor_score(representation: Representation, sampler: FactorSampler,
                 config: FactorScoreConfig | str = "reproductions", seed: int | np.random.Generator = 0
                 ) -> dict[str, Any]:
    """The factor score of [1] for ``representation``: ``observations [n, ...] -> codes [n, D]`` (or
    ``(means, logvars)``).

    Returns ``score``, ``train_accuracy``, ``eval_accuracy`` (NaN without evaluation votes), ``num_active_dims``,
    ``active_dims`` and ``votes``."""
    config = preset(config) if isinstance(config, str) else config
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    observations = sampler.observations(sampler.sample_factors(config.num_variance_estimate, rng))
    codes, logvars = _encode(representation, observations, config.encode_batch_size)
    del observations
    scales = codes.std(axis=0, ddof=1)
    active = active_dimensions(codes, logvars, config)
    result: dict[str, Any] = {"num_active_dims": int(active.sum()), "active_dims": np.flatnonzero(active).tolist()}
    if not active.any():
        logger.warning("factor score: every dimension is pruned (collapsed representation); score 0")
        return {"score": 0.0, "train_accuracy": 0.0, "eval_accuracy": 0.0 if config.num_eval else float("nan"),
                "votes": [], **result}
    train = collect_votes(representation, sampler, config.num_train, scales, active, config, rng)
    classifier = np.argmax(train, axis=1)  # [D_active]: majority vote
    dims = np.arange(len(classifier))
    train_accuracy = float(train[dims, classifier].sum() / train.sum())
    eval_accuracy = float("nan")
    if config.num_eval:
        evaluation = collect_votes(representation, sampler, config.num_eval, scales, active, config, rng)
        eval_accuracy = float(evaluation[dims, classifier].sum() / evaluation.sum())
    score = eval_accuracy if config.num_eval else train_accuracy
    return {"score": score, "train_accuracy": train_accuracy, "eval_accuracy": eval_accuracy,
            "votes": train.tolist(), **result}
