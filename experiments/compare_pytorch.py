"""Every figure of the PyTorch original beside ours: helpers of ``experiments/compare_pytorch.ipynb``.

Three sources of figures meet here:

* the original's, copied with their provenance from ``../shared/reference/`` into
  ``experiments/reference/pytorch_original.json`` by ``python experiments/compare_pytorch.py reference``;
* ours, read from the committed results of this repository (``experiments/results/*.json``,
  ``weights/manifest.json``, ``benchmarks/results/*.json``) and, for per-seed values of runs whose folders are not
  committed, from ``experiments/results/ours_summary.json``, written by ``python experiments/compare_pytorch.py ours``
  from the run folders under ``runs/`` (each entry names the command that produced it);
* the exact-parity check: the original's trained LSAT and COMPAS models loaded into our classes, their outputs
  recomputed and compared with those the PyTorch code recorded (the parity kit, ``../shared/reference/parity``,
  tolerances of its SCHEMA.md section 9).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from common.utils import PROJECT_ROOT, save_json

SHARED_REFERENCE = PROJECT_ROOT.parent / "shared" / "reference"
REFERENCE_JSON = PROJECT_ROOT / "experiments" / "reference" / "pytorch_original.json"
OURS_SUMMARY = PROJECT_ROOT / "experiments" / "results" / "ours_summary.json"
LIKELIHOOD = {"lsat": "gaussian", "compas": "categorical"}
VARIANTS = {"clue_exact": ("exact", 0.1), "clue_orig": ("orig", 0.1), "clue_exact_lr0.01": ("exact", 0.01),
            "clue_orig_lr0.01": ("orig", 0.01)}

# SCHEMA.md section 9 ("suggested acceptance tolerances for the TF side, float32"); tests/test_parity.py states its own.
TOLERANCES = {
    "forward_atol": 1e-5,  # single forward passes: BNN mu/sigma/probs, VAE loc/scale/dec_out, ELBO terms
    "compas_logits_atol": 1e-4,  # COMPAS logits reach |88.8|
    "elbo_terms_rtol": 1e-6,  # ELBO terms reach |30|: float32 summation order adds a few ulps (tests/test_vae_model)
    "uncertainty_atol": 1e-5,
    "clue_step0_atol": 1e-5,  # x_traj_raw[0], uncertainty_raw[0], cost_raw[0]
    "grad_z0_atol": 1e-4, "grad_z0_min_fraction": 0.999,
    "x_final_row_atol": 1e-3, "x_final_min_fraction": 0.99,
    "x_final_max_atol": 5e-2,  # no row beyond: SCHEMA 7's 1e-6 change of z_init moves single rows by up to 2e-2
    "mean_u_after_atol": 1e-3,
}


def x_final_min_fraction(n_rows: int) -> float:
    """SCHEMA 9's ">= 99% of rows with max |diff| of final x < 1e-3", with at least one row allowed out.

    SCHEMA 7 shows single rows crossing 1e-3 after a 1e-6 change of z_init, and which row does so on a re-implementation
    depends on the CPU's float32 kernels (one LSAT row on one machine, one COMPAS row on another). COMPAS explains 62
    rows, where a strict 99% would allow none; the ``x_final_max_atol`` check still bounds every row.
    """
    return min(TOLERANCES["x_final_min_fraction"], 1.0 - 1.0 / n_rows)


def resolve(path: str | Path) -> Path:
    """A path relative to the project root (notebooks run with ``--cwd .``, tests from anywhere)."""
    path = Path(path)
    return path if path.is_absolute() else PROJECT_ROOT / path


# ------------------------------------------------------------------------------------------------ exact parity
def _check(rows: list, dataset: str, component: str, check: str, value: float, tol: float, rule: str = "max"):
    """Appends one parity check. ``rule``: ``max`` (value <= tol), ``min`` (value >= tol) or ``eq`` (value == tol)."""
    ok = {"max": value <= tol, "min": value >= tol, "eq": value == tol}[rule]
    sign = {"max": "<=", "min": ">=", "eq": "=="}[rule]
    rows.append({"dataset": dataset, "component": component, "check": check, "value": float(value),
                 "tolerance": f"{sign} {tol:g}", "passes": bool(ok)})


def _maxabs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def parity(parity_dir: str | Path, datasets: Iterable[str] = ("lsat", "compas"), smoke: bool = False,
           data_dir: str | None = None) -> tuple[list[dict], dict[str, dict[str, float]]]:
    """Recomputes, with our classes, every output the original's trained models produced (SCHEMA.md sections 4-5).

    Args:
      parity_dir: the kit's folder (``lsat/`` and ``compas/`` with ``bnn_samples.npz``, ``vae.npz``, ``io.npz``).
      datasets: which of ``lsat`` / ``compas``.
      smoke: run the whole CLUE optimisation for the main variant only (exact gradients, lr 0.1); the first step
        and its gradient are still checked for both gradient variants.
      data_dir: where ``data.load`` finds the upstream files, for the bitwise check of our preprocessing (skipped
        when the files are not there).

    Returns:
      (checks, figures): one dict per check (dataset, component, check, value, tolerance, passes), and per dataset
      the aggregate figures recomputed live (test metrics with 53 samples, mean ELBO, CLUE means per variant).
    """
    import tensorflow as tf

    from BNN.posterior import Posterior, evaluate
    from CLUE.compat import OriginalGradientMLP
    from CLUE.explainer import CLUE, CLUEConfig, CLUEWeights
    from VAE.model import load_parity_npz

    tol = TOLERANCES
    rows: list[dict] = []
    figures: dict[str, dict[str, float]] = {}
    for name in datasets:
        folder = resolve(parity_dir) / name
        io = dict(np.load(folder / "io.npz"))
        full = Posterior.from_npz(folder / "bnn_samples.npz", LIKELIHOOD[name])
        post = full[:-1]  # the original averages over samples 0..52 of the 54 saved (its off-by-one)
        vae = load_parity_npz(folder / "vae.npz")
        x, fig = io["x_test"], {}
        figures[name] = fig

        # Data: our preprocessing of the upstream files gives the kit's model-input test set.
        try:
            import data

            ds = data.load(name, data_dir=data_dir)
            _check(rows, name, "data", "preprocessed x_test, max |diff|", _maxabs(ds.x_test, x), 0.0, "eq")
        except (FileNotFoundError, OSError, RuntimeError):
            pass

        # BNN: per-sample outputs, uncertainty split, selection of the explained rows, test metrics.
        n = int(io["bnn/n_rows_per_sample_outputs"])
        out = full.forward(x[:n]).numpy()
        if name == "lsat":
            mu, sigma = full.predict_samples(x[:n])
            _check(rows, name, "BNN", "per-sample raw outputs [54, 1000, 2], max |diff|",
                   _maxabs(out, io["bnn/out_raw"]), tol["forward_atol"])
            _check(rows, name, "BNN", "per-sample mu, max |diff|", _maxabs(mu, io["bnn/mu"]), tol["forward_atol"])
            _check(rows, name, "BNN", "per-sample sigma, max |diff|", _maxabs(sigma, io["bnn/sigma"]),
                   tol["forward_atol"])
        else:
            _check(rows, name, "BNN", "per-sample logits [54, 618, 2], max |diff|", _maxabs(out, io["bnn/logits"]),
                   tol["compas_logits_atol"])
            _check(rows, name, "BNN", "per-sample probabilities, max |diff|",
                   _maxabs(full.predict_samples(x).numpy(), io["bnn/probs"]), tol["forward_atol"])
        for suffix, p in (("Sm1", post), ("S", full)):
            ours = [u.numpy() for u in p.uncertainty(x)]
            worst = max(_maxabs(u, io[f"bnn/unc_{k}_{suffix}"]) for u, k in zip(ours, ("total", "aleatoric",
                                                                                         "epistemic")))
            label = "53 samples (as the original)" if suffix == "Sm1" else "all 54 samples"
            _check(rows, name, "BNN", f"uncertainty split (total, aleatoric, epistemic), {label}, max |diff|", worst,
                   tol["uncertainty_atol"])
            if suffix == "Sm1":
                total = ours[0]
        k = len(io["clue/idx"])
        _check(rows, name, "BNN", "rows of the 10% most uncertain set that differ",
               len(set(np.argsort(-total)[:k]) ^ set(io["clue/idx"].tolist())), 0, "eq")
        fig["mean_uncertainty_all_test"] = float(total.mean())
        if name == "lsat":
            m = evaluate(post, x, io["y_test"], y_std=float(io["y_stds"][0]))
            fig.update(test_rmse=m["rmse"], test_loglik=m["loglik"], test_loglik_mixture=m["loglik_mixture"])
        else:
            m = evaluate(post, x, io["y_test"])
            fig.update(test_accuracy=m["accuracy"], test_nll=m["nll"])

        # VAE: encoder, decoder, regenerate, ELBO terms on the whole test set.
        enc = vae.encoder(x).numpy()
        loc, scale = (t.numpy() for t in vae.encode(x))
        _check(rows, name, "VAE", "encoder output [N, 8], max |diff|", _maxabs(enc, io["vae/enc_params"]),
               tol["forward_atol"])
        _check(rows, name, "VAE", "encoder loc, max |diff|", _maxabs(loc, io["vae/enc_loc"]), tol["forward_atol"])
        _check(rows, name, "VAE", "encoder scale, max |diff|", _maxabs(scale, io["vae/enc_scale"]),
               tol["forward_atol"])
        _check(rows, name, "VAE", "decoder output at loc, max |diff|",
               _maxabs(vae.decode(io["vae/enc_loc"]).numpy(), io["vae/dec_out"]), tol["forward_atol"])
        hard = vae.regenerate(io["vae/enc_loc"], straight_through=False).numpy()
        _check(rows, name, "VAE", "regenerate (hard one-hot), max |diff|", _maxabs(hard, io["vae/regen"]),
               tol["forward_atol"])
        terms = {key: t.numpy() for key, t in vae.elbo_terms(x).items()}
        for ours_key, key in (("rec_per_term", "rec_ll_per_feature"), ("kl_per_dim", "kl_per_dim"),
                              ("elbo", "elbo")):
            ref = io[f"vae/{key}"]
            # max |diff| - rtol |ref| <= atol, i.e. numpy's allclose(rtol=1e-6, atol=1e-5) as a number
            excess = float(np.max(np.abs(terms[ours_key] - ref) - tol["elbo_terms_rtol"] * np.abs(ref)))
            _check(rows, name, "VAE", f"{key} per row, max (|diff| - 1e-6 |ref|)", excess, tol["forward_atol"])
        fig["test_elbo"] = float(terms["elbo"].mean())
        fig["test_rec_loglik"] = float(terms["rec"].mean())
        fig["test_kl"] = float(terms["kl"].mean())
        _check(rows, name, "VAE", "mean test ELBO, |diff|", abs(fig["test_elbo"] - float(io["vae/elbo_mean_eval"])),
               tol["forward_atol"])

        # CLUE: step 0 and its gradient, then the whole optimisation, for each variant of the reference.
        bnns = {"exact": post, "orig": OriginalGradientMLP.from_npz(folder / "bnn_samples.npz", LIKELIHOOD[name])}
        x0, z_init = io["clue/x0"], io["clue/z_init"]
        _check(rows, name, "CLUE", "z_init (encoder loc of x0), max |diff|",
               _maxabs(CLUE(post, vae).encode(x0), z_init), tol["forward_atol"])
        fig["mean_uncertainty_before"] = float(CLUE(post, vae).uncertainty(io["clue/x0"]).mean())
        for prefix, (variant, lr) in VARIANTS.items():
            label = f"{variant} gradients, lr {lr:g}"
            config = CLUEConfig(CLUEWeights.paper(lam=2.0, x_dim=x.shape[1]), lr=lr, min_steps=3, max_steps=50,
                                n_early_stop=3, batch_size=256)
            clue = CLUE(bnns[variant], vae, config)
            ref = {key: io[f"{prefix}/{key}"] for key in ("x_traj_raw", "uncertainty_raw", "cost_raw", "grad_z_raw",
                                                          "stop_step", "x_final", "u_after_total_Sm1",
                                                          "u_rec0_total_Sm1")}
            if lr == 0.1:  # step 0 does not depend on lr
                z = tf.constant(z_init)
                with tf.GradientTape() as tape:
                    tape.watch(z)
                    step0 = clue.objective(z, tf.constant(x0), z)
                    cost = tf.reduce_sum(step0["cost"])
                grad = tape.gradient(cost, z).numpy()
                worst = max(_maxabs(step0["x"], ref["x_traj_raw"][0]),
                            _maxabs(step0["uncertainty"], ref["uncertainty_raw"][0]),
                            _maxabs(step0["cost"], ref["cost_raw"][0]))
                _check(rows, name, "CLUE", f"{label}: step 0 x, uncertainty and cost, max |diff|", worst,
                       tol["clue_step0_atol"])
                row_err = np.abs(grad - ref["grad_z_raw"][0]).max(axis=1)
                _check(rows, name, "CLUE", f"{label}: fraction of rows with step-0 dcost/dz within 1e-4",
                       float(np.mean(row_err < tol["grad_z0_atol"])), tol["grad_z0_min_fraction"], "min")
                fig["mean_uncertainty_vae_reconstruction"] = float(step0["uncertainty"].numpy().mean())
            if smoke and prefix != "clue_exact":
                continue
            result = clue.explain(x0, z_init=z_init)
            _check(rows, name, "CLUE", f"{label}: rows whose early-stop step differs",
                   int(np.sum(result.stop_step != ref["stop_step"])), 0, "eq")
            row_dx = np.abs(result.x - ref["x_final"]).max(axis=1)
            _check(rows, name, "CLUE", f"{label}: fraction of rows with max |diff| of final x < 1e-3",
                   float(np.mean(row_dx < tol["x_final_row_atol"])), x_final_min_fraction(len(row_dx)), "min")
            _check(rows, name, "CLUE", f"{label}: final x, max |diff| (a 1e-6 change of z_init moves one row by up "
                   "to 2e-2, SCHEMA 7)", float(row_dx.max()), tol["x_final_max_atol"])
            after = float(result.uncertainty_after.mean())
            _check(rows, name, "CLUE", f"{label}: mean uncertainty after CLUE, |diff|",
                   abs(after - float(ref["u_after_total_Sm1"].mean())), tol["mean_u_after_atol"])
            fig[f"{prefix}/mean_uncertainty_after"] = after
            fig[f"{prefix}/mean_l1"] = float(np.abs(result.x - x0).sum(axis=1).mean())
            fig[f"{prefix}/fraction_reduced"] = float(np.mean(result.uncertainty_after < result.uncertainty_before))
    return rows, figures


# ---------------------------------------------------------------------------------- the original's figures
MACHINE = ("the original's reference machine: 2 vCPU AMD EPYC (nproc 2), 23 GiB RAM, CPU only; Python 3.11.7, "
           "torch 2.13.0+cpu (2 threads), numpy 2.4.6; OMP_WAIT_POLICY=PASSIVE; runs of 2026-11-22, sequential, "
           "otherwise idle")
CODE = ("cambridge-mlg/CLUE at commit 3aaea125f626325b2446bc37bb7ed664d095efb4, patched for Python 3.11 / torch 2.13 "
        "CPU (10 patches, listed under provenance.patches)")
SEEDS_TABULAR = ("one run: the driver sets torch.manual_seed(0) and np.random.seed(0); BNN_gauss/BNN_cat.create_net "
                 "reseed torch with 42 after building the model; COMPAS split rseed=42, test_ratio=0.1; LSAT the "
                 "upstream train/test csv")
SEEDS_MNIST = ("one run: torch.manual_seed(0), np.random.seed(0); BNN_cat.create_net reseeds torch with 42; mnist_t10k "
               "split RandomState(0).permutation(10000), 8000 train / 2000 test")
SEEDS_PARITY = ("the same trained files as the tabular reference runs; outputs recomputed in one process per dataset, "
                "bitwise identical over two regenerations (SCHEMA.md section 7)")

RUNS = {
    "tabular_setup": ("data loading and environment of the tabular reference runs", SEEDS_TABULAR),
    "lsat_bnn": ("MLP_gauss 12-200-200-2 + BNN_gauss, H_SA_SGHMC(lr 1e-2, base_C 0.05, gauss_sig 0.1, alpha0 = beta0 "
                 "= 10), batch 512, burn-in 120, 1200 epochs (cap), 54 samples saved, 53 used (sample_predict drops "
                 "the last); test metrics on the 4358 upstream test rows", SEEDS_TABULAR),
    "compas_bnn": ("MLP 17-200-200-2 + BNN_cat, the LSAT schedule (1200 epochs, 54 saved / 53 used); test metrics on "
                   "the 618 test rows of the rseed-42 split", SEEDS_TABULAR),
    "lsat_vae": ("VAE_gauss_cat_net width 300, depth 3, latent 4, RAdam lr 1e-4, batch 128, 150 epochs (cap, no early "
                 "stop); best dev-ELBO checkpoint (theta_best.dat)", SEEDS_TABULAR),
    "compas_vae": ("VAE_gauss_cat_net width 300, depth 3, latent 4, RAdam lr 1e-4, batch 128, 200 epochs (cap, no "
                   "early stop); best dev-ELBO checkpoint", SEEDS_TABULAR),
    "lsat_clue": ("CLUE.batch_optimise on the 436 most uncertain LSAT test points (total std, 53 samples) with the "
                  "BNN and VAE above: uncertainty weight 1, distance weight 2/12 (lambda 2), Adam, min_steps 3, "
                  "max_steps 50 (always all run), n_early_stop 3, batch 256, z_init = encoder mean; lr and gradient "
                  "variant as in the key (clue: torch-1.3 gradient semantics, patch 10; clue_exact_grad: "
                  "CLUE_EXACT_GRAD=1)", SEEDS_TABULAR),
    "compas_clue": ("CLUE.batch_optimise on the 62 most uncertain COMPAS test points (total entropy, 53 samples), "
                    "settings as LSAT with distance weight 2/17", SEEDS_TABULAR),
    "tabular_timing": ("sample_predict timing, all saved samples (54 stored, 53 used), median of 5 after one warm-up",
                       SEEDS_TABULAR),
    "mnist_setup": ("mnist_t10k: the official 10k MNIST test images split 8000 / 2000", SEEDS_MNIST),
    "mnist_bnn": ("MLP 784-1200-1200-10 + BNN_cat, H_SA_SGHMC lr 1e-2, batch 256, 60 epochs, burn-in 10, a sample "
                  "every 2 epochs, last 20 kept, 19 used", SEEDS_MNIST),
    "mnist_vae": ("MNISTconv_VAE_bern_net L = 20, RAdam lr 7e-4, batch 256, 15 epochs (cap); best checkpoint",
                  SEEDS_MNIST),
    "mnist_clue": ("CLUE.batch_optimise on the 200 most uncertain test images (total entropy, 19 samples): "
                   "lambda 4 (distance weight 4/784, pixel L1), lr 0.1, 35 steps (all run), batch 128; clue: "
                   "torch-1.3 gradients, clue_exact_grad: exact", SEEDS_MNIST),
    "parity_io": ("parity kit io.npz: the outputs the original code computed from the trained LSAT/COMPAS files "
                  "(sample_predict, get_BNN_uncertainties, recongnition, regenerate, vlb, CLUE.batch_optimise with "
                  "the four variants); figures here are summaries of its arrays or numbers of its meta", SEEDS_PARITY),
    "parity_verify": ("independent float32/float64 numpy recomputation of every kit output from the exported "
                      "arrays, without torch (SCHEMA.md section 8)", SEEDS_PARITY),
    "parity_schema": ("acceptance tolerances the kit suggests for a float32 re-implementation (SCHEMA.md section 9)",
                      SEEDS_PARITY),
}

_TABULAR_SECTIONS = {
    "env": "README.md 'Environment'", "data": "README.md 'Environment' / 'Settings and where they come from'",
    "bnn": "README.md section 1 'BNN (H_SA_SGHMC)'", "vae": "README.md section 2 'Tabular VAE (gauss_cat)'",
    "clue": "README.md section 3 'CLUE on the 10% most uncertain test points'",
    "bnn_predict_timing": "README.md section 4 'Posterior predictive timing'",
}
_MNIST_SECTIONS = {
    "env": "mnist-t10k-original.md 'Environment and code'", "data": "mnist-t10k-original.md 'Data: mnist_t10k'",
    "bnn": "mnist-t10k-original.md section 1 'BNN'", "vae": "mnist-t10k-original.md section 2 'VAE'",
    "clue": "mnist-t10k-original.md section 3 'CLUE on the 200 most uncertain test images'",
    "timeline_unix": "mnist-t10k-original.md 'Timeline'",
}

# Numbers stated only in the prose of the reference READMEs (not in their JSON copies).
_README_ONLY = [
    ("readme/env/compas_sghmc_step_s_spin_wait", 0.58, "README.md", "README.md 'Environment' (why PASSIVE)",
     "tabular_setup", "one COMPAS BNN SG-HMC step took 0.58 s (an epoch 5-6 s) ... instead of 0.004 s"),
    ("readme/env/compas_epoch_s_spin_wait", [5, 6], "README.md", "README.md 'Environment' (why PASSIVE)",
     "tabular_setup", "an epoch took 5-6 s"),
    ("readme/env/compas_sghmc_step_s_passive", 0.004, "README.md", "README.md 'Environment' (why PASSIVE)",
     "tabular_setup", "instead of 0.004 s"),
    ("readme/env/lsat_bnn_s_per_epoch_before_passive", 0.43, "README.md", "README.md 'Environment' (why PASSIVE)",
     "tabular_setup", "The LSAT BNN run was not affected (0.43 s/epoch before, 0.46 s/epoch with PASSIVE)"),
    ("readme/env/lsat_bnn_s_per_epoch_with_passive", 0.46, "README.md", "README.md 'Environment' (why PASSIVE)",
     "tabular_setup", "0.46 s/epoch with PASSIVE"),
    ("readme/settings/notebook_bnn_epochs", [2200, 2400], "README.md", "README.md 'Settings' (BNN cap)",
     "lsat_bnn", "Cap: 1200 epochs (notebook: 2200-2400)"),
    ("readme/settings/bnn_lsat_cap_wall_min", 10, "README.md", "README.md 'Settings' (BNN cap)", "lsat_bnn",
     "This keeps LSAT under about 10 min"),
    ("readme/settings/vae_default_epochs", 2500, "README.md", "README.md 'Settings' (VAE cap)", "lsat_vae",
     "against a default of 2500"),
    ("readme/lsat/clue/all_conditions_met_step_per_batch", [25, 23], "README.md", "README.md section 3 (how to read)",
     "lsat_clue", "the two LSAT batches reached 'all conditions met' at steps 25 and 23 (main run, clue lr 0.1)"),
    ("readme/compas/clue/all_conditions_met_step_per_batch", [36], "README.md", "README.md section 3 (how to read)",
     "compas_clue", "COMPAS at step 36 (main run, clue lr 0.1)"),
    ("readme/compas/clue/ms_per_step_62_points", 85, "README.md", "README.md section 3 (how to read)",
     "compas_clue", "Each step costs about 85 ms with 62 points (COMPAS)"),
    ("readme/lsat/clue/ms_per_step_256_points", 130, "README.md", "README.md section 3 (how to read)",
     "lsat_clue", "about 130 ms with 256 points (LSAT, 100 steps in 13.0 s)"),
    ("readme/tabular/sample_predict_ms_per_sample", 1.3, "README.md", "README.md section 4", "tabular_timing",
     "roughly 1.3 ms per sample"),
    ("readme/caveats/first_compas_probe_slowdown_factor", 100, "README.md", "README.md 'What failed / caveats'",
     "tabular_setup", "The first COMPAS probe ran about 100x too slowly"),
    ("readme/mnist/bnn/n_parameters_millions", 2.40, "mnist-t10k-original.md", "mnist-t10k-original.md section 1",
     "mnist_bnn", "784-1200-1200-10 ReLU, 2.40 M parameters"),
    ("readme/mnist/timeline/bnn_s", 165, "mnist-t10k-original.md", "mnist-t10k-original.md 'Timeline'", "mnist_bnn",
     "BNN, 60 epochs + evaluation: 165 s"),
    ("readme/mnist/timeline/vae_s", 975, "mnist-t10k-original.md", "mnist-t10k-original.md 'Timeline'", "mnist_vae",
     "VAE, 15 epochs + evaluation: 975 s"),
    ("readme/mnist/timeline/clue_orig_s", 42, "mnist-t10k-original.md", "mnist-t10k-original.md 'Timeline'",
     "mnist_clue", "CLUE, original grads, incl. loading and selection: 42 s"),
    ("readme/mnist/timeline/clue_exact_s", 37, "mnist-t10k-original.md", "mnist-t10k-original.md 'Timeline'",
     "mnist_clue", "CLUE, exact grads: 37 s"),
    ("readme/mnist/clue/l1_added_beyond_reconstruction", 5, "mnist-t10k-original.md",
     "mnist-t10k-original.md 'Caveats'", "mnist_clue",
     "The step-0 reconstruction is already at L1 46.9 from x0, while CLUE adds only about 5"),
    ("schema/lsat/selection_margin", 6.8e-4, "parity/SCHEMA.md", "SCHEMA.md section 4.4", "parity_io",
     "The selection margin ... is 6.8e-4 for LSAT"),
    ("schema/compas/selection_margin", 2.2e-5, "parity/SCHEMA.md", "SCHEMA.md section 4.4", "parity_io",
     "and 2.2e-5 for COMPAS"),
    ("schema/compas/max_abs_logit", 88.8, "parity/SCHEMA.md", "SCHEMA.md section 2", "parity_io",
     "Logits reach |88.8|"),
    ("schema/lsat/min_sigma", 0.2638, "parity/SCHEMA.md", "SCHEMA.md section 2", "parity_io",
     "the minimum sigma over all test rows and all samples is 0.2638"),
    ("schema/total_mb", 27.7, "parity/SCHEMA.md", "SCHEMA.md section 0", "parity_io", "Total: 27.7 MB"),
]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_number(v) -> bool:
    if isinstance(v, bool | int | float):
        return True
    return isinstance(v, list) and len(v) > 0 and all(isinstance(e, bool | int | float) for e in v)


def _leaves(obj, prefix: str = ""):
    """(path, value) of every number (or list of numbers) in a JSON tree, path parts joined with '/'."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _leaves(value, f"{prefix}/{key}" if prefix else str(key))
    elif _is_number(obj):
        yield prefix, obj


