"""Helpers of ``experiments/clues_mnist.ipynb``: CLUEs of the most uncertain MNIST test digits (paper's MNIST figure).

The notebook calls :func:`resolve_dataset`, :func:`load_models`, :func:`explain`, :func:`summarise`,
:func:`plot_clues` and :func:`comparison`. Selection and optimisation are ``CLUE.generate``'s
(``explain_most_uncertain``: :class:`CLUE.CLUE` with ``CLUEWeights.paper``), with the reference's MNIST settings
(200 most uncertain test images, lambda 4, lr 0.1, 35 steps, batch 128; ``../shared/reference/mnist-t10k-original.md``,
section 3).
"""

from __future__ import annotations

import json
import logging
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
from common.errors import UserError
from common.io import PROJECT_ROOT
from data.sources import DataFileError, fetch
from experiments.outputs import shown
from VAE import train as vae_train
from VAE.model import load_vae

REFERENCE = PROJECT_ROOT.parent / "shared" / "reference" / "mnist-t10k-original.json"
VAE_EPOCH_CAP = 15  # the reference's MNIST VAE cap (mnist-t10k-original.md, section 2)
BNN_PRESETS = {"mnist": "mnist_paper", "mnist_t10k": "mnist"}  # the BNN.train preset trained when no run is found
logger = logging.getLogger(__name__)


def resolve_dataset(dataset: str | None) -> str:
    """``dataset``, or when None: ``mnist`` if its 60k training images are available locally, else ``mnist_t10k``
    (never downloads)."""
    if dataset:
        return dataset
    try:
        fetch("mnist/train-images-idx3-ubyte.gz", download=False)
        fetch("mnist/train-labels-idx1-ubyte.gz", download=False)
    except DataFileError:
        return "mnist_t10k"
    return "mnist"


def _inner(folder: str | Path, inner: str) -> Path | None:
    """``folder/inner`` or ``folder`` itself when it holds a model export; None when absent."""
    path = PROJECT_ROOT / folder if not Path(folder).is_absolute() else Path(folder)
    if (path / inner).is_dir():
        return path / inner
    if any((path / f).is_file() for f in ("model.json", "config.json", "model_config.json")):  # new or legacy
        return path
    return None


def load_models(dataset: str, bnn_dir: str, vae_dir: str, weights_dir: str | Path, seed: int = 0,
                smoke: bool = False) -> tuple[Posterior, Any, dict[str, str]]:
    """The BNN posterior and the VAE, and where each came from.

    ``smoke``: tiny models (``BNN.train`` / ``VAE.train`` ``tiny`` presets) trained into ``weights_dir``, whatever
    exists elsewhere. Otherwise the BNN is the pretrained ``bnn_mnist`` (when present and trained on ``dataset``),
    else the run in ``bnn_dir`` (None: ``runs/bnn_paper/<dataset>_s<seed>``), else trained into ``weights_dir/bnn``
    with :data:`BNN_PRESETS` (hours on a CPU: a warning says so); the VAE likewise is the committed ``vae_mnist``,
    else the run in ``vae_dir`` (None: ``runs/paper/vae_<dataset>_s<seed>``), else trained into ``weights_dir/vae``
    with ``--preset paper --max-epochs 15`` (the reference's cap). ``UserError`` if a run was trained on another
    dataset than ``dataset``.
    """
    weights_dir = Path(weights_dir)
    sources = {}
    bnn_dir = bnn_dir or f"runs/bnn_paper/{dataset}_s{seed}"
    vae_dir = vae_dir or f"runs/paper/vae_{dataset}_s{seed}"
    bnn_path = None if smoke else _inner(bnn_dir, "posterior")
    manifest = weights.read_manifest()
    if not smoke and weights.available("bnn_mnist", manifest) and \
            manifest.entry("bnn_mnist").info.get("dataset") == dataset:
        posterior, sources["bnn"] = weights.load_posterior("bnn_mnist", manifest=manifest), "weights: bnn_mnist"
    elif bnn_path is not None:
        posterior, sources["bnn"] = _same_dataset(Posterior.load(bnn_path), dataset, bnn_path), shown(bnn_path)
    else:
        out = weights_dir / "bnn"
        preset = "tiny" if smoke else BNN_PRESETS[dataset]
        if not smoke:
            logger.warning("no %s BNN in %s: training one into %s with --preset %s (hours on a CPU; the "
                           "command: python -m BNN.train --preset %s --seed %d --out %s)", dataset, bnn_dir, out,
                           preset, preset, seed, bnn_dir)
        bnn_train.main(with_preset(bnn_train.Config, bnn_train.PRESETS, preset,
                                   dataset=dataset, seed=seed, out=str(out), progress=False))
        posterior, sources["bnn"] = Posterior.load(out / "posterior"), f"trained: {out}"
    vae_path = None if smoke else _inner(vae_dir, "best")
    if not smoke and weights.available("vae_mnist", manifest) and \
            manifest.entry("vae_mnist").info.get("dataset") == dataset:
        vae, sources["vae"] = weights.load_vae("vae_mnist", manifest=manifest), "weights: vae_mnist"
    elif vae_path is not None:
        vae, sources["vae"] = _same_dataset(load_vae(vae_path), dataset, vae_path), shown(vae_path)
    else:
        out = weights_dir / "vae"
        extra = {} if smoke else {"max_epochs": VAE_EPOCH_CAP}
        if not smoke:
            logger.warning("no %s VAE in %s: training one into %s (hours on a CPU; the command: python -m VAE.train "
                           "--dataset %s --preset paper --max-epochs %d --seed %d --out %s)", dataset, vae_dir, out,
                           dataset, VAE_EPOCH_CAP, seed, vae_dir)
        vae_train.main(with_preset(vae_train.Config, vae_train.PRESETS, "tiny" if smoke else "paper",
                                   dataset=dataset, seed=seed, out=str(out), progress=False, **extra))
        vae, sources["vae"] = load_vae(out / "best"), f"trained: {out}"
    return posterior, vae, sources


