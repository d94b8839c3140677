"""Helpers of ``experiments/clues_tabular.ipynb``: tabular CLUEs (LSAT, COMPAS, Wine, Credit) in original units.

The notebook stays thin: it calls :func:`load_models`, :func:`explain`, :func:`summarise`, :func:`side_by_side` and
:func:`comparison`. The CLUE run itself is ``CLUE.generate``'s: its ``explain_most_uncertain`` (ranking and the
:class:`CLUE.CLUE` optimiser with ``CLUEWeights.paper``) and its ``changed_features`` table (original units rounded
to each column's resolution in the raw data, a continuous feature counts as changed above ``change_threshold``
training standard deviations when the change shows at that resolution, a categorical one when its category changes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import data
import weights
from BNN import train as bnn_train
from BNN.posterior import Posterior
from CLUE import generate
from CLUE.explainer import CLUE, CLUEConfig, CLUEResult, CLUEWeights
from common.config import with_preset
from common.io import PROJECT_ROOT
from VAE import train as vae_train
from VAE.model import load_vae
from verification import parity

REFERENCE_DIR = PROJECT_ROOT.parent / "shared" / "reference"
# the reference run's caps (shared/reference/README.md, section 2); Wine and Credit as its kits' models
VAE_EPOCH_CAP = {"lsat": 150, "compas": 200, "wine": 150, "credit": 150}
UNITS = {"regression": "std (normalised y)", "classification": "entropy (nats)"}


@dataclass(frozen=True)
class Settings:
    """CLUE settings; the defaults are the reference run's (shared/reference/README.md, section 3)."""

    lam: float = 2.0
    lr: float = 0.1
    max_steps: int = 50
    batch_size: int = 256
    fraction: float = 0.1
    n_explain: int | None = None  # overrides fraction
    change_threshold: float = 0.05

    def clue_config(self, x_dim: int) -> CLUEConfig:
        return CLUEConfig(CLUEWeights.paper(self.lam, x_dim), lr=self.lr, max_steps=self.max_steps,
                          batch_size=self.batch_size)


def load_models(dataset: str, weights_dir: str | Path, seed: int = 0, smoke: bool = False,
                pretrained: bool = True) -> tuple[Posterior, Any, str]:
    """The BNN posterior and VAE of ``dataset``, and where they came from.

    The committed weights (``weights.load_posterior("bnn_<dataset>")``, ``weights.load_vae("vae_<dataset>")``) when
    ``pretrained`` and both are present; otherwise ``BNN.train`` and ``VAE.train`` (``paper`` preset with the
    reference's VAE epoch cap, or ``tiny`` when ``smoke``) train them into ``weights_dir/{bnn,vae}_<dataset>``
    (finished runs are reused, interrupted ones resumed).
    """
    bnn_name, vae_name = f"bnn_{dataset}", f"vae_{dataset}"
    if pretrained and weights.available(bnn_name) and weights.available(vae_name):
        return weights.load_posterior(bnn_name), weights.load_vae(vae_name), f"weights/ ({bnn_name}, {vae_name})"
    preset = "tiny" if smoke else "paper"
    bnn_dir, vae_dir = Path(weights_dir) / bnn_name, Path(weights_dir) / vae_name
    bnn_train.main(with_preset(bnn_train.Config, bnn_train.PRESETS, preset, dataset=dataset, seed=seed,
                               out=str(bnn_dir), progress=False))
    vae_extra = {} if smoke else {"max_epochs": VAE_EPOCH_CAP.get(dataset)}
    vae_train.main(with_preset(vae_train.Config, vae_train.PRESETS, preset, dataset=dataset, seed=seed,
                               out=str(vae_dir), progress=False, **vae_extra))
    return Posterior.load(bnn_dir / "posterior"), load_vae(vae_dir / "best"), f"trained ({preset}) in {weights_dir}"


def explain(ds: data.Dataset, posterior: Posterior, vae, settings: Settings) -> tuple[CLUEResult, np.ndarray]:
    """CLUEs of the most uncertain test points (``CLUE.generate.explain_most_uncertain``: its selection and
    optimiser); most uncertain first."""
    return generate.explain_most_uncertain(CLUE(posterior, vae, settings.clue_config(ds.x_dim)), ds.x_test,
                                           settings.n_explain, settings.fraction)


def summarise(ds: data.Dataset, result: CLUEResult, vae, posterior: Posterior) -> dict[str, float]:
    """``CLUEResult.summary()`` plus the figures of the reference table: the VAE reconstruction of x0 alone (its
    uncertainty and L1 distance) and the mean relative reduction."""
    x0 = result.x0
    recon = vae.reconstruct(x0)
    recon_u = CLUE(posterior, vae).uncertainty(recon)
    before, after = result.uncertainty_before, result.uncertainty_after
    return {**result.summary(), "dataset": ds.name, "uncertainty_unit": UNITS[ds.task],
            "relative_reduction_of_means": float((before.mean() - after.mean()) / before.mean()),
            "uncertainty_recon": float(recon_u.mean()),
            "recon_l1": float(np.abs(recon - x0).sum(axis=1).mean()),
            "median_l1": float(np.median(result.l1_distance)),
            "mean_stop_step": float(result.stop_step[result.stop_step > 0].mean()) if np.any(result.stop_step)
            else 0.0,
            "seconds_per_100_points": float(100 * result.seconds / len(x0))}


