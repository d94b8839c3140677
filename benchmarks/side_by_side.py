"""Ours against the authors' PyTorch original, timed side by side in one run on the same models, points and cores.

The project's speed claims against the original come from this script only: both implementations run in the same
run, on the same machine state, on the same trained models and the same input rows, with their calls interleaved.

Usage (from the project root, with the project's Python, which has TensorFlow)::

    OMP_WAIT_POLICY=PASSIVE TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/side_by_side.py \\
        --original /path/to/CLUE --original-python /path/to/torch-venv/bin/python [--repeats 5] [--threads 1,2]

``--original`` is a checkout of ``cambridge-mlg/CLUE`` at 3aaea125f626325b2446bc37bb7ed664d095efb4
(``git clone https://github.com/cambridge-mlg/CLUE && git -C CLUE checkout 3aaea12``). ``--original-python`` is a
Python with torch and numpy (the project's ``torch`` extra: torch==2.13.0, the CPU build); by default
the current interpreter, if it can import torch. ``--sides ours`` times our side alone (no checkout, no torch).
``--quick`` is a smoke test: every selected workload once, one repeat, the original without a warm-up (torch has
nothing to trace; ours keeps its warm-up, which traces), written to ``results/side_by_side_quick.json``; its times are
not measurements. ``--workloads`` selects workloads by name patterns (``clue/lsat/*``, ``ufido/*``, ...). The LSAT
training epochs read the upstream data (``CLUE_DATA_DIR``, by default ``../shared/data`` when it exists).

How the two sides run
---------------------
* Each side runs in its own long-lived worker process (this file, ``--worker ours|original``): ours under this
  interpreter, the original under ``--original-python``. The driver sends JSON commands on the worker's stdin and
  reads one JSON reply per command; everything the code prints goes to a log file.
* For each thread count T of ``--threads`` (default 1 and 2): both workers are started with ``OMP_NUM_THREADS``,
  ``MKL_NUM_THREADS``, ``TF_NUM_INTRAOP_THREADS`` and ``TF_NUM_INTEROP_THREADS`` = T (TensorFlow's thread pools
  are also set through ``tf.config.threading``; torch through ``torch.set_num_threads`` and
  ``set_num_interop_threads``), and each pins itself (``os.sched_setaffinity``) to the same first T allowed CPUs
  before importing either framework. ``OMP_WAIT_POLICY=PASSIVE`` is the default, so the idle worker does not spin.
* Per workload: both sides set it up and run ``--warmup`` untimed calls (tracing, allocator), then each side times
  a ``--matmul-n``^3 float32 matmul in its own framework (median of 3, after a warm-up: the reference rate), then
  ``--repeats`` rounds, each round alternating sides: ours, original, ours (e.g. ours without early stopping, the
  original, ours with early stopping). Each call is timed inside its worker (``time.perf_counter``, after
  ``gc.collect()``), end to end, inputs in numpy and results back in numpy.
* Per side and variant: every time, median, min, max, quartiles and IQR; the workload's FLOPs (below) over the
  median as GFLOP/s, and its fraction of the same worker's matmul rate (same framework, same T). Speed-ups are the
  original's median over ours, and the median of the per-round ratios.

Workloads (names as ``--workloads`` sees them)
----------------------------------------------
* ``clue/{lsat,compas}/n{100,1000}/{exact,orig}``: CLUE on the original's trained models (parity kits,
  ``../shared/reference/parity``, SCHEMA.md; its 53-sample BNN and gauss_cat VAE). Points: the kit's ``x_test``
  rows, the kit's explained rows (``clue/idx``) first, then the others by decreasing total uncertainty, repeated
  when more are asked than exist (COMPAS has 618); z_init the kit's encoder mean of those rows (``vae/enc_loc``),
  the same for both sides. Settings (SCHEMA.md 5.1): lr 0.1, min_steps 3, max_steps 50, n_early_stop 3, batch 256,
  L1 distance weight lambda / D with lambda 2. ``exact`` is the correct gradient (ours ``kit.post``; the original
  with ``CLUE_EXACT_GRAD=1``), ``orig`` the torch-1.3 one (ours ``CLUE.compat.OriginalGradientMLP``; the original
  with patch 10 below). The original is ``interpret/CLUE.py`` ``CLUE.batch_optimise``, which always runs all
  max_steps for every row. Ours is ``CLUE.CLUE`` on the kit loaded by the parity tests' ``load_kit``
  (``verification/parity.py``) in two variants:
  ``identical_work`` (``n_early_stop=0``: every row computed at every step, as the original) and ``early_stop``
  (its ``make_clue``, the kit settings: rows that met the stopping rule are no longer computed).
* ``clue/mnist_sized/n100/{exact,orig}``: an MNIST-sized CLUE. The original's MNIST kit is too heavy to ship, so
  both sides use a synthetic posterior with random weights, the same on both (drawn here with numpy, seed 0,
  U(+-1/sqrt(fan_in))): the 784-1200-1200-10 BNN with 20 saved samples (19 used, the original's off-by-one), and
  each side's own randomly initialised conv VAE of the same architecture (the original's ``MNISTconv_VAE_bern_net``
  with ``MNIST_recognition_resnet`` / ``MNIST_generator_resnet``, ours ``VAE(..., arch="mnist_conv")``), L = 20.
  Points: uniform [0, 1) pixels, z_init N(0, 1), both drawn here. Settings of the reference MNIST run: lr 0.1,
  35 steps, batch 128, lambda 4; no input normalisation on either side. Random weights make early stopping
  meaningless, so only ``identical_work`` is timed for ours.
* ``sghmc_epoch/lsat``: one SG-HMC sampling epoch (not burn-in) of the LSAT BNN (12-200-200-2, batch 512, the
  17432 training rows of ``data.load("lsat")``, which our worker hands to the original). Ours: ``BNN.chains
  .ChainGroup.train_epoch`` as ``BNN.train`` runs it. Original: the epoch loop of ``BNN/train.py`` (its DataLoader
  with ``--original-loader-workers`` workers, 3 in the original, then ``BNN_gauss.fit`` per batch with momentum
  resampled every 10 and the prior every 50 iterations), copied here because ``train_BNN_*`` runs whole trainings.
* ``vae_epoch/lsat``: one training epoch of the LSAT VAE (gauss_cat, 300 x 3, L = 4, batch 128, RAdam lr 1e-4) over
  the training rows of ``VAE.train``. Ours: ``benchmarks/train_step.py``'s ``vae_builder`` with
  ``common.training.make_train_epoch``, variants ``xla`` (the training script's default) and ``graph``. Original:
  the epoch loop of ``VAE/train.py`` (``VAE_gauss_cat_net.fit`` per batch, same DataLoader settings as above).
* ``ufido/compas/n100/{exact,orig}``: one U-FIDO sweep value on COMPAS (aleatoric target, L1 weight 1e-2, the
  original's schedule: 30 iterations, 20 mask samples for the first 11 and 10 after, lr 0.05 decayed by 0.8 every
  5), with the evaluation kit's in-filling VAEAC (``parity/evaluation/vaeac/compas_infill_weights.npz``) and the
  COMPAS kit BNN; then the final in-filled explanation. Original: ``interpret/FIDO.py``
  ``mask_explainer.train_mask(..., cat=True, flatten_ims=False)`` then ``mask_inpaint``. Ours:
  ``CLUE.baselines.u_fido`` with ``mnist_norm_quirk=True`` (the original's ``fit_cat`` normalises as for MNIST).

FLOPs (counted analytically, 2 per multiply-add, the same count for both sides)
---------------------------------------------------------------------------------
M(net) is the multiply-adds per input row of a network's dense / conv layers: M_bnn = D*200 + 200*200 + 200*2
(tabular), 784*1200 + 1200*1200 + 1200*10 (MNIST-sized); the VAE's decoder M_dec = L*W + 2*W^2 + W*D and encoder
M_enc = D*W + 2*W^2 + W*2L (W = 300, L = 4); the conv decoder's by layer (a ConvTranspose counted over its input
positions, H_in*W_in*C_in*C_out*k^2); the VAEAC in-filler M_inf = prior (2D*350 + 2*350^2 + 350*2L) + generator
(L*350 + 2*350^2 + 350*D). A backward pass to the inputs costs one more multiply-add per weight, a weight gradient
another. S is the number of samples that enter the result (53 tabular, 19 MNIST-sized).

* CLUE: n * T * 4 * (M_dec + S * M_bnn) + n * 2 * M_dec (T steps of decoder and BNN forward and backward to z, then
  the final decoding); with early stopping ours does less, and its rate is then the equivalent-work rate.
* SG-HMC epoch: N_train * (6 * M_bnn - 2 * D * 200) (forward, weight gradients, activation gradients but the input's).
* VAE epoch: N_train * (6 * (M_enc + M_dec) - 2 * D * W).
* U-FIDO: n * (P * (2 * M_inf + 4 * S * M_bnn) + 2 * M_inf), with P = 410 mask samples per row (20 x 11 + 10 x 19).

Bias adds, activations, normalisations, softmaxes and optimiser updates are left out (the rates are slight
underestimates), and so is work an implementation does beyond the algorithm (the original also computes the
gradients of the frozen BNN's and VAE's weights inside CLUE, and forwards its 54th, unused, sample).

The original, patched at run time
---------------------------------
The checkout is copied into a temporary folder outside this repository, and these source rewrites are applied to
the copy (each must match exactly once, else the run stops: the checkout is not the expected commit). The numbers
are those of ``../shared/reference/README.md`` where they are the same patch; the others of that list concern code
this benchmark does not import (torchvision and matplotlib in the training scripts, the data loaders, ``torch.load``).

* 5. ``src/utils.py`` ``get_nb_parameters``: ``np.sum(generator)`` -> builtin ``sum`` (numpy 2 raises).
* 9. ``BNN/sampler.py``: ``d_p.add_(weight_decay, p.data)`` -> ``d_p.add_(p.data, alpha=weight_decay)`` (the
  removed overload; the same maths).
* 10. ``BNN/wrapper.py`` ``sample_predict`` of ``BNN_cat`` and ``BNN_gauss``: the loop's ``load_state_dict`` and
  forward become one call of an added function. Without gradients it is unchanged. With gradients (CLUE, U-FIDO),
  torch >= 1.5 bumps the parameters' version counters in ``load_state_dict`` and the backward fails; the function
  does what torch 1.3's ``load_state_dict`` did, a copy into each parameter's ``.data`` (so the backward uses the
  last-loaded sample's weights for every sample: the ``orig`` gradient), or, with ``CLUE_EXACT_GRAD=1``,
  ``torch.func.functional_call`` with the sample's weights (the ``exact`` gradient).
* F. ``interpret/FIDO.py`` ``train_mask``: ``mask_explainer(..., cuda=True)`` -> ``cuda=False`` (hard-coded; the
  evaluation kit built the explainer itself instead).

The models are loaded into the original's classes as SCHEMA.md (sections 2-3) and SCHEMA-EVALUATION.md (1, 3.2)
say: the BNN samples as ``weight_set_samples`` state dicts, the VAE and VAEAC through ``load_state_dict(strict=True)``.
So patched and loaded, the original's CLUE on the kits' explained rows (``clue/idx``, z_init ``clue/z_init``)
reproduces the kits' recorded mean uncertainty after CLUE (LSAT 0.982277 / 0.989389, COMPAS 0.226612 / 0.237179,
exact / orig gradient) to float32 rounding.

Output: ``benchmarks/results/side_by_side.json`` (``--out``): ``machine`` (CPU model from ``lscpu`` and
``/proc/cpuinfo``, instruction sets, allowed CPUs, load averages), ``original`` (checkout, commit, Python, patches),
``flop_formulas``, and per thread count a ``runs`` entry with each worker's versions and thread settings, its matmul
rates, and per workload the FLOPs and each side's statistics.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import gc
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parent
RESULTS = HERE / "results" / "side_by_side.json"
QUICK_RESULTS = HERE / "results" / "side_by_side_quick.json"
PARITY = PROJECT_ROOT.parent / "shared" / "reference" / "parity"
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
ORIGINAL_COMMIT = "3aaea125f626325b2446bc37bb7ed664d095efb4"
HOW_TO_GET_ORIGINAL = ("git clone https://github.com/cambridge-mlg/CLUE && git -C CLUE checkout "
                       f"{ORIGINAL_COMMIT[:7]}, then pass --original CLUE (or set CLUE_ORIGINAL_CHECKOUT)")
HOW_TO_GET_TORCH = ("install the project's torch extra, torch==2.13.0 CPU (pip install torch==2.13.0 --index-url "
                    "https://download.pytorch.org/whl/cpu), into this interpreter, or pass --original-python PATH (or "
                    "set CLUE_ORIGINAL_PYTHON) to a Python with torch and numpy")
INSTRUCTION_SETS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl",
                    "avx512ifma", "avx512vbmi", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile",
                    "amx_bf16", "amx_int8")

# ------------------------------------------------------------------------------------------------ the workloads
TABULAR = {"lsat": "gaussian", "compas": "categorical"}
TAB_WIDTH, TAB_S = 200, 53  # BNN width; samples that enter the result (54 saved, the original drops the last)
VAE_WIDTH, VAE_LATENT = 300, 4
VAEAC_WIDTH = 350
CLUE_TAB = {"lr": 0.1, "min_steps": 3, "max_steps": 50, "n_early_stop": 3, "batch_size": 256, "lam": 2.0}
CLUE_MNIST = {"lr": 0.1, "min_steps": 3, "max_steps": 35, "n_early_stop": 3, "batch_size": 128, "lam": 4.0}
MNIST_DIMS, MNIST_SAVED, MNIST_LATENT, MNIST_SEED = (784, 1200, 1200, 10), 20, 20, 0
UFIDO = {"target": "aleatoric", "l1_weight": 1e-2, "n_iterations": 30, "mask_samples": 20, "late_mask_samples": 10,
         "late_from": 11}
SGHMC = {"batch_size": 512, "resample_momentum_every": 10, "resample_prior_every": 50, "burn_in": False}
VAE_TRAIN = {"batch_size": 128, "lr": 1e-4}


def dense_macs(dims) -> int:
    return int(sum(a * b for a, b in zip(dims[:-1], dims[1:])))


def mnist_generator_macs(latent: int = MNIST_LATENT) -> int:
    """Multiply-adds of the original's ``MNIST_generator_resnet`` (ours ``mnist_generator_resnet``) per row."""
    def resblock(hw, outer, inner):  # 1x1 down, 3x3, 1x1 up
        return hw * (outer * inner + inner * inner * 9 + inner * outer)

    macs = latent * latent + latent * 2048  # leaky_MLPBlock(L), Linear(L, 4*4*128)
    macs += 4 * 4 * 128 * 128 * 9 + 2 * resblock(49, 128, 96)  # ConvT k3 4->7, 2 ResBlocks
    macs += 49 * 128 * 64 * 16 + 2 * resblock(196, 64, 48)  # ConvT k4 7->14
    macs += 196 * 64 * 32 * 16 + 2 * resblock(784, 32, 24)  # ConvT k4 14->28
    return macs + 784 * 32  # Conv1x1 32->1


