"""Explains a trained BNN's most uncertain test points with CLUE, using a trained VAE (paper section 4).

Loads the posterior written by ``BNN.train`` and the best VAE written by ``VAE.train``, ranks the test set by
total uncertainty, explains the top ``--n-explain`` points (or ``--fraction`` of them), and writes into ``--out``:

* ``explanations.npz``: the :class:`CLUE.explainer.CLUEResult` arrays and ``test_index``, the rows explained;
* ``summary.json``: ``n_explained``, ``uncertainty_before``, ``uncertainty_after``, ``l1_distance``, ``seconds``
  and more (means over the explained points);
* tabular data: ``changes.csv``, every feature CLUE changed, in original units;
* images: ``clues.png``, a grid of original, CLUE and difference with the predictions before and after.

Usage::

    python -m CLUE.generate --dataset lsat --bnn runs/bnn_lsat --vae runs/vae_lsat --out runs/clue_lsat
    python -m CLUE.generate --dataset digits --bnn runs/bnn_digits --vae runs/vae_digits --n-explain 16
    python -m CLUE.generate --dataset mnist_t10k --bnn ... --vae ... --strategy mirrored  # one shard per GPU

#### References
[1] Antorán, J., Bhatt, U., Adel, T., Weller, A., Hernández-Lobato, J. M. "Getting a CLUE: A Method for Explaining
    Uncertainty Estimates." ICLR 2021.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import data
from BNN.posterior import Posterior
from CLUE.explainer import CLUE, CLUEConfig, CLUEResult, CLUEWeights, uncertainties
from common.config import option, parse_config
from common.distribute import make_strategy
from common.utils import atomic_path, make_run_dir, save_json, set_seed, setup_logging
from VAE.model import load_vae

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class Config:
    """Settings of a CLUE run; defaults are the reference tabular run (shared/reference/README.md, section 3)."""

    dataset: str = option("lsat", "data.load name")
    bnn: str = option("runs/bnn", "BNN.train run folder (or its posterior/ folder)")
    vae: str = option("runs/vae", "VAE.train run folder (or its best/ folder)")
    out: str = option("runs/clue", "output folder")
    n_explain: int | None = option(None, "explain this many most uncertain test points (overrides --fraction)")
    fraction: float = option(0.1, "explain this fraction of the test set, most uncertain first (reference: 10%)")
    target: str = option("total", "uncertainty to reduce: total | aleatoric | epistemic")
    lam: float = option(2.0, "distance weight lambda; the objective uses lambda / D (reference: 2)")
    lr: float = option(0.1, "Adam step size on z (reference: 0.1)")
    min_steps: int = option(3, "no early stop before this step")
    max_steps: int = option(50, "Adam steps at most (reference: 50)")
    n_early_stop: int = option(3, "early-stopping window; 0 disables it")
    batch_size: int = option(256, "points optimised together (no effect on results)")
    change_threshold: float = option(0.05, "report a continuous feature as changed above this many training stds")
    seed: int = option(0, "data split seed and run seed")
    data_dir: str | None = option(None, "folder of raw data files")
    strategy: str = option("default", "default | mirrored: shard each batch over the replicas (GPUs or logical CPUs)")
    progress: bool = option(True, "show a progress bar over batches")


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "tiny": {"n_explain": 8, "max_steps": 10, "progress": False},
}


def _resolve(folder: str, inner: str) -> Path:
    path = Path(folder)
    if (path / inner).is_dir():
        return path / inner
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist: pass the output folder of the training script")
    return path


def load_models(config: Config) -> tuple[Posterior, Any]:
    """The BNN posterior and the best VAE of two training runs."""
    posterior = Posterior.load(_resolve(config.bnn, "posterior"))
    vae = load_vae(_resolve(config.vae, "best"))
    return posterior, vae


def select_uncertain(posterior: Posterior, x: np.ndarray, n: int, target: str = "total") -> np.ndarray:
    """Indices of the ``n`` rows of ``x`` with the highest ``target`` uncertainty, most uncertain first."""
    parts = [uncertainties(posterior, x[i:i + 4096]) for i in range(0, len(x), 4096)]
    which = {"total": 0, "aleatoric": 1, "epistemic": 2}[target]
    u = np.concatenate([p[which].numpy() for p in parts])
    return np.argsort(-u, kind="stable")[:n]


def changed_features(ds: data.Dataset, result: CLUEResult, test_index: np.ndarray,
                     threshold: float) -> pd.DataFrame:
    """One row per (point, feature) that CLUE changed, in original units."""
    before, after = ds.to_original_units(result.x0), ds.to_original_units(result.x)
    diff = np.abs(ds.to_compact(result.x) - ds.to_compact(result.x0))
    rows = []
    for i in range(len(result.x)):
        for j, var in enumerate(ds.variables):
            changed = diff[i, j] > 0 if var.categories is not None else diff[i, j] > threshold
            if changed:
                rows.append({"point": i, "test_index": int(test_index[i]), "feature": var.name,
                             "original": before.iloc[i, j], "clue": after.iloc[i, j],
                             "uncertainty_before": float(result.uncertainty_before[i]),
                             "uncertainty_after": float(result.uncertainty_after[i])})
    return pd.DataFrame(rows, columns=["point", "test_index", "feature", "original", "clue", "uncertainty_before",
                                       "uncertainty_after"])


def plot_image_grid(path: Path, ds: data.Dataset, result: CLUEResult, posterior: Posterior,
                    per_row: int = 4, max_images: int = 32) -> None:
    """PNG grid: per point, the original, the CLUE and their difference (red added, blue removed).

    Only the first ``max_images`` points (the most uncertain) are drawn; ``explanations.npz`` holds them all.
    """
    from matplotlib.figure import Figure

    h, w, _ = ds.image_shape
    n = min(len(result.x), max_images)
    p_before = np.mean(posterior.predict_samples(result.x0[:n]).numpy(), axis=0)
    p_after = np.mean(posterior.predict_samples(result.x[:n]).numpy(), axis=0)
    n_rows = math.ceil(n / per_row)
    fig = Figure(figsize=(1.6 * 3 * per_row, 1.9 * n_rows))  # no pyplot: the caller's backend is left alone
    axes = fig.subplots(n_rows, 3 * per_row, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, per_row)
        orig, clue = result.x0[i].reshape(h, w), result.x[i].reshape(h, w)
        panels = [(orig, "gray_r", (0, 1), f"y={p_before[i].argmax()} H={result.uncertainty_before[i]:.2f}"),
                  (clue, "gray_r", (0, 1), f"y={p_after[i].argmax()} H={result.uncertainty_after[i]:.2f}"),
                  (clue - orig, "bwr", (-1, 1), "CLUE - original")]
        for k, (img, cmap, (lo, hi), title) in enumerate(panels):
            ax = axes[r, 3 * c + k]
            ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi)
            ax.set_title(title, fontsize=8)
    fig.suptitle(f"CLUEs of the {n} most uncertain {ds.name} test images (predicted class y, entropy H in nats)",
                 fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def main(config: Config) -> dict[str, float]:
    """Runs CLUE on the most uncertain test points and writes the outputs listed in the module docstring."""
    if config.target not in ("total", "aleatoric", "epistemic"):
        raise ValueError(f"--target must be total, aleatoric or epistemic, got {config.target!r}")
    if config.strategy not in ("default", "mirrored"):
        raise ValueError(f"--strategy must be default or mirrored, got {config.strategy!r} (CLUE shards points "
                         "over the local replicas; run one CLUE.generate per worker on its own points instead)")
    set_seed(config.seed)
    ds = data.load(config.dataset, data_dir=config.data_dir, seed=config.seed)
    posterior, vae = load_models(config)
    if posterior.arch.input_dim != ds.x_dim or vae.input_dim != ds.x_dim:
        raise ValueError(f"models expect {posterior.arch.input_dim} (BNN) and {vae.input_dim} (VAE) inputs, but "
                         f"{ds.name} has {ds.x_dim}: were they trained on this dataset?")
    run_dir = make_run_dir(config.out, dataclasses.asdict(config))
    n = config.n_explain if config.n_explain is not None else math.ceil(config.fraction * len(ds.x_test))
    test_index = select_uncertain(posterior, ds.x_test, min(n, len(ds.x_test)), config.target)
    clue_config = CLUEConfig(CLUEWeights.paper(config.lam, ds.x_dim, config.target), lr=config.lr,
                             min_steps=config.min_steps, max_steps=config.max_steps,
                             n_early_stop=config.n_early_stop, batch_size=config.batch_size)
    strategy = make_strategy("mirrored") if config.strategy == "mirrored" else None
    result = CLUE(posterior, vae, clue_config, strategy).explain(ds.x_test[test_index], progress=config.progress)
    result.save(run_dir / "explanations.npz", test_index=test_index)
    summary = {**result.summary(), "dataset": ds.name, "target": config.target,
               "uncertainty_unit": "nats" if ds.task == "classification" else "std (normalised y)",
               "mean_stop_step": float(result.stop_step[result.stop_step > 0].mean()) if np.any(result.stop_step)
               else 0.0}
    if ds.is_image:
        plot_image_grid(run_dir / "clues.png", ds, result, posterior)
    else:
        table = changed_features(ds, result, test_index, config.change_threshold)
        with atomic_path(run_dir / "changes.csv") as tmp:
            table.to_csv(tmp, index=False)
    save_json(run_dir / "summary.json", summary)
    logger.info("explained %d points: uncertainty %.4f -> %.4f, mean L1 %.3f, %.1f s", summary["n_explained"],
                summary["uncertainty_before"], summary["uncertainty_after"], summary["l1_distance"],
                summary["seconds"])
    return summary


if __name__ == "__main__":
    setup_logging()
    main(parse_config(Config, PRESETS, sys.argv[1:], description=__doc__.split("\n")[0]))
