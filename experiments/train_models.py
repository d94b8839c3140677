"""Helpers of ``experiments/train_models.ipynb``: obtain every BNN, VAE and VAEAC of one dataset, compare their test
metrics with the PyTorch original's, and plot their training curves.

Each model is obtained in this order (:func:`obtain`):

1. pretrained weights listed in ``weights/manifest.json`` (``<model>_<dataset>``, present and sha256-verified): loaded,
   and their test metrics recomputed from the loaded model (and checked against the manifest's recorded ones);
2. a finished run folder ``<out_dir>/<model>_<dataset>_s<seed>`` (one with ``metrics.json`` and the same config):
   its ``metrics.json`` is reused;
3. otherwise the component's training script is run in-process (``BNN.train.main`` etc.); an interrupted run there
   resumes from its checkpoint.

The PyTorch original's figures come from ``../shared/reference/pytorch-original.json`` (LSAT and COMPAS BNN and VAE;
the reference has no VAEAC run).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import data
import weights
from BNN import train as bnn_train
from BNN.posterior import evaluate as evaluate_posterior
from common.config import with_preset
from common.io import PROJECT_ROOT, load_json
from experiments.outputs import shown
from VAE import train as vae_train
from VAEAC import train as vaeac_train

MODELS = ("bnn", "vae", "vaeac")
SCRIPTS = {"bnn": bnn_train, "vae": vae_train, "vaeac": vaeac_train}
REFERENCE = PROJECT_ROOT.parent / "shared" / "reference" / "pytorch-original.json"
# config fields that do not change what a run computes (a finished run with other values is still reused)
_COSMETIC = ("out", "progress", "data_dir", "eval_batch_size")

# our metrics.json key -> the reference's key (or a function of the reference's section)
REFERENCE_KEYS: dict[str, dict[str, Any]] = {
    "bnn": {"test/rmse": "test_rmse", "test/loglik": "test_ll_gauss_marginal_std",
            "test/loglik_mixture": "test_ll_gmm_mixture", "test/accuracy": "test_accuracy", "test/nll": "test_nll",
            "n_samples": "n_weight_samples_saved", "seconds_per_epoch": "wall_s_per_epoch_incl_dev_eval"},
    "vae": {"test/elbo": "test_elbo_best", "test/rec_loglik": "test_rec_loglike_best",
            "test/kl": lambda r: r["test_rec_loglike_best"] - r["test_elbo_best"],
            "test/rmse_continuous": "test_rec_cont_rmse_normalised",
            "test/accuracy_categorical": lambda r: float(np.mean(r["test_rec_cat_accuracy_per_feature"])),
            "best_epoch": "best_epoch", "epochs_run": lambda r: r["settings"]["epochs_run"],
            "seconds_per_epoch": "wall_s_per_epoch_incl_dev_eval"},
    "vaeac": {"test/elbo": None, "test/rec_loglik": None, "test/kl": None, "best_epoch": None, "epochs_run": None,
              "seconds_per_epoch": None},
}
# columns of metrics.csv drawn as training curves
CURVES = {"bnn": ("train/nll", "test_current/nll"), "vae": ("train/elbo", "test/elbo"),
          "vaeac": ("train/elbo", "test/elbo")}


@dataclass
class ModelRun:
    """One obtained model: where it came from, its test metrics and (if any) the run folder with ``metrics.csv``."""

    model: str
    source: str
    metrics: dict[str, float]
    run_dir: Path | None = None
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    recorded: dict[str, float] = field(default_factory=dict)  # the manifest's metrics (pretrained weights only)


def make_configs(dataset: str, seed: int, preset: str, out_dir: str | Path,
                 max_epochs: dict[str, int | None] | None = None, vaeac_targets: bool = True) -> dict[str, Any]:
    """The three scripts' configs: ``preset`` (e.g. ``paper`` or ``tiny``) plus the run's dataset, seed and folder.

    ``max_epochs`` overrides the epoch cap per model (``None`` keeps the preset's): ``n_epochs`` of the BNN,
    ``max_epochs`` of the VAE and VAEAC.
    """
    max_epochs = max_epochs or {}
    configs = {}
    for model in MODELS:
        script = SCRIPTS[model]
        overrides: dict[str, Any] = {"dataset": dataset, "seed": seed, "progress": False,
                                     "out": str(Path(out_dir) / f"{model}_{dataset}_s{seed}")}
        if max_epochs.get(model) is not None:
            overrides["n_epochs" if model == "bnn" else "max_epochs"] = int(max_epochs[model])
        if model == "vaeac":
            overrides["targets"] = vaeac_targets
        configs[model] = with_preset(script.Config, script.PRESETS, preset, **overrides)
    return configs


def config_table(configs: dict[str, Any]) -> pd.DataFrame:
    """Every field of the three scripts' configs side by side (blank where a script has no such field)."""
    table = {m: {**dataclasses.asdict(c), "out": shown(c.out)} for m, c in configs.items()}
    return pd.DataFrame(table).fillna("")


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in _COSMETIC}