FLOP_FORMULAS = {
    "clue": "n * T * 4 * (M_dec + S * M_bnn) + n * 2 * M_dec",
    "sghmc_epoch": "N_train * (6 * M_bnn - 2 * D * 200)",
    "vae_epoch": "N_train * (6 * (M_enc + M_dec) - 2 * D * 300)",
    "ufido": "n * (P * (2 * M_inf + 4 * S * M_bnn) + 2 * M_inf), P = sum of mask samples over the iterations",
    "matmul": "2 * n^3",
}


VARIANT_NOTES = {
    "identical_work": "ours with n_early_stop=0: every row computed at every step, the original's work",
    "early_stop": "ours with the kit's early stopping (n_early_stop 3): rows that met the rule are not computed "
                  "further; its GFLOP/s is the equivalent-work rate (the FLOPs of all rows at all steps)",
    "all_steps": "the original's CLUE.batch_optimise: every row for all max_steps (early stopping only freezes "
                 "the recorded values)",
    "xla": "ours, the training step compiled with XLA (VAE.train's default for MLPs)",
    "graph": "ours, the training step as a TensorFlow graph without XLA",
}
POINTS_NOTE = ("tabular: the kit's x_test rows, its explained rows (clue/idx) first, then the rest by decreasing total "
               "uncertainty (53 samples), repeated beyond the test set; z_init its encoder mean (vae/enc_loc). "
               "MNIST-sized: uniform [0, 1) pixels and N(0, 1) z_init, numpy seed 1; the same arrays for both sides")