def _same_dataset(model, dataset: str, path: Path):
    """``model``, or UserError when it records another training dataset than ``dataset``."""
    trained_on = getattr(model, "dataset", None)
    if trained_on is not None and trained_on != dataset:
        raise UserError(f"{shown(path)} holds a model trained on {trained_on}, not {dataset}: pass the run of "
                        f"{dataset} (bnn_dir / vae_dir), or dataset={trained_on!r}")
    return model


def explain(ds: data.Dataset, posterior: Posterior, vae, n_explain: int, lam: float, lr: float, max_steps: int,
            batch_size: int) -> tuple[CLUEResult, np.ndarray]:
    """CLUEs of the ``n_explain`` most uncertain test images, most uncertain first, and their test indices
    (``CLUE.generate.explain_most_uncertain``)."""
    config = CLUEConfig(CLUEWeights.paper(lam, ds.x_dim), lr=lr, max_steps=max_steps, batch_size=batch_size)
    return generate.explain_most_uncertain(CLUE(posterior, vae, config), ds.x_test, n_explain)


def predictive(posterior: Posterior, x: np.ndarray) -> np.ndarray:
    """Mean class probabilities ``[n, C]`` over the posterior samples."""
    return np.concatenate([np.mean(posterior.predict_samples(x[i:i + 1024]).numpy(), axis=0)
                           for i in range(0, len(x), 1024)])


def summarise(ds: data.Dataset, result: CLUEResult, test_index: np.ndarray, posterior: Posterior,
              vae) -> dict[str, Any]:
    """``CLUEResult.summary()`` plus the reference table's figures: the VAE reconstruction of x0 alone, how often
    the predicted class changes, and agreement with the true labels."""
    x0 = result.x0
    recon = vae.reconstruct(x0)
    clue = CLUE(posterior, vae)
    p0, p1, pr = predictive(posterior, x0), predictive(posterior, result.x), predictive(posterior, recon)
    y = ds.y_test[test_index].astype(int)
    return {**result.summary(), "dataset": ds.name, "uncertainty_unit": "entropy (nats)",
            "n_bnn_samples": int(posterior.n_samples),
            "mean_uncertainty_all_test": float(clue.uncertainty(ds.x_test).mean()),
            "uncertainty_recon": float(clue.uncertainty(recon).mean()),
            "recon_l1": float(np.abs(recon - x0).sum(axis=1).mean()),
            "median_l1": float(np.median(result.l1_distance)),
            "frac_class_changed": float(np.mean(p0.argmax(1) != p1.argmax(1))),
            "frac_class_changed_recon": float(np.mean(p0.argmax(1) != pr.argmax(1))),
            "frac_original_pred_correct": float(np.mean(p0.argmax(1) == y)),
            "frac_clue_pred_equals_label": float(np.mean(p1.argmax(1) == y)),
            "seconds_per_100_points": float(100 * result.seconds / len(x0))}


