"""Helpers of ``experiments/beyond_bnn.ipynb``: CLUE for a deep ensemble, beside the BNN, and δ-CLUE sets (COMPAS).

The notebook stays thin: :func:`train`, :func:`test_metrics`, :func:`compare_clues`, :func:`clue_table`,
:func:`diverse_sets`, :func:`set_records` and :func:`plot`. The models are :mod:`BNN.adapters`' (a deep ensemble
of Keras MLPs trained with ``train_ensemble``) and the committed seed-0 COMPAS BNN posterior and VAE
(``weights.load_posterior("bnn_compas")``, ``weights.load_vae("vae_compas")``); CLUE is ``CLUE.generate``'s
selection and optimiser, δ-CLUE is :class:`CLUE.diverse.DeltaCLUE`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

import data
from BNN.adapters import DeepEnsemble, train_ensemble
from CLUE import generate
from CLUE.diverse import DeltaCLUE, DiverseConfig, DiverseResult
from CLUE.explainer import CLUE, CLUEConfig, CLUEResult, CLUEWeights


@dataclass(frozen=True)
class Settings:
    """Ensemble, CLUE (the reference tabular run's settings) and δ-CLUE settings of the notebook."""

    n_members: int = 5
    hidden: tuple[int, ...] = (200, 200)  # the BNN's width and depth
    epochs: int = 40
    lam: float = 2.0
    lr: float = 0.1
    max_steps: int = 50
    fraction: float = 0.1
    n_explain: int | None = None  # overrides fraction
    k: int = 5  # δ-CLUE explanations per point
    delta: float = 1.0
    norm: str = "l2"
    diversity_weights: tuple[float, ...] = (0.0, 1.0)
    change_threshold: float = 0.05

    def clue_config(self, x_dim: int) -> CLUEConfig:
        return CLUEConfig(CLUEWeights.paper(self.lam, x_dim), lr=self.lr, max_steps=self.max_steps)

    def diverse_config(self, x_dim: int, weight: float, seed: int = 0) -> DiverseConfig:
        return DiverseConfig(self.clue_config(x_dim), n_explanations=self.k, delta=self.delta, norm=self.norm,
                             diversity_weight=weight, seed=seed)


def train(ds: data.Dataset, settings: Settings, seed: int = 0) -> tuple[DeepEnsemble, float]:
    """The deep ensemble of ``ds`` and its training time in seconds."""
    start = time.perf_counter()
    ensemble = train_ensemble(ds.x_train, ds.y_train, ds.task, settings.n_members, settings.hidden,
                              settings.epochs, seed=seed, dataset=ds.name)
    return ensemble, time.perf_counter() - start


def test_metrics(model, ds: data.Dataset) -> dict[str, float]:
    """Accuracy and NLL of the predictive mean over samples, mean total / aleatoric / epistemic test entropy."""
    probs = np.concatenate([model.predict_samples(ds.x_test[i:i + 2048]).numpy()
                            for i in range(0, len(ds.x_test), 2048)], axis=1)  # [S, N, C]
    p_bar, y = probs.mean(0), ds.y_test.astype(np.int64)
    total, aleatoric, epistemic = (t.numpy() for t in model.uncertainty(ds.x_test))
    return {"samples": int(probs.shape[0]), "accuracy": float((p_bar.argmax(1) == y).mean()),
            "nll": float(-np.log(p_bar[np.arange(len(y)), y] + 1e-12).mean()),
            "entropy_total": float(total.mean()), "entropy_aleatoric": float(aleatoric.mean()),
            "entropy_epistemic": float(epistemic.mean())}


def compare_clues(ds: data.Dataset, models: dict[str, Any], vae, settings: Settings,
                  rank_by: str = "ensemble") -> tuple[dict[str, CLUEResult], np.ndarray]:
    """CLUEs of the test points most uncertain under ``models[rank_by]`` (``CLUE.generate.explain_most_uncertain``),
    and CLUEs of the same points under every other model; ``(results by model, test rows)``."""
    config = settings.clue_config(ds.x_dim)
    first, rows = generate.explain_most_uncertain(CLUE(models[rank_by], vae, config), ds.x_test,
                                                  settings.n_explain, settings.fraction)
    results = {rank_by: first}
    for name, model in models.items():
        if name != rank_by:
            results[name] = CLUE(model, vae, config).explain(ds.x_test[rows])
    return results, rows


def clue_table(results: dict[str, CLUEResult], models: dict[str, Any], vae) -> pd.DataFrame:
    """Per explainer model: its own uncertainty before and after, the reduction, L1 distance and latent move, and
    the other models' uncertainty of its CLUEs (``<model>_after``)."""
    rows = {}
    for name, result in results.items():
        before, after = result.uncertainty_before, result.uncertainty_after
        row = {"n_explained": len(before), "uncertainty_before": before.mean(), "uncertainty_after": after.mean(),
               "relative_reduction": (before.mean() - after.mean()) / before.mean(),
               "fraction_reduced": np.mean(after < before), "l1_distance": result.l1_distance.mean(),
               "latent_l2_moved": np.linalg.norm(result.z - result.z_init, axis=1).mean(),
               "seconds": result.seconds}
        for other, model in models.items():
            probe = CLUE(model, vae)
            row[f"{other}_before"] = probe.uncertainty(result.x0).mean()
            row[f"{other}_after"] = probe.uncertainty(result.x).mean()
        rows[f"CLUE with {name}"] = row
    return pd.DataFrame(rows).T.astype(float).round(4).astype({"n_explained": int})


def diverse_sets(ds: data.Dataset, model, vae, x0: np.ndarray, settings: Settings,
                 seed: int = 0) -> dict[float, DiverseResult]:
    """δ-CLUE sets of ``x0`` under ``model``, one run per diversity weight of ``settings``."""
    return {w: DeltaCLUE(model, vae, settings.diverse_config(ds.x_dim, w, seed)).explain(x0)
            for w in settings.diversity_weights}


def diverse_table(sets: dict[float, DiverseResult]) -> pd.DataFrame:
    """One row per diversity weight: the means of :meth:`DiverseResult.summary`."""
    return pd.DataFrame({f"w_div = {w:g}": s.summary() for w, s in sets.items()}).T


def set_records(ds: data.Dataset, sets: DiverseResult, test_rows: np.ndarray, points: list[int],
                threshold: float = 0.05) -> pd.DataFrame:
    """The K explanations of each point in ``points``: uncertainty, class, L1 and latent distance, and the features
    changed in original units (``CLUE.generate.changed_features``)."""
    decimals = generate.column_decimals(ds)
    records = []
    for i in points:
        k = sets.x.shape[1]
        view = SimpleNamespace(x=sets.x[i], x0=np.repeat(sets.x0[i:i + 1], k, 0),
                               uncertainty_before=np.repeat(sets.uncertainty_before[i], k),
                               uncertainty_after=sets.uncertainty[i])
        changes = generate.changed_features(ds, view, np.full(k, test_rows[i]), threshold, decimals)
        for j in range(k):
            changed = changes[changes.point == j]
            records.append({"test row": int(test_rows[i]), "explanation": j + 1,
                            "uncertainty_x0": round(float(sets.uncertainty_before[i]), 4),
                            "uncertainty": round(float(sets.uncertainty[i, j]), 4),
                            "class_x0": None if sets.original_class is None else int(sets.original_class[i]),
                            "class": None if sets.predicted_class is None else int(sets.predicted_class[i, j]),
                            "l1": round(float(sets.l1_distance[i, j]), 3),
                            "latent_dist": round(float(sets.latent_distance[i, j]), 3),
                            "changes": "; ".join(f"{r.feature}: {r.original} -> {r.clue}"
                                                 for r in changed.itertuples()) or "(none)"})
    return pd.DataFrame(records).set_index(["test row", "explanation"])


def plot(results: dict[str, CLUEResult], sets: dict[float, DiverseResult], unit: str = "entropy (nats)"):
    """Left: each model's uncertainty of the explained points before and after its CLUE. Right: per diversity
    weight, every δ-CLUE's uncertainty against its L1 distance to x0."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.0))
    ax = axes[0]
    for (name, result), color in zip(results.items(), ("tab:blue", "tab:orange", "tab:green")):
        ax.scatter(result.uncertainty_before, result.uncertainty_after, s=12, alpha=0.7, color=color,
                   label=f"CLUE with {name}")
    top = max(max(r.uncertainty_before.max(), r.uncertainty_after.max()) for r in results.values())
    ax.plot([0, top], [0, top], "k--", lw=0.8)
    ax.set(xlabel=f"before (x0), {unit}", ylabel="after (CLUE)", title="same points, two models")
    ax.legend(fontsize=8)
    ax = axes[1]
    for (w, s), marker in zip(sets.items(), ("o", "^", "s", "x")):
        ax.scatter(s.l1_distance.ravel(), s.uncertainty.ravel(), s=10, alpha=0.5, marker=marker,
                   label=f"w_div = {w:g}: diversity {s.diversity_x.mean():.2f}")
    ax.set(xlabel="L1(δ-CLUE, x0)", ylabel=f"uncertainty, {unit}",
           title=f"δ-CLUE sets, K = {next(iter(sets.values())).x.shape[1]}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