def _tabular_run(dataset: str, block: str) -> str:
    if block in ("env", "data"):
        return "tabular_setup"
    if block.startswith("bnn_predict_timing"):
        return "tabular_timing"
    return f"{dataset}_{block.split('_')[0]}"


def _io_summary(folder: Path) -> dict[str, Any]:
    """Summary figures of one parity-kit io.npz (SCHEMA.md section 10 and the ranges of section 5.4)."""
    with np.load(folder / "io.npz") as f:
        io = {k: f[k] for k in f.files}
    meta = json.loads(str(io.pop("meta")))
    idx, u = io["clue/idx"], io["bnn/unc_total_Sm1"]
    order = np.sort(u)[::-1]
    out: dict[str, Any] = {
        "n_test": int(len(io["x_test"])), "x_dim": int(io["x_test"].shape[1]), "n_explained": int(len(idx)),
        "mean_total_uncertainty_all_test_Sm1": float(u.mean()),
        "mean_total_uncertainty_all_test_S": float(io["bnn/unc_total_S"].mean()),
        "mean_aleatoric_uncertainty_all_test_Sm1": float(io["bnn/unc_aleatoric_Sm1"].mean()),
        "mean_epistemic_uncertainty_all_test_Sm1": float(io["bnn/unc_epistemic_Sm1"].mean()),
        "selection_margin": float(order[len(idx) - 1] - order[len(idx)]),
        "mean_uncertainty_before": float(io["clue/u0_total_Sm1"].mean()),
        "vae_test_elbo": float(io["vae/elbo"].mean()), "vae_test_rec_loglik": float(io["vae/rec_ll"].mean()),
        "vae_test_kl": float(io["vae/kl"].mean()), "vae_elbo_mean_eval": float(io["vae/elbo_mean_eval"]),
        "mean_bnn_uncertainty_of_vae_regen": float(io["vae/bnn_unc_total_Sm1_of_regen"].mean()),
    }
    if "bnn/mu" in io:
        y_std = float(io["y_stds"][0])
        err = io["bnn/mean_mu_Sm1"].astype(np.float64) - io["y_test"][:, 0]
        out["bnn_test_rmse_from_mean_mu_Sm1"] = float(np.sqrt(np.mean(err ** 2)) * y_std)
        out["y_mean"], out["y_std"] = float(io["y_means"][0]), y_std
        out["min_sigma_first_1000_rows_all_samples"] = float(io["bnn/sigma"].min())
    else:
        p = io["bnn/mean_probs_Sm1"].astype(np.float64)
        y = io["y_test"].astype(int)
        out["bnn_test_accuracy_from_mean_probs_Sm1"] = float(np.mean(p.argmax(1) == y))
        out["bnn_test_nll_from_mean_probs_Sm1"] = float(-np.mean(np.log(p[np.arange(len(y)), y])))
        out["max_abs_logit"] = float(np.abs(io["bnn/logits"]).max())
    for prefix in VARIANTS:
        stop = io[f"{prefix}/stop_step"]
        l1 = np.abs(io[f"{prefix}/x_final"] - io["clue/x0"]).sum(axis=1)
        after = io[f"{prefix}/u_after_total_Sm1"]
        out[prefix] = {
            "mean_uncertainty_after": float(after.mean()), "mean_uncertainty_vae_reconstruction":
            float(io[f"{prefix}/u_rec0_total_Sm1"].mean()), "mean_l1": float(l1.mean()),
            "median_l1": float(np.median(l1)), "fraction_reduced": float(np.mean(after < io["clue/u0_total_Sm1"])),
            "stop_step_min_max": [int(stop[stop > 0].min()), int(stop.max())], "mean_stop_step": float(stop.mean()),
            "n_never_stopped": int(np.sum(stop == 0)), "wall_s": float(io[f"{prefix}/wall_s"])}
    out["meta"] = {"clue_summary": meta.get("clue_summary", {}), "checks": meta.get("checks", {})}
    return out