def workload_flops(spec: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """FLOPs of one call of a workload and the terms of its formula (:data:`FLOP_FORMULAS`)."""
    kind, n = spec["kind"], spec.get("n_points")
    if spec["dataset"] == "mnist_sized":
        m_bnn, m_dec, s = dense_macs(MNIST_DIMS), mnist_generator_macs(), MNIST_SAVED - 1
    else:
        d = spec["x_dim"]
        m_bnn, s = dense_macs([d, TAB_WIDTH, TAB_WIDTH, 2]), TAB_S
        m_dec = VAE_LATENT * VAE_WIDTH + 2 * VAE_WIDTH**2 + VAE_WIDTH * d
    if kind == "clue":
        t = spec["settings"]["max_steps"]
        terms = {"n": n, "T": t, "S": s, "M_bnn": m_bnn, "M_dec": m_dec}
        return float(n * t * 4 * (m_dec + s * m_bnn) + n * 2 * m_dec), terms
    d = spec["x_dim"]
    if kind == "sghmc_epoch":
        terms = {"N_train": spec["n_train"], "M_bnn": m_bnn, "D": d}
        return float(spec["n_train"] * (6 * m_bnn - 2 * d * TAB_WIDTH)), terms
    if kind == "vae_epoch":
        m_enc = d * VAE_WIDTH + 2 * VAE_WIDTH**2 + VAE_WIDTH * 2 * VAE_LATENT
        terms = {"N_train": spec["n_train"], "M_enc": m_enc, "M_dec": m_dec, "D": d}
        return float(spec["n_train"] * (6 * (m_enc + m_dec) - 2 * d * VAE_WIDTH)), terms
    if kind == "ufido":
        w, lat = VAEAC_WIDTH, VAE_LATENT
        m_inf = (2 * d * w + 2 * w * w + w * 2 * lat) + (lat * w + 2 * w * w + w * d)
        st = spec["settings"]
        p = sum(st["mask_samples"] if i < st["late_from"] else st["late_mask_samples"]
                for i in range(st["n_iterations"]))
        terms = {"n": n, "P": p, "S": s, "M_inf": m_inf, "M_bnn": m_bnn}
        return float(n * (p * (2 * m_inf + 4 * s * m_bnn) + 2 * m_inf)), terms
    raise ValueError(f"unknown workload kind {kind!r}")


def all_workloads(points: list[int], mnist_points: list[int], ufido_points: list[int]) -> list[dict[str, Any]]:
    """Every workload spec (JSON-able); ``ours`` / ``original`` list each side's variants."""
    specs = []
    for dataset in TABULAR:
        for n in points:
            for grad in ("exact", "orig"):
                specs.append({"name": f"clue/{dataset}/n{n}/{grad}", "kind": "clue", "dataset": dataset,
                              "n_points": n, "gradient": grad, "settings": dict(CLUE_TAB),
                              "ours": ["identical_work", "early_stop"], "original": ["all_steps"]})
    for n in mnist_points:
        for grad in ("exact", "orig"):
            specs.append({"name": f"clue/mnist_sized/n{n}/{grad}", "kind": "clue", "dataset": "mnist_sized",
                          "n_points": n, "gradient": grad, "settings": dict(CLUE_MNIST), "x_dim": 784,
                          "ours": ["identical_work"], "original": ["all_steps"]})
    specs.append({"name": "sghmc_epoch/lsat", "kind": "sghmc_epoch", "dataset": "lsat", "settings": dict(SGHMC),
                  "ours": ["sampling_epoch"], "original": ["sampling_epoch"]})
    specs.append({"name": "vae_epoch/lsat", "kind": "vae_epoch", "dataset": "lsat", "settings": dict(VAE_TRAIN),
                  "ours": ["xla", "graph"], "original": ["epoch"]})
    for n in ufido_points:
        for grad in ("exact", "orig"):
            specs.append({"name": f"ufido/compas/n{n}/{grad}", "kind": "ufido", "dataset": "compas", "n_points": n,
                          "gradient": grad, "settings": dict(UFIDO), "ours": ["sweep_value"],
                          "original": ["sweep_value"]})
    return specs


def select(specs: list[dict[str, Any]], patterns: str | None) -> list[dict[str, Any]]:
    if not patterns:
        return specs
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = [s for s in specs if any(fnmatch.fnmatchcase(s["name"], p) for p in pats)]
    if not chosen:
        raise SystemExit(f"--workloads {patterns!r} matches none of: {', '.join(s['name'] for s in specs)}")
    return chosen


def kit_rows(io: dict[str, np.ndarray], n: int) -> np.ndarray:
    """``n`` rows of the kit's ``x_test``: the explained rows (``clue/idx``) first, then the rest by decreasing total
    uncertainty (stable), repeated from the start when ``n`` exceeds the test set."""
    explained = io["clue/idx"].astype(np.int64)
    rest = np.argsort(-io["bnn/unc_total_Sm1"], kind="stable")
    order = np.concatenate([explained, rest[~np.isin(rest, explained)]])
    return np.resize(order, n)


def write_inputs(specs: list[dict[str, Any]], shared: Path, parity: Path) -> None:
    """The points both sides use, in ``shared``; adds ``x_dim`` (and ``rows_file``) to the specs."""
    ios: dict[str, Any] = {}
    for spec in specs:
        ds, n = spec["dataset"], spec.get("n_points")
        if ds in TABULAR:
            if ds not in ios:
                with np.load(parity / ds / "io.npz") as f:
                    ios[ds] = {k: f[k] for k in ("x_test", "clue/idx", "bnn/unc_total_Sm1", "vae/enc_loc")}
            spec["x_dim"] = int(ios[ds]["x_test"].shape[1])
            if n is not None:
                rows = kit_rows(ios[ds], n)
                path = shared / f"points_{ds}_{n}.npz"
                np.savez(path, rows=rows, x0=ios[ds]["x_test"][rows], z_init=ios[ds]["vae/enc_loc"][rows])
                spec["points_file"] = str(path)
        elif ds == "mnist_sized":
            rng = np.random.default_rng(MNIST_SEED + 1)
            path = shared / f"points_mnist_sized_{n}.npz"
            np.savez(path, x0=rng.random((n, 784), dtype=np.float32),
                     z_init=rng.standard_normal((n, MNIST_LATENT), dtype=np.float32))
            spec["points_file"] = str(path)


def mnist_samples(seed: int = MNIST_SEED) -> dict[str, np.ndarray]:
    """The synthetic MNIST-sized posterior both sides use: 20 samples of 784-1200-1200-10, U(+-1/sqrt(fan_in))."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, (a, b) in enumerate(zip(MNIST_DIMS[:-1], MNIST_DIMS[1:])):
        bound = np.float32(1.0 / np.sqrt(a))
        out[f"dense_{i}/kernel"] = (rng.random((MNIST_SAVED, a, b), dtype=np.float32) * 2 - 1) * bound
        out[f"dense_{i}/bias"] = (rng.random((MNIST_SAVED, b), dtype=np.float32) * 2 - 1) * bound
    return out


# ------------------------------------------------------------------------------------------ the original, patched
WRAPPER_HELPER = '''

# --- added at run time by benchmarks/side_by_side.py (patch 10), in a temporary copy -------------------------------
import os as _sbs_os


def _side_by_side_forward_sample(model, weight_dict, x, grad):
    """One weight sample's forward. Without gradients: as the original (load_state_dict). With gradients: what
    torch 1.3's load_state_dict did, a copy into each parameter's .data, which leaves the version counters alone (the
    backward then uses the last-loaded sample's weights); with CLUE_EXACT_GRAD=1 the sample's own weights through
    torch.func.functional_call (correct per-sample gradients)."""
    if not grad:
        model.load_state_dict(weight_dict)
        return model(x)
    if _sbs_os.environ.get("CLUE_EXACT_GRAD") == "1":
        return torch.func.functional_call(model, weight_dict, (x,))
    with torch.no_grad():
        local = dict(model.named_parameters())
        local.update(model.named_buffers())
        for key, value in weight_dict.items():
            local[key].data.copy_(value)
    return model(x)
'''

# (id, file, old text, new text); each old text must occur exactly once. "" as old text: append.
PATCHES = [
    ("5", "src/utils.py", "return np.sum(p.numel() for p in self.model.parameters())",
     "return sum(p.numel() for p in self.model.parameters())"),
    ("9", "BNN/sampler.py", "d_p.add_(weight_decay, p.data)", "d_p.add_(p.data, alpha=weight_decay)"),
    ("10", "BNN/wrapper.py", "self.model.load_state_dict(weight_dict)\n            out[idx] = self.model(x)",
     "out[idx] = _side_by_side_forward_sample(self.model, weight_dict, x, grad)"),
    ("10", "BNN/wrapper.py",
     "self.model.load_state_dict(weight_dict)\n            mu_vec[idx], std_vec[idx] = self.model(x)",
     "mu_vec[idx], std_vec[idx] = _side_by_side_forward_sample(self.model, weight_dict, x, grad)"),
    ("10", "BNN/wrapper.py", "", WRAPPER_HELPER),
    ("F", "interpret/FIDO.py", "gamma=0.8, cuda=True)\n", "gamma=0.8, cuda=False)\n"),
]


def original_commit(checkout: Path) -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=30)
        if out.returncode == 0:
            return out.stdout.strip()
    return None


def prepare_original(checkout: Path, tmp: Path) -> tuple[Path, dict[str, Any]]:
    """Copies the checkout into ``tmp/original`` and applies :data:`PATCHES` to the copy."""
    if not (checkout / "interpret" / "CLUE.py").is_file() or not (checkout / "BNN" / "wrapper.py").is_file():
        raise SystemExit(f"--original {checkout} is not a checkout of cambridge-mlg/CLUE (no interpret/CLUE.py): "
                         + HOW_TO_GET_ORIGINAL)
    commit = original_commit(checkout)
    if commit is not None and commit != ORIGINAL_COMMIT:
        print(f"warning: {checkout} is at {commit}, not {ORIGINAL_COMMIT}; the patches may not apply",
              file=sys.stderr)
    target = tmp / "original"
    shutil.copytree(checkout, target, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.pyc"))
    for pid, rel, old, new in PATCHES:
        path = target / rel
        text = path.read_text()
        if old:
            if text.count(old) != 1:
                raise SystemExit(f"patch {pid}: {rel} holds {text.count(old)} copies of {old!r} (expected 1); "
                                 f"is {checkout} at {ORIGINAL_COMMIT[:7]}?")
            text = text.replace(old, new)
        else:
            text += new
        path.write_text(text)
    return target, {"checkout": str(checkout), "commit": commit, "expected_commit": ORIGINAL_COMMIT,
                    "patched_copy": str(target), "patches": [f"{pid} {rel}" for pid, rel, *_ in PATCHES]}


# ------------------------------------------------------------------------------------------------------ workers
def _timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


class Backend:
    """One side's worker state: the current workload's callables per variant."""

    def __init__(self, init: dict[str, Any]):
        self.init, self.fns, self.shared = init, {}, Path(init["shared"])

    def setup(self, spec: dict[str, Any], warmup: int) -> dict[str, Any]:
        start = time.perf_counter()
        self.fns, info = self.build(spec)
        setup_s = time.perf_counter() - start
        warm = {v: [_timed(fn, 1) for _ in range(warmup)] for v, fn in self.fns.items()}
        return {"variants": list(self.fns), "setup_s": setup_s, "warmup_s": warm, **info}

    def run(self, variant: str) -> dict[str, Any]:
        gc.collect()
        start = time.perf_counter()
        extra = self.fns[variant]()
        seconds = time.perf_counter() - start
        return {"seconds": seconds, "extra": extra if isinstance(extra, dict) else {}}

    def teardown(self) -> dict[str, Any]:
        self.fns = {}
        gc.collect()
        return {}


class OursBackend(Backend):
    def __init__(self, init: dict[str, Any]):
        super().__init__(init)
        if str(PROJECT_ROOT) not in sys.path:
            sys.path.insert(1, str(PROJECT_ROOT))
        import tensorflow as tf

        threads = init["threads"]
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        self.tf, self.kits = tf, {}

    def info(self) -> dict[str, Any]:
        import keras

        tf = self.tf
        return {"python": sys.version.split()[0], "executable": sys.executable, "numpy": np.__version__,
                "tensorflow": tf.__version__, "keras": keras.__version__,
                "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                "tf_inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
                "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
                "affinity": sorted(os.sched_getaffinity(0)), "pid": os.getpid()}

    def matmul(self, n: int, repeats: int) -> float:
        tf = self.tf
        a = tf.random.stateless_normal([n, n], seed=[1, 2])
        b = tf.random.stateless_normal([n, n], seed=[3, 4])
        mm = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
        float(mm())
        return 2 * n**3 / _timed(lambda: float(mm()), repeats) / 1e9

    @staticmethod
    def parity_module():
        """The parity tests' kit loader, ``verification.parity``."""
        from verification import parity

        return parity

    def kit(self, dataset: str):
        if dataset not in self.kits:
            self.kits[dataset] = self.parity_module().load_kit(self.init["parity"], dataset)
        return self.kits[dataset]

    def build(self, spec):
        return getattr(self, "build_" + spec["kind"])(spec)

    def build_clue(self, spec):
        import dataclasses

        from CLUE.explainer import CLUE, CLUEConfig, CLUEWeights

        pts = np.load(spec["points_file"])
        x0, z0 = pts["x0"], pts["z_init"]
        st = spec["settings"]
        if spec["dataset"] == "mnist_sized":
            from BNN.model import Architecture
            from BNN.posterior import Posterior
            from CLUE.compat import OriginalGradientMLP
            from VAE.model import VAE

            samples = mnist_samples()
            if spec["gradient"] == "exact":
                arch = Architecture("mlp", MNIST_DIMS[0], MNIST_DIMS[-1], MNIST_DIMS[1], len(MNIST_DIMS) - 2)
                bnn = Posterior(arch, "categorical", {k: v[:-1] for k, v in samples.items()})
            else:
                n_layers = len(MNIST_DIMS) - 1
                bnn = OriginalGradientMLP([samples[f"dense_{i}/kernel"] for i in range(n_layers)],
                                          [samples[f"dense_{i}/bias"] for i in range(n_layers)], "categorical")
            vae = VAE([1] * 784, MNIST_LATENT, likelihood="bernoulli", arch="mnist_conv")
            vae(x0[:2])  # build
            config = CLUEConfig(CLUEWeights.paper(st["lam"], 784), lr=st["lr"], min_steps=st["min_steps"],
                                max_steps=st["max_steps"], n_early_stop=0, batch_size=st["batch_size"])
            clue = CLUE(bnn, vae, config)
            return {"identical_work": lambda: _clue_info(clue.explain(x0, z_init=z0))}, {}
        kit = self.kit(spec["dataset"])
        early = self.parity_module().make_clue(kit, spec["gradient"], st["lr"])
        assert (early.config.max_steps, early.config.batch_size) == (st["max_steps"], st["batch_size"])
        full = CLUE(early.bnn, early.generator, dataclasses.replace(early.config, n_early_stop=0))
        return {"identical_work": lambda: _clue_info(full.explain(x0, z_init=z0)),
                "early_stop": lambda: _clue_info(early.explain(x0, z_init=z0))}, {}

    def build_sghmc_epoch(self, spec):
        import data
        from BNN import train
        from BNN.chains import ChainGroup

        tf = self.tf
        config = train.Config(dataset="lsat")
        ds = data.load("lsat")
        arch, likelihood, hparams = train.model_spec(config, ds)
        st = spec["settings"]
        assert config.batch_size == st["batch_size"] and config.resample_momentum_every == \
            st["resample_momentum_every"] and config.resample_prior_every == st["resample_prior_every"]
        chain = ChainGroup(arch, likelihood, [config.seed], hparams, config.n_saves)
        x, y = tf.constant(ds.x_train), tf.constant(ds.y_train)
        epoch = tf.function(lambda burn: chain.train_epoch(x, y, config.batch_size, burn,
                                                           config.resample_momentum_every,
                                                           config.resample_prior_every))
        np.savez(self.shared / "lsat_sghmc_train.npz", x=ds.x_train, y=ds.y_train)
        burn = tf.constant(bool(st["burn_in"]))
        return {"sampling_epoch": lambda: float(epoch(burn)[0][0])}, {"n_train": len(ds.x_train)}

    def build_vae_epoch(self, spec):
        if str(HERE) not in sys.path:
            sys.path.insert(0, str(HERE))
        from train_step import vae_builder

        from common.training import make_train_epoch

        fns, n_train = {}, None
        for variant, jit in (("xla", True), ("graph", False)):
            step, x_train, batch_size, generator = vae_builder(spec["dataset"])()
            assert batch_size == spec["settings"]["batch_size"]
            epoch = make_train_epoch(step, x_train, generator, batch_size, jit_compile=jit)
            fns[variant] = _counted(epoch)
            n_train = len(x_train)
        np.savez(self.shared / "lsat_vae_train.npz", x=x_train)
        return fns, {"n_train": n_train}

    def build_ufido(self, spec):
        if str(PROJECT_ROOT / "tests") not in sys.path:
            sys.path.insert(0, str(PROJECT_ROOT / "tests"))
        from parity_evaluation_kit import read_npz, vaeac_from_state

        from CLUE.baselines import UFIDOConfig, u_fido

        kit = self.kit(spec["dataset"])
        bnn = kit.post if spec["gradient"] == "exact" else kit.orig
        vaeac = vaeac_from_state(read_npz(Path(self.init["parity"]) / "evaluation" / "vaeac"
                                          / f"{spec['dataset']}_infill_weights.npz"))
        st = spec["settings"]
        config = UFIDOConfig(l1_weight=st["l1_weight"], aleatoric=1.0 if st["target"] == "aleatoric" else 0.0,
                             epistemic=1.0 if st["target"] == "epistemic" else 0.0, n_iterations=st["n_iterations"],
                             mask_samples=st["mask_samples"], late_mask_samples=st["late_mask_samples"],
                             late_from=st["late_from"], mnist_norm_quirk=True)
        x0 = np.load(spec["points_file"])["x0"]
        return {"sweep_value": lambda: {"mean_mask": float(np.mean(u_fido(bnn, vaeac, x0, config).mask))}}, {}


def _counted(epoch):
    count = [0]

    def run():
        count[0] += 1
        epoch(count[0])

    return run


def _clue_info(result) -> dict[str, Any]:
    stop = np.asarray(result.stop_step)
    return {"mean_uncertainty_after": float(np.mean(result.uncertainty_after)),
            "rows_stopped": int(np.sum(stop > 0)), "mean_stop_step": float(np.mean(stop[stop > 0])) if
            np.any(stop > 0) else None}


class OriginalBackend(Backend):
    def __init__(self, init: dict[str, Any]):
        super().__init__(init)
        code = Path(init["original_dir"])
        sys.path[:] = [str(code)] + [p for p in sys.path if Path(p or ".").resolve() not in (HERE, PROJECT_ROOT)]
        import torch

        torch.set_num_threads(init["threads"])
        torch.set_num_interop_threads(init["threads"])
        self.torch = torch
        from BNN import wrapper

        if Path(wrapper.__file__).resolve().parent.parent != code.resolve():
            raise RuntimeError(f"BNN.wrapper was imported from {wrapper.__file__}, not from the patched copy {code}")
        if not hasattr(wrapper, "_side_by_side_forward_sample"):
            raise RuntimeError("BNN/wrapper.py of the patched copy lacks patch 10")

    def info(self) -> dict[str, Any]:
        torch = self.torch
        return {"python": sys.version.split()[0], "executable": sys.executable, "numpy": np.__version__,
                "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                "torch_interop_threads": torch.get_num_interop_threads(),
                "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "mkldnn": bool(torch.backends.mkldnn.is_available()),
                "parallel_info": torch.__config__.parallel_info().splitlines()[:8],
                "affinity": sorted(os.sched_getaffinity(0)), "pid": os.getpid()}

    def matmul(self, n: int, repeats: int) -> float:
        torch = self.torch
        gen = torch.Generator().manual_seed(1)
        a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
        torch.mm(a, b)
        return 2 * n**3 / _timed(lambda: torch.mm(a, b), repeats) / 1e9

    def build(self, spec):
        if spec.get("gradient"):
            os.environ["CLUE_EXACT_GRAD"] = "1" if spec["gradient"] == "exact" else "0"
        return getattr(self, "build_" + spec["kind"])(spec)

    def bnn(self, dataset: str):
        """A ``BNN_gauss`` / ``BNN_cat`` holding the kit's (or the synthetic) samples as ``weight_set_samples``."""
        torch = self.torch
        from BNN.models import MLP, MLP_gauss
        from BNN.wrapper import BNN_cat, BNN_gauss

        if dataset == "mnist_sized":
            samples, likelihood = mnist_samples(), "categorical"
        else:
            samples, likelihood = dict(np.load(Path(self.init["parity"]) / dataset / "bnn_samples.npz")), \
                TABULAR[dataset]
        kernels = [samples[f"dense_{i}/kernel"] for i in range(3)]
        d, width, n_out = kernels[0].shape[1], kernels[0].shape[2], kernels[-1].shape[2]
        if likelihood == "gaussian":
            net = BNN_gauss(MLP_gauss(d, width, 2, n_out // 2, False), N_train=1, lr=1e-2, cuda=False)
        else:
            net = BNN_cat(MLP(d, width, 2, n_out, False), N_train=1, lr=1e-2, cuda=False)
        net.weight_set_samples = [
            {f"block.{2 * i}.{name}": torch.from_numpy(np.ascontiguousarray(
                samples[f"dense_{i}/{key}"][s].T if key == "kernel" else samples[f"dense_{i}/{key}"][s]))
             for i in range(3) for name, key in (("weight", "kernel"), ("bias", "bias"))}
            for s in range(len(kernels[0]))]
        net.model.load_state_dict(net.weight_set_samples[0], strict=True)  # checks the keys
        return net

    def vae(self, dataset: str):
        torch = self.torch
        from VAE.fc_gauss_cat import VAE_gauss_cat_net

        with np.load(Path(self.init["parity"]) / dataset / "vae.npz") as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays["meta"]))
        net = VAE_gauss_cat_net(meta["input_dim_vec"], meta["width"], meta["depth"], meta["latent_dim"],
                                pred_sig=False, lr=1e-4, cuda=False, flatten=False)
        state = {e["torch_key"]: torch.from_numpy(np.ascontiguousarray(arrays[e["name"]].T if e["transposed"]
                                                                         else arrays[e["name"]]))
                 for e in meta["param_map"]}
        net.model.load_state_dict(state, strict=True)
        return net

    def build_clue(self, spec):
        from interpret.CLUE import CLUE
        from src.utils import Ln_distance

        pts = np.load(spec["points_file"])
        x0, z0 = pts["x0"], pts["z_init"]
        st = spec["settings"]
        bnn = self.bnn(spec["dataset"])
        if spec["dataset"] == "mnist_sized":
            from VAE.MNISTconv_bern import MNISTconv_VAE_bern_net
            from VAE.models import MNIST_generator_resnet, MNIST_recognition_resnet

            vae = MNISTconv_VAE_bern_net(MNIST_LATENT, MNIST_recognition_resnet(MNIST_LATENT),
                                         MNIST_generator_resnet(MNIST_LATENT), lr=7e-4, cuda=False)
            x0, dims, regression, flatten = x0.reshape(-1, 1, 28, 28), (1, 2, 3), False, True
        else:
            vae, dims, regression, flatten = self.vae(spec["dataset"]), 1, TABULAR[spec["dataset"]] == "gaussian", \
                False
        width = int(np.prod(x0.shape[1:]))

        def run():
            out = CLUE.batch_optimise(
                vae, bnn, x0, uncertainty_weight=1, aleatoric_weight=0, epistemic_weight=0, prior_weight=0,
                distance_weight=st["lam"] / width, latent_L2_weight=0, prediction_similarity_weight=0, lr=st["lr"],
                min_steps=st["min_steps"], max_steps=st["max_steps"], n_early_stop=st["n_early_stop"],
                batch_size=st["batch_size"], cond_mask=None, desired_preds=None,
                distance_metric=Ln_distance(n=1, dim=dims), z_init=z0, norm_MNIST=False, flatten_BNN=flatten,
                regression=regression, prob_BNN=True, cuda=False)
            return {"mean_uncertainty_after": float(np.mean(out[2][-1]))}

        return {"all_steps": run}, {}

    def _loader(self, x, y, batch_size):
        import torch.utils.data
        from src.utils import Datafeed

        return torch.utils.data.DataLoader(Datafeed(x, y), batch_size=batch_size, shuffle=True, pin_memory=False,
                                           num_workers=self.init["loader_workers"])

    def build_sghmc_epoch(self, spec):
        from BNN.models import MLP_gauss
        from BNN.wrapper import BNN_gauss

        self.torch.manual_seed(0)
        np.random.seed(0)
        d = np.load(self.shared / "lsat_sghmc_train.npz")
        x, y, st = d["x"], d["y"], spec["settings"]
        net = BNN_gauss(MLP_gauss(x.shape[1], TAB_WIDTH, 2, y.shape[1], False), N_train=len(x), lr=1e-2, cuda=False)
        loader = self._loader(x, y, st["batch_size"])
        it = [0]

        def epoch():  # BNN/train.py's epoch loop
            net.set_mode_train(True)
            for xb, yb in loader:
                net.fit(xb, yb, burn_in=st["burn_in"], resample_momentum=(it[0] % st["resample_momentum_every"] == 0),
                        resample_prior=(it[0] % st["resample_prior_every"] == 0))
                it[0] += 1

        return {"sampling_epoch": epoch}, {"n_train": len(x)}

    def build_vae_epoch(self, spec):
        from VAE.fc_gauss_cat import VAE_gauss_cat_net

        self.torch.manual_seed(0)
        np.random.seed(0)
        x = np.load(self.shared / "lsat_vae_train.npz")["x"]
        with np.load(Path(self.init["parity"]) / spec["dataset"] / "vae.npz") as f:
            vec = json.loads(str(f["meta"]))["input_dim_vec"]
        net = VAE_gauss_cat_net(vec, VAE_WIDTH, 3, VAE_LATENT, pred_sig=False, lr=spec["settings"]["lr"], cuda=False,
                                flatten=False)
        loader = self._loader(x, x, spec["settings"]["batch_size"])

        def epoch():  # VAE/train.py's epoch loop
            net.set_mode_train(True)
            for xb, _ in loader:
                net.fit(xb)

        return {"epoch": epoch}, {"n_train": len(x)}

    def build_ufido(self, spec):
        torch = self.torch
        from interpret.FIDO import mask_explainer

        from VAEAC.fc_gauss_cat import VAEAC_gauss_cat_net

        bnn = self.bnn(spec["dataset"])
        with np.load(Path(self.init["parity"]) / "evaluation" / "vaeac" / f"{spec['dataset']}_infill_weights.npz") \
                as f:
            arrays = {k: f[k] for k in f.files}
        meta = json.loads(str(arrays["meta"]))
        vaeac = VAEAC_gauss_cat_net(meta["input_dim_vec"], meta["width"], meta["depth"], meta["latent_dim"],
                                    pred_sig=False, lr=meta["lr"], cuda=False, flatten=False)
        vaeac.model.load_state_dict({k: torch.from_numpy(arrays[k]) for k in meta["keys"]}, strict=True)
        st = spec["settings"]
        x = torch.Tensor(np.load(spec["points_file"])["x0"])

        def run():
            explainer, *_ = mask_explainer.train_mask(
                x, bnn, vaeac, 1.0 if st["target"] == "aleatoric" else 0.0, 1.0 if st["target"] == "epistemic" else 0.0,
                L1w=st["l1_weight"], N_epochs=st["n_iterations"], mask_samples=st["mask_samples"],
                mask_samples2=st["late_mask_samples"], cat=True, flatten_ims=False, test_dims=None)
            _, mask = explainer.mask_inpaint(x, vaeac, flatten_ims=False, test_dims=None, cat=True)
            return {"mean_mask": float(mask.mean())}

        return {"sweep_value": run}, {}


def worker_main(side: str) -> None:
    """A worker: JSON commands on stdin, one JSON reply per command on the original stdout; prints go to stderr."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    backend: Backend | None = None
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg["cmd"]
        if cmd == "quit":
            break
        try:
            if cmd == "init":
                os.sched_setaffinity(0, msg["cores"])
                backend = (OursBackend if side == "ours" else OriginalBackend)(msg)
                reply = backend.info()
            elif cmd == "matmul":
                reply = {"gflops": backend.matmul(msg["n"], msg["repeats"])}
            elif cmd == "setup":
                reply = backend.setup(msg["spec"], msg["warmup"])
            elif cmd == "run":
                reply = backend.run(msg["variant"])
            elif cmd == "teardown":
                reply = backend.teardown()
            else:
                reply = {"error": f"unknown command {cmd!r}"}
        except Exception:  # reported to the driver, which records it and goes on
            reply = {"error": traceback.format_exc()}
        sys.stdout.flush()
        proto.write(json.dumps(reply) + "\n")


class Worker:
    """The driver's handle on one worker process."""

    def __init__(self, side: str, python: str, env: dict[str, str], cwd: Path, log: Path):
        self.side, self.log = side, log
        self.log_file = open(log, "w")  # closed in close()
        self.proc = subprocess.Popen([python, str(Path(__file__).resolve()), "--worker", side], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log_file, env=env, cwd=str(cwd), text=True,
                                     bufsize=1)

    def call(self, cmd: str, **msg) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps({"cmd": cmd, **msg}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.log_file.flush()
            tail = "".join(self.log.read_text(errors="replace").splitlines(True)[-30:])
            raise RuntimeError(f"the {self.side} worker exited (code {self.proc.wait()}); its log ends:\n{tail}")
        return json.loads(line)

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log_file.close()


# ------------------------------------------------------------------------------------------------------ the driver
def machine_record() -> dict[str, Any]:
    """CPU model, instruction sets and the rest timings depend on (``lscpu`` and ``/proc/cpuinfo``)."""
    lscpu: dict[str, str] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30, env={**os.environ, "LC_ALL": "C"})
        for line in out.stdout.splitlines():
            key, _, value = line.partition(":")
            if value.strip() and key.strip() != "Flags" and not key.startswith("Vulnerability"):
                lscpu[key.strip()] = value.strip()
    model, flags = None, set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model is None:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    return {"cpu_model": model or lscpu.get("Model name") or platform.processor(), "lscpu": lscpu,
            "instruction_sets": [f for f in INSTRUCTION_SETS if f in flags], "hypervisor": "hypervisor" in flags,
            "cpus": os.cpu_count(), "cpus_allowed": sorted(os.sched_getaffinity(0)), "platform": platform.platform(),
            "driver_python": sys.version.split()[0], "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
            "load_average_start": list(os.getloadavg())}


def stats(times: list[float], flops: float | None, matmul_gflops: float | None) -> dict[str, Any]:
    a = np.asarray(times, dtype=np.float64)
    q1, med, q3 = (float(v) for v in np.percentile(a, [25, 50, 75]))
    out = {"seconds": [float(t) for t in a], "median_s": med, "min_s": float(a.min()), "max_s": float(a.max()),
           "q1_s": q1, "q3_s": q3, "iqr_s": q3 - q1}
    if flops:
        out["gflops"] = flops / med / 1e9
        out["matmul_gflops"] = matmul_gflops
        out["fraction_of_matmul"] = out["gflops"] / matmul_gflops if matmul_gflops else None
    return out


def worker_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                "TF_NUM_INTEROP_THREADS"):
        env[key] = str(threads)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("MPLBACKEND", "Agg")
    if "CLUE_DATA_DIR" not in env and SHARED_DATA.is_dir():
        env["CLUE_DATA_DIR"] = str(SHARED_DATA)
    env.pop("CLUE_EXACT_GRAD", None)
    return env


def round_order(ours: list[str], original: list[str]) -> list[tuple[str, str]]:
    """One round's calls, alternating sides: ours, original, ours, ..."""
    order = []
    for i in range(max(len(ours), len(original))):
        order += [("ours", v) for v in ours[i:i + 1]] + [("original", v) for v in original[i:i + 1]]
    return order


def run_workload(spec: dict[str, Any], workers: dict[str, Worker], args, warmup: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {k: spec[k] for k in ("name", "kind", "dataset", "n_points", "gradient", "settings")
                           if k in spec}
    setups, variants = {}, {}
    for side, worker in workers.items():
        reply = worker.call("setup", spec=spec, warmup=warmup[side])
        if "error" in reply:
            out.setdefault("errors", {})[side] = reply["error"]
            print(f"  {spec['name']}: {side} setup failed:\n{reply['error']}", file=sys.stderr)
            continue
        setups[side], variants[side] = reply, reply["variants"]
        if reply.get("n_train"):
            spec["n_train"] = reply["n_train"]
    try:
        flops, terms = workload_flops(spec)
    except KeyError:  # an epoch workload whose setup failed on both sides: no row count
        flops, terms = None, {}
    out.update({"gflop": flops / 1e9 if flops else None, "flop_formula": FLOP_FORMULAS[spec["kind"]],
                "flop_terms": terms, "variant_notes": {v: VARIANT_NOTES[v] for side in ("ours", "original")
                                                       for v in spec[side] if v in VARIANT_NOTES}})
    matmul = {side: workers[side].call("matmul", n=args.matmul_n, repeats=3).get("gflops") for side in variants}
    times: dict[str, dict[str, list[float]]] = {side: {v: [] for v in vs} for side, vs in variants.items()}
    extras: dict[str, dict[str, Any]] = {side: {} for side in variants}
    for _ in range(args.repeats):
        for side, variant in round_order(variants.get("ours", []), variants.get("original", [])):
            reply = workers[side].call("run", variant=variant)
            if "error" in reply:
                out.setdefault("errors", {})[f"{side}/{variant}"] = reply["error"]
                print(f"  {spec['name']}: {side} {variant} failed:\n{reply['error']}", file=sys.stderr)
                continue
            times[side][variant].append(reply["seconds"])
            extras[side][variant] = reply["extra"]
    out["sides"] = {}
    for side in variants:
        out["sides"][side] = {"matmul_gflops": matmul[side], "setup_s": setups[side]["setup_s"],
                              "warmup_s": setups[side]["warmup_s"], "variants": {}}
        for v, ts in times[side].items():
            if ts:
                out["sides"][side]["variants"][v] = {**stats(ts, flops, matmul[side]), "last_call": extras[side][v]}
    ours, orig = out["sides"].get("ours", {}).get("variants", {}), out["sides"].get("original", {}).get("variants", {})
    if ours and orig:
        ref_name, ref = next(iter(orig.items()))
        out["speedup"] = {}
        for v, s in ours.items():
            paired = [o / t for o, t in zip(ref["seconds"], s["seconds"])]
            out["speedup"][v] = {"original_variant": ref_name, "median_ratio": ref["median_s"] / s["median_s"],
                                 "paired_median": float(np.median(paired)), "paired_min": float(min(paired)),
                                 "paired_max": float(max(paired))}
    for side in workers:
        workers[side].call("teardown")
    return out


def summary_line(w: dict[str, Any]) -> str:
    parts = [w["name"]]
    for side, rec in w.get("sides", {}).items():
        for v, s in rec["variants"].items():
            frac = s.get("fraction_of_matmul")
            parts.append(f"{side}/{v} {s['median_s']:.3f}s" + (f" ({frac:.2f} of matmul)" if frac else ""))
    for v, sp in w.get("speedup", {}).items():
        parts.append(f"x{sp['median_ratio']:.2f} ({v})")
    return "  " + ", ".join(parts)


def resolve_original(args) -> tuple[Path, str]:
    checkout = args.original or os.environ.get("CLUE_ORIGINAL_CHECKOUT")
    if not checkout:
        raise SystemExit("the original's side needs a checkout: " + HOW_TO_GET_ORIGINAL
                         + "; or time our side alone with --sides ours")
    python = args.original_python or os.environ.get("CLUE_ORIGINAL_PYTHON")
    if not python:
        if importlib.util.find_spec("torch") is None:
            raise SystemExit("the original's side needs torch, and this interpreter cannot import it: "
                             + HOW_TO_GET_TORCH)
        python = sys.executable
    probe = subprocess.run([python, "-c", "import torch, numpy; print(torch.__version__)"], capture_output=True,
                           text=True)
    if probe.returncode != 0:
        raise SystemExit(f"{python} cannot import torch and numpy ({probe.stderr.strip().splitlines()[-1:]}): "
                         + HOW_TO_GET_TORCH)
    return Path(checkout).expanduser().resolve(), python


def main(argv=None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python benchmarks/side_by_side.py", description=__doc__.split("\n")[0])
    parser.add_argument("--original", help="checkout of cambridge-mlg/CLUE at 3aaea12 (env CLUE_ORIGINAL_CHECKOUT)")
    parser.add_argument("--original-python", help="Python with torch for the original (env CLUE_ORIGINAL_PYTHON; "
                                                  "default: this interpreter if it can import torch)")
    parser.add_argument("--sides", choices=("both", "ours"), default="both", help="time both sides, or ours alone")
    parser.add_argument("--threads", default="1,2", help="thread counts, one run each (default 1,2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per workload (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per variant before timing (default 1)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 repeat, no warm-up for the original")
    parser.add_argument("--workloads", help="comma-separated name patterns, e.g. 'clue/lsat/*,ufido/*' (default all)")
    parser.add_argument("--points", default="100,1000", help="points of the tabular CLUE workloads")
    parser.add_argument("--mnist-points", default="100", help="points of the MNIST-sized CLUE workload")
    parser.add_argument("--ufido-points", default="100", help="points of the U-FIDO workload")
    parser.add_argument("--matmul-n", type=int, default=2048, help="size of the reference matmul (default 2048)")
    parser.add_argument("--original-loader-workers", type=int, default=3,
                        help="DataLoader workers of the original's training epochs (the original's 3)")
    parser.add_argument("--parity", default=str(PARITY), help="parity kits folder (../shared/reference/parity)")
    parser.add_argument("--out", help="JSON output (default results/side_by_side.json, --quick: _quick.json)")
    parser.add_argument("--keep-temp", action="store_true", help="keep the temporary folder (patched copy, logs)")
    parser.add_argument("--worker", choices=("ours", "original"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main(args.worker)
        return {}
    if args.quick:
        args.repeats = 1
    parity = Path(args.parity).resolve()
    if not (parity / "lsat" / "io.npz").is_file():
        raise SystemExit(f"the parity kits are needed at {parity} (SCHEMA.md; the original's trained models)")
    if importlib.util.find_spec("tensorflow") is None:
        raise SystemExit("run the driver with the project's Python (it times our side with TensorFlow)")
    sides = ["ours", "original"] if args.sides == "both" else ["ours"]
    checkout, python = resolve_original(args) if "original" in sides else (None, None)
    ints = lambda text: [int(v) for v in text.split(",") if v.strip()]
    specs = select(all_workloads(ints(args.points), ints(args.mnist_points), ints(args.ufido_points)), args.workloads)
    warmup = {"ours": args.warmup, "original": 0 if args.quick else args.warmup}
    allowed = sorted(os.sched_getaffinity(0))
    tmp = Path(tempfile.mkdtemp(prefix="side_by_side_"))
    command = "python benchmarks/side_by_side.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result: dict[str, Any] = {
        "benchmark": "side_by_side", "command": command.strip(), "quick": args.quick,
        "note": ("smoke run (--quick): one call per variant, not a measurement" if args.quick else
                 "ours and the original interleaved, same models, points and cores; medians of the repeats"),
        "repeats": args.repeats, "warmup": warmup, "matmul_n": args.matmul_n, "machine": machine_record(),
        "sides": sides, "original": None, "points": POINTS_NOTE, "flop_formulas": FLOP_FORMULAS, "runs": []}
    try:
        original_dir = None
        if "original" in sides:
            original_dir, record = prepare_original(checkout, tmp)
            result["original"] = {**record, "python": python,
                                  "dataloader_workers": args.original_loader_workers}
        write_inputs(specs, tmp, parity)
        for threads in ints(args.threads):
            if threads > len(allowed):
                result["runs"].append({"threads": threads, "skipped": f"only {len(allowed)} CPUs allowed"})
                continue
            cores = allowed[:threads]
            print(f"threads {threads}, cores {cores}", file=sys.stderr)
            env = worker_env(threads)
            workers = {"ours": Worker("ours", sys.executable, env, PROJECT_ROOT, tmp / f"ours_{threads}.log")}
            if "original" in sides:
                workers["original"] = Worker("original", python, env, tmp, tmp / f"original_{threads}.log")
            run: dict[str, Any] = {"threads": threads, "cores": cores, "workers": {}, "workloads": []}
            try:
                init = {"threads": threads, "cores": cores, "shared": str(tmp), "parity": str(parity),
                        "original_dir": str(original_dir) if original_dir else None,
                        "loader_workers": args.original_loader_workers}
                for side, worker in workers.items():
                    reply = worker.call("init", **init)
                    if "error" in reply:
                        raise RuntimeError(f"the {side} worker could not start:\n{reply['error']}")
                    run["workers"][side] = reply
                for spec in specs:
                    run["workloads"].append(run_workload(dict(spec), workers, args, warmup))
                    print(summary_line(run["workloads"][-1]), file=sys.stderr)
            finally:
                for worker in workers.values():
                    worker.close()
            rates = {side: [w["sides"][side]["matmul_gflops"] for w in run["workloads"]
                            if w.get("sides", {}).get(side, {}).get("matmul_gflops")] for side in workers}
            run["matmul_gflops"] = {side: float(np.median(r)) for side, r in rates.items() if r}
            result["runs"].append(run)
    finally:
        if args.keep_temp:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    result["machine"]["load_average_end"] = list(os.getloadavg())
    out = Path(args.out) if args.out else (QUICK_RESULTS if args.quick else RESULTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".tmp")
    partial.write_text(json.dumps(result, indent=1) + "\n")
    partial.replace(out)
    print(f"wrote {out}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