def _manifest_run_dir(entry: weights.Entry) -> Path | None:
    """The run folder named by ``--out`` in the manifest's command, if it is present locally with ``metrics.csv``."""
    args = shlex.split(entry.command)
    if "--out" not in args:
        return None
    folder = PROJECT_ROOT / args[args.index("--out") + 1]
    return folder if (folder / "metrics.csv").exists() else None


def pretrained_metrics(model: str, name: str, manifest: weights.Manifest, dataset: data.Dataset) -> dict[str, float]:
    """Test metrics recomputed from the verified pretrained weights ``name`` (as the training script reports them)."""
    if model == "bnn":
        posterior = weights.load_posterior(name, download=False, manifest=manifest)
        metrics = {f"test/{k}": v for k, v in evaluate_posterior(posterior, dataset.x_test, dataset.y_test,
                                                                  y_std=float(dataset.y_std[0])).items()}
        return {**metrics, "n_samples": posterior.n_samples}
    if model == "vae":
        vae = weights.load_vae(name, download=False, manifest=manifest)
        return {f"test/{k}": v for k, v in vae_train.evaluate_vae(vae, dataset.x_test.astype(np.float32)).items()}
    raise ValueError(f"no loader for pretrained {model!r} weights")


def obtain(model: str, config: Any, manifest: weights.Manifest | None = None) -> ModelRun:
    """Loads, reuses or trains one model (see the module docstring); ``manifest=None`` never uses weights."""
    name = f"{model}_{config.dataset}"
    asdict = {**dataclasses.asdict(config), "out": shown(config.out)}
    if manifest is not None and name in manifest.entries and weights.available(name, manifest):
        entry = manifest.entry(name)
        start = time.perf_counter()
        metrics = pretrained_metrics(model, name, manifest, data.load(config.dataset, data_dir=config.data_dir))
        # the training run's own figures (epochs, best epoch, seconds per epoch) come from the manifest
        metrics = {**{k: v for k, v in entry.metrics.items() if not k.startswith("test/")}, **metrics}
        return ModelRun(model, f"pretrained weights ({entry.path})", metrics, _manifest_run_dir(entry),
                        time.perf_counter() - start, asdict, dict(entry.metrics))
    run_dir = Path(config.out)
    if (run_dir / "metrics.json").exists() and (run_dir / "config.json").exists() and \
            _comparable(load_json(run_dir / "config.json")) == _comparable(asdict):
        return ModelRun(model, f"finished run ({shown(run_dir)})", load_json(run_dir / "metrics.json"), run_dir, 0.0,
                        asdict)
    start = time.perf_counter()
    metrics = SCRIPTS[model].main(config)
    return ModelRun(model, f"trained now ({shown(run_dir)})", dict(metrics), run_dir, time.perf_counter() - start,
                    asdict)