def build_reference(shared: str | Path = SHARED_REFERENCE) -> dict[str, Any]:
    """Every number of ``../shared/reference`` with its provenance (the committed ``pytorch_original.json``)."""
    shared = Path(shared)
    tabular = json.loads((shared / "pytorch-original.json").read_text())
    mnist = json.loads((shared / "mnist-t10k-original.json").read_text())
    groups: dict[tuple, dict[str, Any]] = {}
    seen: set[str] = set()

    def add(fid, value, source, section, run, quote=None):
        if fid in seen:
            raise ValueError(f"duplicate figure id {fid}")
        seen.add(fid)
        group = groups.setdefault((source, section, run, quote), {
            "source": source, "section": section, "run": run, **({"quote": quote} if quote else {}), "values": {}})
        group["values"][fid] = value

    for dataset in ("lsat", "compas"):
        for key, value in _leaves(tabular[dataset]):
            block = key.split("/")[0]
            section = _TABULAR_SECTIONS["clue" if block.startswith("clue") else
                                        "bnn_predict_timing" if block.startswith("bnn_predict") else block]
            add(f"pytorch-original/{dataset}/{key}", value, "pytorch-original.json", section,
                _tabular_run(dataset, block))
    for key, value in _leaves(mnist):
        block = key.split("/")[0]
        section = _MNIST_SECTIONS["clue" if block.startswith("clue") else block]
        run = {"env": "mnist_setup", "data": "mnist_setup", "timeline_unix": "mnist_clue"}.get(
            block, f"mnist_{block.split('_')[0]}")
        add(f"mnist-t10k-original/{key}", value, "mnist-t10k-original.json", section, run)
    for fid, value, source, section, run, quote in _README_ONLY:
        add(fid, value, source, section, run, quote)
    parity_dir = shared / "parity"
    if (parity_dir / "lsat" / "io.npz").exists():
        for dataset in ("lsat", "compas"):
            for key, value in _leaves(_io_summary(parity_dir / dataset)):
                source = f"parity/{dataset}/io.npz" + (" (meta)" if key.startswith("meta/") else
                                                       " (summary of its arrays)")
                add(f"parity/{dataset}/io/{key}", value, source, "SCHEMA.md sections 4, 5.4, 7 and 10",
                    "parity_io")
        verify = json.loads((parity_dir / "verify_report.json").read_text())
        for key, value in _leaves(verify):
            add(f"parity/verify/{key}", value, "parity/verify_report.json", "SCHEMA.md section 8", "parity_verify")
    for key, value in TOLERANCES.items():
        add(f"parity/tolerance/{key}", value, "parity/SCHEMA.md", "SCHEMA.md section 9", "parity_schema")

    sources = {name: {"sha256": _sha256(shared / name), "bytes": (shared / name).stat().st_size}
               for name in ("README.md", "pytorch-original.json", "mnist-t10k-original.json",
                            "mnist-t10k-original.md", "parity/SCHEMA.md", "parity/verify_report.json",
                            "parity/lsat/io.npz", "parity/compas/io.npz") if (shared / name).exists()}
    return {
        "format": "clue-tf/reference-figures/v1",
        "about": ("Every number of ../shared/reference (the ORIGINAL PyTorch CLUE code run on the project's kind of "
                  "2-core CPU), with its provenance. Built by `python experiments/compare_pytorch.py reference`; "
                  "never edited by hand. `figures` is a list of groups of figures sharing one provenance: the "
                  "source file (relative to ../shared/reference) and section, and `run`, an entry of `runs` (what "
                  "was run, seeds, machine). A figure's id is '<source>/<path of the number in that source>'."),
        "provenance": {"code": CODE, "machine": MACHINE, "date": "2026-11-22", "patches": tabular["patches"],
                       "meta": tabular["meta"], "mnist_env": mnist["env"], "mnist_caveats": mnist["caveats"]},
        "sources": sources,
        "runs": {name: {"what": what, "seeds": seeds, "machine": MACHINE, "code": CODE}
                 for name, (what, seeds) in RUNS.items()},
        "figures": list(groups.values()),
    }