def _plain(value: Any) -> Any:
    """A category label as is; an integer as is; another number rounded to 2 decimals (no ``-0``)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return round(float(value), 2) + 0.0
    return str(value)


def _fmt(value: Any) -> str:
    value = _plain(value)
    return f"{value:g}" if isinstance(value, float) else value


def side_by_side(ds: data.Dataset, result: CLUEResult, test_index: np.ndarray, n_show: int,
                 threshold: float = 0.05) -> pd.DataFrame:
    """The ``n_show`` most uncertain points in original units, as the paper shows them: per point an ``x0`` row with
    every feature and a ``CLUE`` row with only the features CLUE changed (``generate.changed_features``; blank
    where unchanged), each with its BNN uncertainty."""
    n_show = min(n_show, len(result.x))
    before = ds.to_original_units(result.x0[:n_show])
    changes = generate.changed_features(ds, result, test_index, threshold)
    rows, index = [], []
    for i in range(n_show):
        changed = changes[changes.point == i].set_index("feature")["clue"]
        rows.append({**{c: _fmt(before.iloc[i][c]) for c in before.columns},
                     "uncertainty": f"{result.uncertainty_before[i]:.3f}"})
        rows.append({**{c: _fmt(changed[c]) if c in changed.index else "" for c in before.columns},
                     "uncertainty": f"{result.uncertainty_after[i]:.3f}"})
        index += [(i + 1, int(test_index[i]), "x0"), (i + 1, int(test_index[i]), "CLUE")]
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["rank", "test row", ""]))


def changes_records(ds: data.Dataset, result: CLUEResult, test_index: np.ndarray, n_show: int,
                    threshold: float = 0.05) -> list[dict[str, Any]]:
    """``generate.changed_features`` of the ``n_show`` most uncertain points, as JSON-ready records."""
    table = generate.changed_features(ds, result, test_index, threshold)
    records = table[table.point < n_show].to_dict("records")
    return [{**{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()},
             "original": _plain(row["original"]), "clue": _plain(row["clue"])} for row in records]


def original_figures(dataset: str, reference_dir: Path = REFERENCE_DIR) -> dict[str, dict[str, float]] | None:
    """The PyTorch original's CLUE figures for ``dataset`` (exact and torch-1.3 gradients, lr 0.1), or None.

    :func:`verification.parity.original_figures`: the original's own reference run where it states them (LSAT,
    COMPAS), else
    computed from the parity kit's arrays (Wine, Credit: its CLUE runs on the original's models, same settings).
    """
    kits = reference_dir / "parity"
    kit = parity.load_kit(kits, dataset) if (kits / dataset / "io.npz").exists() else None
    if kit is None and dataset not in parity.STATED_SOURCES:
        return None
    figures = parity.original_figures(reference_dir, dataset, kit)
    value = lambda key: figures.get(key, (None, None))[0]  # noqa: E731
    out = {}
    for ours, prefix in (("clue_exact_grad", "clue_exact"), ("clue", "clue_orig")):
        out[ours] = {"n_explained": len(kit.io["clue/idx"]) if kit is not None else None,
                     "uncertainty_before": value("mean_uncertainty_before"),
                     "uncertainty_after": value(f"{prefix}/mean_uncertainty_after"),
                     "relative_reduction_of_means": value(f"{prefix}/relative_reduction"),
                     "l1_distance": value(f"{prefix}/mean_l1"), "fraction_reduced": value(f"{prefix}/fraction_reduced"),
                     "uncertainty_recon": value("mean_uncertainty_vae_reconstruction"), "recon_l1": value("recon_l1"),
                     "seconds_per_100_points": value(f"{prefix}/seconds_per_100_points"),
                     "source": figures.get(f"{prefix}/mean_uncertainty_after", (None, None))[1]}
    return out


COLUMNS = ("n_explained", "uncertainty_before", "uncertainty_after", "relative_reduction_of_means", "l1_distance",
           "fraction_reduced", "uncertainty_recon", "recon_l1", "seconds_per_100_points")


def comparison(summaries: dict[str, dict], originals: dict[str, dict | None]) -> pd.DataFrame:
    """One row per (dataset, source): ours, and the original's exact-gradient and torch-1.3-gradient runs."""
    rows, index = [], []
    for name, ours in summaries.items():
        rows.append({k: ours[k] for k in COLUMNS})
        index.append((name, "ours (TF2)"))
        for key, label in (("clue_exact_grad", "original, exact gradients"), ("clue", "original, torch-1.3 grads")):
            if originals.get(name):
                rows.append({k: originals[name][key][k] for k in COLUMNS})
                index.append((name, label))
    table = pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["dataset", "run"]))
    return table.astype({"n_explained": int}).round(4)


def plot_uncertainty(results: dict[str, CLUEResult], units: dict[str, str]):
    """Per dataset: BNN uncertainty of each explained point before (x0) and after (CLUE), with the diagonal."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.8), squeeze=False)
    for ax, (name, result) in zip(axes[0], results.items()):
        before, after = result.uncertainty_before, result.uncertainty_after
        ax.scatter(before, after, s=10, alpha=0.6, c=result.l1_distance, cmap="viridis")
        lo, hi = min(before.min(), after.min()), max(before.max(), after.max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set(xlabel=f"before (x0), {units[name]}", ylabel="after (CLUE)",
               title=f"{name}: {len(before)} most uncertain test points")
        fig.colorbar(ax.collections[0], ax=ax, label="L1(CLUE, x0)")
    fig.tight_layout()
    return fig
