"""The settings of an evaluation run (``python -m CLUE.evaluate``) and their presets; defaults are the paper's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.config import option


@dataclass(frozen=True)
class Config:
    """Every setting of an evaluation run; defaults are the paper's ([nb]) budgets."""

    dataset: str = option("compas", "lsat | compas | credit | wine")
    seed: int = option(0, "seeds every stage (data generation, training, explanations, Monte Carlo)")
    out: str = option("runs/evaluate", "run folder; finished stages found there are reused")
    data_dir: str | None = option(None, "folder of raw data files")
    gt_max_epochs: int = option(2500, "ground-truth VAEAC epoch cap")
    gt_early_stop: int = option(200, "ground-truth VAEAC patience")
    gt_lr: float | None = option(None, "ground-truth VAEAC lr (None: 1e-4 gauss_cat, 3e-4 Gaussian, as [nb])")
    gt_width: int = option(350, "ground-truth VAEAC width ([nb]: 350)")
    gt_depth: int = option(3, "ground-truth VAEAC depth ([nb]: 3)")
    under_epochs: int = option(2500, "under-VAEAC epoch cap")
    under_width: int = option(150, "under-VAEAC width ([nb]: 150)")
    under_lr: float = option(3e-4, "under-VAEAC Adam lr ([nb]: 3e-4)")
    max_train_rows: int | None = option(None, "train the real-data ground truth on the first N rows only")
    bnn_epochs: int = option(2400, "BNN SG-HMC epochs ([nb]: 2400)")
    bnn_burn_in: int = option(120, "BNN burn-in epochs ([nb]: 120)")
    bnn_save_every: int = option(20, "BNN: a weight sample every k epochs ([nb]: 20)")
    bnn_n_saves: int = option(100, "BNN samples kept ([nb]: 100)")
    bnn_width: int = option(200, "BNN width ([nb]: 200)")
    vae_max_epochs: int = option(2500, "CLUE VAE epoch cap")
    vae_lr: float = option(1e-4, "CLUE VAE RAdam lr")
    vae_width: int = option(300, "CLUE VAE width")
    vae_early_stop: int = option(200, "CLUE VAE and in-fill VAEAC patience")
    art_vaeac_max_epochs: int = option(2500, "in-filling VAEAC epoch cap")
    art_vaeac_lr: float | None = option(None, "in-filling VAEAC lr (None: VAEAC.train's default)")
    art_vaeac_width: int = option(350, "in-filling VAEAC width")
    max_explained: int | None = option(1000, "explain a seeded random subset of at most this many selected points "
                                             "per target; None: every selected point, as [nb]")
    threshold_quantile: float | None = option(None, "select by each target's BNN uncertainty quantile over the test "
                                                    "set (0.8: the top 20%); None: the [nb] constants")
    n_gt_samples: int = option(500, "VAEAC prior samples of p_gt(y|x) ([nb]: 500)")
    n_px_samples: int = option(1000, "importance samples of log p_gt(x) ([nb]: 1000)")
    n_clue: int = option(30, "CLUE lambdas, log-spaced in [1e-4, 30] ([nb]: 30)")
    n_ufido: int = option(30, "U-FIDO L1 weights, log-spaced in [1e-5, 100] ([nb]: 30)")
    n_sensitivity: int = option(20, "sensitivity step sizes, log-spaced in [1e-3, 200] ([nb]: 20)")
    clue_max_steps_aleatoric: int = option(55, "CLUE Adam steps, aleatoric runs ([nb]: 55)")
    clue_max_steps_epistemic: int = option(65, "CLUE Adam steps, epistemic runs ([nb]: 65)")
    clue_n_early_stop: int = option(3, "CLUE early-stopping window; 0 runs every step ([nb]: 3)")
    ufido_iterations: int = option(30, "U-FIDO iterations (original: 30)")
    ufido_mnist_norm: bool = option(False, "U-FIDO normalizes the BNN input with MNIST's mean and std, as the "
                                           "original's fit_cat does on every dataset (spec trap 27)")
    n_boot: int = option(1000, "bootstrap resamples of the explained points for the intervals")
    bnn_gradient: str = option("exact", "BNN input gradient of the three methods: exact, or torch13 (the original's "
                                        "stale-weight gradient, as its runs had; DEVIATIONS.md)")
    original_config: bool = option(False, "the authors' configuration: the torch-1.3 gradient in CLUE, U-FIDO and "
                                          "sensitivity, and U-FIDO's MNIST input normalization on classification "
                                          "(overrides --bnn-gradient and --ufido-mnist-norm)")
    stages: str = option("train", "train: train the stages missing from --out; weights: take them from "
                                  "weights/manifest.json (sha256-checked), where a run with these settings published "
                                  "them; rebuild: as weights, but where their files are neither here nor hosted, "
                                  "retrain them (single-threaded TensorFlow) and use them only if every file matches "
                                  "its published sha256")
    publish_stages: bool = option(False, "after training, publish the trained stages into weights/ and its manifest "
                                         "(CLUE.stages)")
    progress: bool = option(True, "show progress bars")


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # for a 2-core CPU: fewer epochs with larger learning rates, shorter chains, fewer Monte Carlo samples,
    # 8 values per sweep over the paper's ranges, at most 300 explained points per target
    "fast": {"gt_max_epochs": 60, "gt_early_stop": 20, "gt_lr": 1e-3, "under_epochs": 60, "under_lr": 1e-3,
             "bnn_epochs": 300, "bnn_burn_in": 60, "bnn_save_every": 4, "bnn_n_saves": 60,
             "vae_max_epochs": 60, "vae_lr": 1e-3, "vae_early_stop": 20, "art_vaeac_max_epochs": 60,
             "art_vaeac_lr": 1e-3, "max_explained": 300, "n_gt_samples": 100, "n_px_samples": 200,
             "n_clue": 8, "n_ufido": 8, "n_sensitivity": 8, "max_train_rows": 8000},
    # seconds, for tests: tiny networks, a handful of epochs and sweep values
    "tiny": {"gt_max_epochs": 3, "gt_early_stop": 5, "gt_lr": 3e-3, "gt_width": 32, "gt_depth": 2,
             "under_epochs": 2, "under_width": 16, "under_lr": 3e-3, "max_train_rows": 1024,
             "bnn_epochs": 4, "bnn_burn_in": 1, "bnn_save_every": 1, "bnn_n_saves": 3, "bnn_width": 16,
             "vae_max_epochs": 2, "vae_lr": 3e-3, "vae_width": 16, "vae_early_stop": 5, "art_vaeac_max_epochs": 2,
             "art_vaeac_lr": 3e-3, "art_vaeac_width": 16, "max_explained": 24, "n_gt_samples": 8,
             "n_px_samples": 8, "n_clue": 2, "n_ufido": 2, "n_sensitivity": 2, "clue_max_steps_aleatoric": 5,
             "clue_max_steps_epistemic": 5, "ufido_iterations": 3, "progress": False},
}