def load_reference(path: str | Path = REFERENCE_JSON) -> dict[str, Any]:
    """The committed reference figures, with ``values`` added: figure id -> number (over all groups)."""
    reference = json.loads(resolve(path).read_text())
    reference["values"] = {fid: v for group in reference["figures"] for fid, v in group["values"].items()}
    return reference


def provenance(reference: dict[str, Any], fid: str) -> dict[str, Any]:
    """Source, section, run description, seeds and machine of one figure."""
    for group in reference["figures"]:
        if fid in group["values"]:
            return {"value": group["values"][fid], **{k: v for k, v in group.items() if k != "values"},
                    **reference["runs"][group["run"]]}
    raise KeyError(fid)


# ---------------------------------------------------------------------------------------------- our figures
def _argv(folder: Path) -> str:
    """The command a run folder was produced by (its ``argv.txt``, made relative to the project root)."""
    text = (folder / "argv.txt").read_text().strip().splitlines()[0]
    script, _, rest = text.partition(" ")
    module = Path(script).relative_to(PROJECT_ROOT).with_suffix("").as_posix().replace("/", ".")
    return f"python -m {module} {rest}"


def collect_ours(runs_dir: str | Path = "runs") -> dict[str, Any]:
    """Per-seed figures of our training and CLUE runs whose folders are not committed (``ours_summary.json``).

    Reads ``metrics.json`` (and ``argv.txt``, the exact command) of each run folder the README's tables came from.
    """
    runs = resolve(runs_dir)
    entries: dict[str, Any] = {}

    def per_seed(name, pattern, seeds, readme, extra=None):
        folders = {s: runs / pattern.format(seed=s) for s in seeds}
        entries[name] = {
            "commands": {str(s): _argv(f) for s, f in folders.items()},
            "source": f"runs/{pattern}/metrics.json (git-ignored run folders)",
            "readme": readme,
            "per_seed": {str(s): {**json.loads((f / "metrics.json").read_text()), **(extra(f) if extra else {})}
                         for s, f in folders.items()}}

    per_seed("bnn/lsat", "bnn_paper/lsat_s{seed}", (0, 1, 2), "README 'BNN, paper schedule' table, LSAT rows")
    per_seed("bnn/compas", "bnn_paper/compas_s{seed}", (0, 1, 2), "README 'BNN, paper schedule' table, COMPAS rows")
    per_seed("bnn/mnist_t10k", "bnn_paper/mnist_t10k_s{seed}", (0,), "README 'BNN, paper schedule' table, MNIST row")
    per_seed("vae/lsat", "paper/vae_lsat_s{seed}", (0, 1, 2), "README 'VAE, paper settings' table, LSAT row")
    per_seed("vae/compas", "paper/vae_compas_s{seed}", (0, 1, 2), "README 'VAE, paper settings' table, COMPAS row")

    def last_epoch_seconds(folder):
        import csv

        with open(folder / "metrics.csv") as f:
            seconds = [float(r["seconds"]) for r in csv.DictReader(f)]
        return {"seconds_last_epoch": seconds[-1], "seconds_per_epoch_median": float(np.median(seconds))}

    per_seed("vae/mnist_t10k", "paper/vae_mnist_t10k_s{seed}", (0,),
             "README 'VAE, paper settings' paragraph (-110.76 nats, '62 s per epoch')", last_epoch_seconds)
    folder = runs / "paper" / "clue_mnist_t10k_s0"
    summary = json.loads((folder / "summary.json").read_text())
    summary["seconds_per_100_points"] = 100.0 * summary["seconds"] / summary["n_explained"]
    summary["relative_reduction_of_means"] = ((summary["uncertainty_before"] - summary["uncertainty_after"])
                                              / summary["uncertainty_before"])
    entries["clue/mnist_t10k"] = {
        "commands": {"0": _argv(folder)}, "source": "runs/paper/clue_mnist_t10k_s0/summary.json (git-ignored)",
        "readme": "README 'CLUE with our own models' table, MNIST row, and the sentence below it (6.0 s per 100)",
        "models": "BNN runs/bnn_paper/mnist_t10k_s0 and VAE runs/paper/vae_mnist_t10k_s0 (the two entries above)",
        "per_seed": {"0": summary}}
    return {
        "format": "clue-tf/ours-summary/v1",
        "about": ("Per-seed figures of our runs whose run folders are not committed (runs/ is git-ignored), copied "
                  "from their metrics.json / summary.json by `python experiments/compare_pytorch.py ours`. Each entry "
                  "gives the exact command of every seed (the run folder's argv.txt). Seed-0 BNN and VAE models of "
                  "LSAT and COMPAS are the committed weights/ (weights/manifest.json repeats their metrics)."),
        "entries": entries,
    }