def obtain_all(configs: dict[str, Any], manifest: weights.Manifest | None) -> dict[str, ModelRun]:
    return {model: obtain(model, config, manifest) for model, config in configs.items()}


def read_manifest(weights_dir: str | Path | None) -> weights.Manifest | None:
    """The manifest in ``weights_dir`` (``None`` or a folder without ``manifest.json``: no pretrained weights)."""
    if weights_dir is None or not (Path(weights_dir) / "manifest.json").exists():
        return None
    return weights.read_manifest(Path(weights_dir) / "manifest.json")


def manifest_agreement(runs: dict[str, ModelRun]) -> pd.DataFrame:
    """Recomputed vs recorded (manifest) test metrics of the pretrained models."""
    rows = [{"model": r.model, "metric": k, "recomputed": r.metrics[k], "manifest": v,
             "abs diff": abs(r.metrics[k] - v)}
            for r in runs.values() for k, v in r.recorded.items() if k.startswith("test/") and k in r.metrics]
    return pd.DataFrame(rows, columns=["model", "metric", "recomputed", "manifest", "abs diff"])


def load_reference(path: str | Path = REFERENCE) -> dict[str, Any]:
    """The PyTorch original's figures (empty if the reference file is absent)."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else {}


def comparison_table(dataset: str, runs: dict[str, ModelRun], reference: dict[str, Any]) -> pd.DataFrame:
    """One row per (model, metric): ours beside the original's (NaN where the reference has no such run)."""
    rows = []
    for model, run in runs.items():
        section = reference.get(dataset, {}).get(model, {})
        for key, ref_key in REFERENCE_KEYS[model].items():
            if key not in run.metrics:
                continue
            if ref_key is None or not section:
                original = float("nan")
            else:
                original = ref_key(section) if callable(ref_key) else section.get(ref_key, float("nan"))
            rows.append({"model": model, "metric": key, "ours": float(run.metrics[key]),
                         "original (PyTorch)": float(original), "source": run.source})
    return pd.DataFrame(rows).set_index(["model", "metric"])


def summary(dataset: str, runs: dict[str, ModelRun], table: pd.DataFrame) -> dict[str, Any]:
    """What the notebook saves: each model's source, config and metrics, and the comparison table."""
    def clean(v):
        return None if isinstance(v, float) and not math.isfinite(v) else v

    return {"dataset": dataset,
            "models": {m: {"source": r.source, "seconds": r.seconds, "metrics": r.metrics,
                           "manifest_metrics": r.recorded or None, "config": r.config} for m, r in runs.items()},
            "comparison": [{k: clean(v) for k, v in row.items()} for row in table.reset_index().to_dict("records")]}


def plot_curves(runs: dict[str, ModelRun], title: str = ""):
    """Training curves (``metrics.csv``) of every run that has a run folder; ``None`` if none has.

    BNN: per-epoch training NLL and the current weights' test NLL (every ``eval_every`` epochs); VAE/VAEAC: training
    and test ELBO per epoch, with the exported (best) epoch marked.
    """
    import matplotlib.pyplot as plt

    with_csv = {m: r for m, r in runs.items() if r.run_dir is not None and (r.run_dir / "metrics.csv").exists()}
    if not with_csv:
        return None
    fig, axes = plt.subplots(1, len(with_csv), figsize=(4.6 * len(with_csv), 3.4), squeeze=False)
    for ax, (model, run) in zip(axes[0], with_csv.items()):
        frame = pd.read_csv(run.run_dir / "metrics.csv")
        for col in CURVES[model]:
            if col in frame:
                part = frame[["epoch", col]].dropna()
                ax.plot(part["epoch"], part[col], ".-" if len(part) < 40 else "-", ms=3, label=col)
        if "best_epoch" in run.metrics:
            ax.axvline(run.metrics["best_epoch"], color="k", ls="--", lw=1, label="exported (best) epoch")
        ax.set_xlabel("epoch")
        ax.set_title(f"{model}: {shown(run.run_dir)}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