def plot_clues(ds: data.Dataset, result: CLUEResult, test_index: np.ndarray, posterior: Posterior, n_show: int):
    """Per digit (one row): original, its predictive distribution, CLUE, its predictive distribution, and the
    difference CLUE - original (red: ink added, blue: ink removed)."""
    import matplotlib.pyplot as plt

    n = min(n_show, len(result.x))
    h, w, _ = ds.image_shape
    p0, p1 = predictive(posterior, result.x0[:n]), predictive(posterior, result.x[:n])
    classes = np.arange(p0.shape[1])
    fig, axes = plt.subplots(n, 5, figsize=(9.5, 1.75 * n + 0.6), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.5, 1, 1.5, 1]})
    for i in range(n):
        label = int(ds.y_test[test_index[i]])
        x0, x1 = result.x0[i].reshape(h, w), result.x[i].reshape(h, w)
        images = ((0, x0, "gray_r", (0, 1), f"original (label {label})"),
                  (2, x1, "gray_r", (0, 1), "CLUE"), (4, x1 - x0, "bwr", (-1, 1), "CLUE - original"))
        for col, img, cmap, (lo, hi), title in images:
            axes[i, col].imshow(img, cmap=cmap, vmin=lo, vmax=hi)
            axes[i, col].set_title(title, fontsize=8)
            axes[i, col].set_xticks([]), axes[i, col].set_yticks([])
        for col, p, u, of in ((1, p0[i], result.uncertainty_before[i], "x0"),
                              (3, p1[i], result.uncertainty_after[i], "CLUE")):
            ax = axes[i, col]
            colours = ["tab:green" if c == label else "tab:blue" for c in classes]
            ax.bar(classes, p, color=colours)
            ax.set(ylim=(0, 1), xticks=classes)
            ax.tick_params(labelsize=7)
            ax.set_title(f"p(y|{of}): pred {p.argmax()}, H = {u:.2f} nats", fontsize=8)
    fig.suptitle(f"CLUEs of the {n} most uncertain {ds.name} test digits (green bar: true label)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    return fig


def original_figures(dataset: str, path: Path = REFERENCE) -> dict[str, dict[str, float]] | None:
    """The PyTorch original's MNIST CLUE figures (on ``mnist_t10k`` only), exact and torch-1.3 gradients."""
    if dataset != "mnist_t10k" or not path.exists():
        return None
    reference = json.loads(path.read_text())
    out = {}
    for key in ("clue_exact_grad", "clue"):
        run = reference[key]
        out[key] = {"n_explained": run["n_explained"], "n_bnn_samples": run["n_bnn_samples_used"],
                    "mean_uncertainty_all_test": run["mean_entropy_all_test"],
                    "uncertainty_before": run["mean_entropy_before_original_x"],
                    "uncertainty_after": run["mean_entropy_after_clue"],
                    "l1_distance": run["mean_L1_pixel_clue_vs_original"],
                    "fraction_reduced": run["frac_entropy_reduced"],
                    "uncertainty_recon": run["mean_entropy_before_vae_reconstruction"],
                    "recon_l1": run["mean_L1_pixel_reconstruction_vs_original"],
                    "frac_class_changed": run["frac_pred_class_changed"],
                    "frac_class_changed_recon": run["frac_pred_class_changed_recon_vs_original"],
                    "frac_original_pred_correct": run["frac_original_pred_equals_true_label"],
                    "frac_clue_pred_equals_label": run["frac_clue_class_equals_true_label"],
                    "seconds_per_100_points": run["wall_s_per_100_points"]}
    return out


def comparison(summary: dict[str, Any], original: dict[str, dict] | None) -> pd.DataFrame:
    """Ours beside the original's exact-gradient and torch-1.3-gradient runs (columns), one figure per row."""
    columns = {"ours (TF2)": summary}
    if original:
        columns["original, exact gradients"] = original["clue_exact_grad"]
        columns["original, torch-1.3 grads"] = original["clue"]
    keys = [k for k in original["clue"]] if original else [k for k in summary if isinstance(summary[k], float)]
    return pd.DataFrame({name: {k: col.get(k, np.nan) for k in keys} for name, col in columns.items()}).round(4)