def _stats(values) -> dict[str, Any]:
    values = [float(v) for v in values]
    return {"values": values, "n": len(values), "mean": float(np.mean(values)),
            "sd": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan}


def our_figures(weights_dir: str | Path = "weights", results_dir: str | Path = "experiments/results",
                benchmarks_dir: str | Path = "benchmarks/results") -> dict[str, dict[str, Any]]:
    """Our figures, id -> {values (per seed), n, mean, sd (ddof 1), source}, from committed files only."""
    results, bench = resolve(results_dir), resolve(benchmarks_dir)
    ours_summary = json.loads((results / "ours_summary.json").read_text())["entries"]
    manifest = {m["name"]: m for m in json.loads((resolve(weights_dir) / "manifest.json").read_text())["models"]}
    stat_parity = json.loads((results / "clue_statistical_parity.json").read_text())["datasets"]
    clue_speed = json.loads((bench / "clue_speed.json").read_text())
    bnn_speed = json.loads((bench / "bnn_predict.json").read_text())
    out: dict[str, dict[str, Any]] = {}

    def put(fid, values, source):
        out[fid] = {**_stats(values), "source": source}

    for dataset, metrics in (("lsat", ("test/rmse", "test/loglik", "test/loglik_mixture")),
                             ("compas", ("test/accuracy", "test/nll")), ("mnist_t10k", ("test/accuracy", "test/nll"))):
        entry = ours_summary[f"bnn/{dataset}"]
        for metric in (*metrics, "seconds_per_epoch"):
            put(f"bnn/{dataset}/{metric}", [s[metric] for s in entry["per_seed"].values()],
                f"experiments/results/ours_summary.json bnn/{dataset} ({len(entry['per_seed'])} seeds)")
    for dataset in ("lsat", "compas", "mnist_t10k"):
        entry = ours_summary[f"vae/{dataset}"]
        metrics = ["test/elbo", "test/rec_loglik", "test/kl", "best_epoch", "seconds_per_epoch"]
        if dataset != "mnist_t10k":
            metrics += ["test/rmse_continuous", "test/accuracy_categorical"]
        else:
            metrics += ["seconds_last_epoch"]
        for metric in metrics:
            put(f"vae/{dataset}/{metric}", [s[metric] for s in entry["per_seed"].values()],
                f"experiments/results/ours_summary.json vae/{dataset} ({len(entry['per_seed'])} seeds)")
    for dataset in ("lsat", "compas"):
        seeds = stat_parity[dataset]["ours_per_seed"]
        for metric in ("uncertainty_before", "uncertainty_after", "relative_reduction_of_means", "fraction_reduced",
                       "l1_distance", "recon_l1"):
            put(f"clue/{dataset}/{metric}", [s[metric] for s in seeds],
                f"experiments/results/clue_statistical_parity.json {dataset} ({len(seeds)} seeds)")
    mnist = ours_summary["clue/mnist_t10k"]["per_seed"]["0"]
    for metric in ("uncertainty_before", "uncertainty_after", "relative_reduction_of_means", "fraction_reduced",
                   "l1_distance", "seconds_per_100_points"):
        put(f"clue/mnist_t10k/{metric}", [mnist[metric]], "experiments/results/ours_summary.json clue/mnist_t10k")
    for dataset in ("lsat", "compas"):
        for variant in ("exact", "orig"):
            put(f"speed/clue/{dataset}/{variant}", [clue_speed[dataset][variant]["seconds_per_100_points"]],
                f"benchmarks/results/clue_speed.json {dataset}/{variant} (median of {clue_speed['repeats']})")
    put("speed/clue/mnist_sized/exact", [clue_speed["mnist_sized"]["exact"]["seconds_per_100_points"]],
        "benchmarks/results/clue_speed.json mnist_sized (random weights)")
    put("speed/sghmc/lsat", [bnn_speed["sghmc_lsat"]["seconds_per_epoch_sampling"]],
        "benchmarks/results/bnn_predict.json sghmc_lsat (sampling epoch, batch 512)")
    # Cross-check: the committed seed-0 models' metrics in the manifest equal the seed-0 run folders' metrics.
    for name, key in (("bnn_lsat", "bnn/lsat"), ("bnn_compas", "bnn/compas"), ("vae_lsat", "vae/lsat"),
                      ("vae_compas", "vae/compas"), ("bnn_mnist", "bnn/mnist_t10k")):
        if name in manifest:
            seed0 = ours_summary[key]["per_seed"][str(manifest[name]["seed"])]
            bad = {k: (v, seed0.get(k)) for k, v in manifest[name]["metrics"].items() if seed0.get(k) != v}
            if bad:
                raise ValueError(f"weights/manifest.json {name} disagrees with ours_summary.json {key}: {bad}")
    return out


def check_committed_models(weights_dir: str | Path = "weights", datasets: Iterable[str] = ("lsat", "compas"),
                           seed: int = 0, data_dir: str | None = None,
                           results_dir: str | Path = "experiments/results") -> list[dict[str, Any]]:
    """Re-evaluates the committed BNN and VAE of each dataset on its test set, beside the manifest's metrics and the
    same seed's row of ``ours_summary.json``.

    Raises:
      ValueError: if the committed model was not trained with ``seed``.
    """
    import data
    from BNN.posterior import Posterior, evaluate
    from VAE.model import load_vae
    from VAE.train import evaluate_vae

    weights_dir = resolve(weights_dir)
    manifest = {m["name"]: m for m in json.loads((weights_dir / "manifest.json").read_text())["models"]}
    summary = json.loads((resolve(results_dir) / "ours_summary.json").read_text())["entries"]
    rows = []
    for dataset in datasets:
        ds = data.load(dataset, data_dir=data_dir)
        post = Posterior.load(weights_dir / manifest[f"bnn_{dataset}"]["path"])
        y_std = float(np.ravel(ds.y_std)[0]) if ds.task == "regression" else 1.0
        vae = load_vae(weights_dir / manifest[f"vae_{dataset}"]["path"])
        for kind, live in (("bnn", evaluate(post, ds.x_test, ds.y_test, y_std=y_std)),
                           ("vae", evaluate_vae(vae, ds.x_test))):
            entry = manifest[f"{kind}_{dataset}"]
            if entry["seed"] != seed:
                raise ValueError(f"{weights_dir}/manifest.json: {entry['name']} was trained with seed {entry['seed']}, "
                                 f"not {seed}")
            per_seed = summary[f"{kind}/{dataset}"]["per_seed"][str(seed)]
            for key, value in live.items():
                if f"test/{key}" in entry["metrics"]:
                    recorded = entry["metrics"][f"test/{key}"]
                    rows.append({"model": entry["name"], "seed": seed, "metric": f"test/{key}",
                                 "manifest": recorded, "ours_summary.json": per_seed[f"test/{key}"],
                                 "recomputed now": value, "max abs diff": max(abs(value - recorded),
                                                                              abs(value - per_seed[f"test/{key}"]))})
    return rows


# ------------------------------------------------------------------------------------------ the comparison
PO, MO = "pytorch-original", "mnist-t10k-original"
ORIGINAL_VARIANT = {"clue_exact": "clue_exact_grad", "clue_orig": "clue", "clue_exact_lr0.01": "clue_exact_grad_lr0.01",
                    "clue_orig_lr0.01": "clue_lr0.01"}
OWN = "own models vs original"
STAT_ROWS = [  # (artefact, dataset, metric, original figure, our figure)
    ("BNN", "lsat", "test RMSE (ZFYA units)", f"{PO}/lsat/bnn/test_rmse", "bnn/lsat/test/rmse"),
    ("BNN", "lsat", "test log-likelihood (Gaussian, marginal std)", f"{PO}/lsat/bnn/test_ll_gauss_marginal_std",
     "bnn/lsat/test/loglik"),
    ("BNN", "lsat", "test log-likelihood (exact mixture)", f"{PO}/lsat/bnn/test_ll_gmm_mixture",
     "bnn/lsat/test/loglik_mixture"),
    ("BNN", "compas", "test accuracy", f"{PO}/compas/bnn/test_accuracy", "bnn/compas/test/accuracy"),
    ("BNN", "compas", "test NLL (nats)", f"{PO}/compas/bnn/test_nll", "bnn/compas/test/nll"),
    ("BNN", "mnist_t10k", "test accuracy", f"{MO}/bnn/test_accuracy", "bnn/mnist_t10k/test/accuracy"),
    ("BNN", "mnist_t10k", "test NLL (nats)", f"{MO}/bnn/test_nll", "bnn/mnist_t10k/test/nll"),
    *[row for ds in ("lsat", "compas") for row in (
        ("VAE", ds, "test ELBO, best checkpoint (nats)", f"{PO}/{ds}/vae/test_elbo_best", f"vae/{ds}/test/elbo"),
        ("VAE", ds, "test reconstruction log-lik (z = mean)", f"{PO}/{ds}/vae/test_rec_loglike_best",
         f"vae/{ds}/test/rec_loglik"),
        ("VAE", ds, "test KL", f"parity/{ds}/io/vae_test_kl", f"vae/{ds}/test/kl"),
        ("VAE", ds, "continuous RMSE (normalised units)", f"{PO}/{ds}/vae/test_rec_cont_rmse_normalised",
         f"vae/{ds}/test/rmse_continuous"),
        ("VAE", ds, "categorical accuracy (mean over features)",
         ("mean", f"{PO}/{ds}/vae/test_rec_cat_accuracy_per_feature"), f"vae/{ds}/test/accuracy_categorical"),
        ("VAE", ds, "best epoch (0-based)", f"{PO}/{ds}/vae/best_epoch", f"vae/{ds}/best_epoch"))],
    ("VAE", "mnist_t10k", "test ELBO, best checkpoint (nats / image)", f"{MO}/vae/test_elbo_best",
     "vae/mnist_t10k/test/elbo"),
    ("VAE", "mnist_t10k", "best epoch (0-based)", f"{MO}/vae/best_epoch", "vae/mnist_t10k/best_epoch"),
    *[row for ds in ("lsat", "compas") for row in (
        ("CLUE", ds, "uncertainty before (x0)", f"{PO}/{ds}/clue_exact_grad/mean_uncertainty_before_original_x",
         f"clue/{ds}/uncertainty_before"),
        ("CLUE", ds, "uncertainty after CLUE", f"{PO}/{ds}/clue_exact_grad/mean_uncertainty_after_clue",
         f"clue/{ds}/uncertainty_after"),
        ("CLUE", ds, "relative reduction of the mean uncertainty",
         ("relred", f"{PO}/{ds}/clue_exact_grad/mean_uncertainty_before_original_x",
          f"{PO}/{ds}/clue_exact_grad/mean_uncertainty_after_clue"), f"clue/{ds}/relative_reduction_of_means"),
        ("CLUE", ds, "fraction of points whose uncertainty fell", f"{PO}/{ds}/clue_exact_grad/frac_uncertainty_reduced",
         f"clue/{ds}/fraction_reduced"),
        ("CLUE", ds, "mean L1(CLUE, x0)", f"{PO}/{ds}/clue_exact_grad/mean_L1_distance_clue_vs_original",
         f"clue/{ds}/l1_distance"),
        ("CLUE", ds, "mean L1(VAE reconstruction, x0)",
         f"{PO}/{ds}/clue_exact_grad/mean_L1_distance_reconstruction_vs_original", f"clue/{ds}/recon_l1"))],
    ("CLUE", "mnist_t10k", "entropy before (x0)", f"{MO}/clue_exact_grad/mean_entropy_before_original_x",
     "clue/mnist_t10k/uncertainty_before"),
    ("CLUE", "mnist_t10k", "entropy after CLUE", f"{MO}/clue_exact_grad/mean_entropy_after_clue",
     "clue/mnist_t10k/uncertainty_after"),
    ("CLUE", "mnist_t10k", "relative reduction of the mean entropy",
     ("relred", f"{MO}/clue_exact_grad/mean_entropy_before_original_x",
      f"{MO}/clue_exact_grad/mean_entropy_after_clue"), "clue/mnist_t10k/relative_reduction_of_means"),
    ("CLUE", "mnist_t10k", "fraction of images whose entropy fell", f"{MO}/clue_exact_grad/frac_entropy_reduced",
     "clue/mnist_t10k/fraction_reduced"),
    ("CLUE", "mnist_t10k", "mean pixel L1(CLUE, x0)", f"{MO}/clue_exact_grad/mean_L1_pixel_clue_vs_original",
     "clue/mnist_t10k/l1_distance"),
]
PARITY_ROWS = [  # (dataset, metric, original figure, live figure key, tolerance key)
    ("lsat", "BNN test RMSE, 53 samples", f"{PO}/lsat/bnn/test_rmse", "test_rmse", "forward_atol"),
    ("lsat", "BNN test log-likelihood, 53 samples", f"{PO}/lsat/bnn/test_ll_gauss_marginal_std", "test_loglik",
     "forward_atol"),
    ("lsat", "BNN test log-likelihood (mixture), 53 samples", f"{PO}/lsat/bnn/test_ll_gmm_mixture",
     "test_loglik_mixture", "forward_atol"),
    ("compas", "BNN test accuracy, 53 samples", f"{PO}/compas/bnn/test_accuracy", "test_accuracy", "forward_atol"),
    ("compas", "BNN test NLL, 53 samples", f"{PO}/compas/bnn/test_nll", "test_nll", "forward_atol"),
    *[row for ds in ("lsat", "compas") for row in (
        (ds, "mean total uncertainty, all test rows", f"{PO}/{ds}/clue/mean_uncertainty_all_test",
         "mean_uncertainty_all_test", "uncertainty_atol"),
        (ds, "mean uncertainty of the explained x0", f"{PO}/{ds}/clue/mean_uncertainty_before_original_x",
         "mean_uncertainty_before", "uncertainty_atol"),
        (ds, "mean uncertainty of their VAE reconstructions",
         f"{PO}/{ds}/clue/mean_uncertainty_before_vae_reconstruction", "mean_uncertainty_vae_reconstruction",
         "uncertainty_atol"),
        (ds, "VAE mean test ELBO", f"{PO}/{ds}/vae/test_elbo_reloaded_best", "test_elbo", "forward_atol"),
        (ds, "VAE mean test reconstruction log-lik", f"{PO}/{ds}/vae/test_rec_loglike_best", "test_rec_loglik",
         "forward_atol"),
        (ds, "VAE mean test KL", f"parity/{ds}/io/vae_test_kl", "test_kl", "forward_atol"),
        *[row for prefix, (variant, lr) in VARIANTS.items() for row in (
            (ds, f"CLUE {variant} gradients, lr {lr:g}: uncertainty after",
             f"{PO}/{ds}/{ORIGINAL_VARIANT[prefix]}/mean_uncertainty_after_clue", f"{prefix}/mean_uncertainty_after",
             "mean_u_after_atol"),
            (ds, f"CLUE {variant} gradients, lr {lr:g}: mean L1(CLUE, x0)",
             f"{PO}/{ds}/{ORIGINAL_VARIANT[prefix]}/mean_L1_distance_clue_vs_original", f"{prefix}/mean_l1",
             "mean_u_after_atol"),
            (ds, f"CLUE {variant} gradients, lr {lr:g}: fraction of points whose uncertainty fell",
             f"{PO}/{ds}/{ORIGINAL_VARIANT[prefix]}/frac_uncertainty_reduced", f"{prefix}/fraction_reduced",
             "fraction_rows"))])],
]
SPEED_ROWS = [  # (dataset, metric, original figure, our figure, note)
    ("lsat", "CLUE s / 100 points, exact gradients", f"{PO}/lsat/clue_exact_grad/wall_s_per_100_points",
     "speed/clue/lsat/exact", "benchmark, original's models and points"),
    ("lsat", "CLUE s / 100 points, torch-1.3 gradients", f"{PO}/lsat/clue/wall_s_per_100_points",
     "speed/clue/lsat/orig", "benchmark, original's models and points"),
    ("compas", "CLUE s / 100 points, exact gradients", f"{PO}/compas/clue_exact_grad/wall_s_per_100_points",
     "speed/clue/compas/exact", "benchmark, original's models and points"),
    ("compas", "CLUE s / 100 points, torch-1.3 gradients", f"{PO}/compas/clue/wall_s_per_100_points",
     "speed/clue/compas/orig", "benchmark, original's models and points"),
    ("mnist_t10k", "CLUE s / 100 images, MNIST-sized models (all 35 steps)",
     f"{MO}/clue_exact_grad/wall_s_per_100_points", "speed/clue/mnist_sized/exact", "benchmark, random weights"),
    ("mnist_t10k", "CLUE s / 100 images, the MNIST run above (early-stopped rows dropped)",
     f"{MO}/clue_exact_grad/wall_s_per_100_points", "clue/mnist_t10k/seconds_per_100_points",
     "CLUE.generate run, shared machine"),
    ("lsat", "SG-HMC s / epoch, train loop only", f"{PO}/lsat/bnn/train_only_s_per_epoch_median",
     "speed/sghmc/lsat", "benchmark (quiet machine)"),
    ("lsat", "BNN training s / epoch, incl. evaluation", f"{PO}/lsat/bnn/wall_s_per_epoch_incl_dev_eval",
     "bnn/lsat/seconds_per_epoch", "training runs, shared machine"),
    ("compas", "BNN training s / epoch, incl. evaluation", f"{PO}/compas/bnn/wall_s_per_epoch_incl_dev_eval",
     "bnn/compas/seconds_per_epoch", "training runs, shared machine"),
    ("mnist_t10k", "BNN training s / epoch, incl. evaluation", f"{MO}/bnn/wall_s_per_epoch_incl_dev_eval",
     "bnn/mnist_t10k/seconds_per_epoch", "training run, shared machine"),
    ("lsat", "VAE training s / epoch, incl. evaluation", f"{PO}/lsat/vae/wall_s_per_epoch_incl_dev_eval",
     "vae/lsat/seconds_per_epoch", "training runs, shared machine"),
    ("compas", "VAE training s / epoch, incl. evaluation", f"{PO}/compas/vae/wall_s_per_epoch_incl_dev_eval",
     "vae/compas/seconds_per_epoch", "training runs, shared machine"),
    ("mnist_t10k", "VAE training s / epoch, mean of 15 epochs", f"{MO}/vae/wall_s_per_epoch_incl_dev_eval",
     "vae/mnist_t10k/seconds_per_epoch", "training run, shared machine (first epoch 706 s)"),
    ("mnist_t10k", "VAE training s / epoch, last epoch", f"{MO}/vae/wall_s_per_epoch_incl_dev_eval",
     "vae/mnist_t10k/seconds_last_epoch", "training run; the README's '62 s per epoch'"),
]
SPREAD_RULE = ("|diff| <= 2 sqrt(sd_orig^2 + sd_ours^2), sd over training seeds (ddof 1); the original is one run "
               "(sd_orig unknown, taken as 0)")
RANGE_RULE = "ours within the original's range over its two gradient variants (one seed each side)"


def _original_value(values: dict[str, Any], spec) -> float:
    if isinstance(spec, str):
        return float(values[spec])
    if spec[0] == "mean":
        return float(np.mean(values[spec[1]]))
    if spec[0] == "relred":
        before, after = float(values[spec[1]]), float(values[spec[2]])
        return (before - after) / before
    raise ValueError(spec)


def _spec_source(spec) -> str:
    if isinstance(spec, str):
        return spec
    return {"mean": "mean of {}", "relred": "(before - after) / before of {}"}[spec[0]].format(", ".join(spec[1:]))


def comparison_table(reference: dict[str, Any], ours: dict[str, dict[str, Any]],
                     parity_figures: dict[str, dict[str, float]] | None = None,
                     datasets: Iterable[str] = ("lsat", "compas", "mnist_t10k")) -> list[dict[str, Any]]:
    """One record per compared figure: the original's value, ours (mean, sd, n), difference and verdict."""
    values, datasets = reference["values"], set(datasets)
    tol = {**TOLERANCES, "fraction_rows": 1.0 - TOLERANCES["x_final_min_fraction"]}
    records = []
    for artefact, ds, metric, spec, ours_id in STAT_ROWS:
        if ds not in datasets:
            continue
        orig, mine = _original_value(values, spec), ours[ours_id]
        diff = mine["mean"] - orig
        rec = {"artefact": f"{artefact}, {OWN}", "dataset": ds, "metric": metric, "original": orig,
               "original_sd": math.nan, "original_n": 1, "ours": mine["mean"], "ours_sd": mine["sd"],
               "ours_n": mine["n"], "ours_values": mine["values"], "difference": diff,
               "original_source": _spec_source(spec), "ours_source": mine["source"]}
        alt = spec.replace("clue_exact_grad/", "clue/") if isinstance(spec, str) and ds == "mnist_t10k" else None
        if artefact == "CLUE" and ds == "mnist_t10k" and not isinstance(spec, str):
            alt = ("relred", *(s.replace("clue_exact_grad/", "clue/") for s in spec[1:]))
        if mine["n"] > 1:
            rec["threshold"] = 2.0 * mine["sd"]
            rec["inside"] = "yes" if abs(diff) <= rec["threshold"] else "no"
            rec["rule"] = "2 sd"
        elif alt is not None and _original_value(values, alt) != orig:
            lo, hi = sorted((orig, _original_value(values, alt)))
            rec.update(range=[lo, hi], inside="yes" if lo <= mine["mean"] <= hi else "no", rule="original's range")
        else:
            rec.update(inside="n/a", rule="one run each, no spread")
        records.append(rec)
    for ds, metric, spec, key, tol_key in PARITY_ROWS:
        if ds not in datasets or not parity_figures or key not in parity_figures.get(ds, {}):
            continue
        orig, mine = _original_value(values, spec), parity_figures[ds][key]
        diff = mine - orig
        records.append({"artefact": "parity: original's trained models in our code", "dataset": ds,
                        "metric": metric, "original": orig, "original_sd": 0.0, "original_n": 1, "ours": mine,
                        "ours_sd": 0.0, "ours_n": 1, "ours_values": [mine], "difference": diff,
                        "threshold": tol[tol_key], "inside": "yes" if abs(diff) <= tol[tol_key] else "no",
                        "rule": f"tolerance {tol[tol_key]:g}", "original_source": _spec_source(spec),
                        "ours_source": "recomputed live in this notebook (section 3)"})
    for ds, metric, spec, ours_id, note in SPEED_ROWS:
        if ds not in datasets:
            continue
        orig, mine = _original_value(values, spec), ours[ours_id]
        records.append({"artefact": "speed (seconds, lower is faster)", "dataset": ds, "metric": metric,
                        "original": orig, "original_sd": math.nan, "original_n": 1, "ours": mine["mean"],
                        "ours_sd": mine["sd"], "ours_n": mine["n"], "ours_values": mine["values"],
                        "difference": mine["mean"] - orig, "speedup": orig / mine["mean"], "inside": "n/a",
                        "rule": f"timing; speed-up {orig / mine['mean']:.1f}x; {note}",
                        "original_source": _spec_source(spec), "ours_source": mine["source"]})
    return records


def _fmt(x: float, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return "0" if x == 0 else f"{x:.{digits}g}"


def display_table(records: list[dict[str, Any]]):
    """The table as a person reads it: formatted strings, one row per figure."""
    import pandas as pd

    rows = []
    for r in records:
        parity_row = r["artefact"].startswith("parity")
        digits = 7 if parity_row else 4
        ours = _fmt(r["ours"], digits)
        if r["ours_n"] > 1:
            ours += f" ± {_fmt(r['ours_sd'], 2)} ({r['ours_n']} seeds)"
        original = _fmt(r["original"], digits)
        if "range" in r:
            original += f" (range {_fmt(r['range'][0])} to {_fmt(r['range'][1])})"
        rows.append({"artefact": r["artefact"], "dataset": r["dataset"], "metric": r["metric"],
                     "original": original, "ours": ours, "difference": _fmt(r["difference"], 3),
                     "inside spread": r["inside"], "rule": r["rule"] + (
                         f" ({_fmt(r['threshold'], 2)})" if "threshold" in r and not parity_row else "")})
    return pd.DataFrame(rows)


def save_table(records: list[dict[str, Any]], out_dir: str | Path,
               parity_checks: list[dict[str, Any]] | None = None) -> Path:
    """``results/compare_pytorch.json``: every record with its sources, the displayed table (``table``) and the
    parity checks of section 3."""
    results = resolve(out_dir) / "results"
    results.mkdir(parents=True, exist_ok=True)
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in records]
    save_json(results / "compare_pytorch.json", {
        "about": "experiments/compare_pytorch.ipynb: every figure of the PyTorch original beside ours",
        "rules": {"2 sd": SPREAD_RULE, "original's range": RANGE_RULE,
                  "tolerance": "parity rows: |diff| <= the SCHEMA.md section 9 tolerance",
                  "timing": "speed rows are not judged against a spread"},
        "records": clean, "table": display_table(records).to_dict("records"), "parity_checks": parity_checks or []})
    return results / "compare_pytorch.json"


def plot_comparison(records: list[dict[str, Any]]):
    """Dot plot: (a) own models, relative difference with the spread; (b) parity, |diff| / tolerance; (c) speed-up."""
    import matplotlib.pyplot as plt

    own = [r for r in records if OWN in r["artefact"]]
    par = [r for r in records if r["artefact"].startswith("parity")]
    speed = [r for r in records if r["artefact"].startswith("speed")]
    panels = [p for p in (own, par, speed) if p]
    fig, axes = plt.subplots(len(panels), 1, figsize=(12, 0.19 * sum(len(p) for p in panels) + 1.4 * len(panels)),
                             gridspec_kw={"height_ratios": [len(p) + 3 for p in panels]}, squeeze=False)
    colour = {"yes": "tab:green", "no": "tab:red", "n/a": "tab:grey"}
    label = lambda r: f"{r['dataset']} · {r['artefact'].split(',')[0].split(':')[0]} · {r['metric']}"  # noqa: E731
    axes = list(axes[:, 0])
    if own:
        ax = axes.pop(0)
        for i, r in enumerate(own):
            scale = 100.0 / abs(r["original"]) if r["original"] else 1.0
            y = len(own) - 1 - i
            if "threshold" in r:
                ax.errorbar(r["difference"] * scale, y, xerr=r["threshold"] * scale, fmt="none", ecolor="0.6",
                            capsize=2)
            if "range" in r:
                ax.plot([(v - r["original"]) * scale for v in r["range"]], [y, y], color="0.6", lw=3, alpha=0.6)
            ax.scatter([(v - r["original"]) * scale for v in r["ours_values"]], [y] * r["ours_n"], s=8,
                       color=colour[r["inside"]], alpha=0.45)
            ax.scatter(r["difference"] * scale, y, s=30, color=colour[r["inside"]], zorder=3)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_yticks(range(len(own)), [label(r) for r in own][::-1], fontsize=7)
        ax.set_xlabel("(ours - original) / |original|, % (symlog; big dot: our mean, small: our seeds; bar: ±2 sd, "
                      "or the original's range)", fontsize=8)
        ax.set_title("(a) own models vs the original's run: green inside the spread, red outside, grey n/a",
                     fontsize=9)
    if par:
        ax = axes.pop(0)
        ratio = [max(abs(r["difference"]) / r["threshold"], 1e-6) for r in par]
        ax.scatter(ratio, range(len(par) - 1, -1, -1), s=20, c=[colour[r["inside"]] for r in par])
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_yticks(range(len(par)), [label(r) for r in par][::-1], fontsize=7)
        ax.set_xlabel("|ours - original| / SCHEMA tolerance (< 1 passes; 0 drawn at 1e-6)", fontsize=8)
        ax.set_title("(b) exact parity: the original's trained models run by our code", fontsize=9)
        ax.set_xlim(5e-7, 2.0)
    if speed:
        ax = axes.pop(0)
        ax.scatter([r["speedup"] for r in speed], range(len(speed) - 1, -1, -1), s=20, color="tab:blue")
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_yticks(range(len(speed)), [f"{r['dataset']} · {r['metric']}" for r in speed][::-1], fontsize=7)
        ax.set_xlabel("original seconds / our seconds (> 1: ours faster)", fontsize=8)
        ax.set_title("(c) speed", fontsize=9)
    fig.tight_layout()
    return fig


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Rebuild the committed inputs of experiments/compare_pytorch.ipynb")
    parser.add_argument("what", choices=["reference", "ours"],
                        help="reference: experiments/reference/pytorch_original.json from ../shared/reference; "
                             "ours: experiments/results/ours_summary.json from the run folders under runs/")
    parser.add_argument("--shared", default=str(SHARED_REFERENCE), help="the reference folder")
    parser.add_argument("--runs", default="runs", help="the run folders")
    args = parser.parse_args(argv)
    if args.what == "reference":
        save_json(REFERENCE_JSON, build_reference(args.shared))
        print(f"wrote {REFERENCE_JSON}")
    else:
        save_json(OURS_SUMMARY, collect_ours(args.runs))
        print(f"wrote {OURS_SUMMARY}")


if __name__ == "__main__":
    main()
