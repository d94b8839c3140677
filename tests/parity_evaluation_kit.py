"""The evaluation parity kit in the project's classes, and the checks that compare the project with it.

``../shared/reference/parity/evaluation`` (format: its ``SCHEMA-EVALUATION.md``) holds what the ORIGINAL PyTorch code
computed on the Wine and COMPAS kits of ``verification.parity`` for the parts of the computational evaluation that the
earlier
kits do not cover. :func:`load_evaluation_kit` puts it into the project's classes (the kit BNNs and VAEs through
``verification.parity.load_kit``; the VAEAC state dicts into ``VAEAC.model.VAEAC``); each ``check_*`` function
recomputes one
part with the project's functions and records one check per comparison in a ``verification.parity.Report``:

* :func:`check_sensitivity`: localized sensitivity (``CLUE.baselines.localized_sensitivity``), section 2.2;
* :func:`check_clue_teacher_forced` and :func:`check_clue_full_runs`: target-weighted CLUE (``CLUE.explainer.CLUE``
  with aleatoric-only or epistemic-only weights), section 2.3;
* :func:`check_vaeac`: the VAEAC's posterior, prior, ELBO terms and in-filling with the kit's noise, section 3;
* :func:`check_ufido`: U-FIDO (``CLUE.baselines.u_fido``) with the kit's Gumbel uniforms, section 4.

Tolerances (:data:`TOL_EVAL`): a deterministic quantity within 1e-5 of the largest |value| of its array (1e-5 absolute
for arrays of order one); the rest are the kit's rare events (ReLU kinks, rows the original itself sends elsewhere
under a 1e-6 change of its start), each allowed only where the kit's own data say it happens.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from BNN.posterior import Posterior
from CLUE import baselines
from CLUE.baselines import UFIDOConfig, localized_sensitivity, u_fido
from CLUE.compat import OriginalGradientMLP
from CLUE.explainer import CLUE, CLUEConfig, CLUEWeights
from common import likelihoods as lk
from common.layers import PreactResidualBlock, assign_sequential_from_npz
from common.predictive import uncertainties
from VAE.model import load_parity_npz
from VAEAC.model import VAEAC
from verification.parity import TEACHER_FORCED_STEPS, TOL, Kit, Report, load_kit, rare_allowance

DATASETS = ("wine", "compas")
VARIANTS = ("exact", "orig")  # gradient variants: correct per-sample gradients / the torch-1.3 stale-weight ones
TARGETS = {"aleatoric": (1.0, 0.0), "epistemic": (0.0, 1.0)}  # target -> (aleatoric, epistemic) weight
ROLES = ("gt", "infill")  # VAEAC: the ground-truth model of the joint (x, y) / U-FIDO's in-filler of x
VAEAC_NETS = {"recognition_net": "recognition", "prior_net": "prior", "generator_net": "decoder"}  # torch -> ours

TOL_EVAL = {
    # A deterministic quantity (a forward pass, a gradient, an ELBO term, a teacher-forced step): |ours - ref| within
    # rel * max(1, max |ref|) over the array, i.e. 1e-5 absolute on outputs of order one, 1e-5 relative on larger
    # ones (ELBO terms reach |133|). We measure at most 5.3e-6 of it (SCHEMA-EVALUATION.md 5 suggests the same).
    "rel": 1e-5,
    # dJ/dz is a deterministic quantity except where the objective has a kink (a BNN ReLU, a decoder LeakyReLU or an
    # |x - x0| of the L1 distance at 0): there the two float32 implementations may take different sides. A
    # (step, row) is at a kink when such an input is within this window of 0 at the reference's z and x; our decoded
    # x differs from the original's by up to the forward tolerance, 1e-5, so one within 1e-5 may sit on either side.
    "kink_window": 1e-5,
    # ... and how many (step, row) gradients may be off by more than grad_atol (SCHEMA-EVALUATION.md 5: 1e-4 but for
    # kink pairs, of which the kit saw 22 of 25,600): at most this fraction of the pairs compared.
    "grad_atol": 1e-4,
    "kink_fraction": 0.01,
    # A CLUE row ends where the original's does: the same early-stop step, and x_final and the returned (frozen)
    # cost within 1e-3 (as verification.parity TOL["row_atol"]); the rows allowed to end elsewhere come from the kit's
    # z_init + 1e-6 runs (section 2.4), through verification.parity.rare_allowance.
    "row_atol": TOL["row_atol"],
    # U-FIDO, teacher-forced from the kit's P_t: dJ/dP within 1e-4 on at least this fraction of the entries (a
    # Gumbel sample whose relaxed mask sits at a BNN kink or at its rounding point 1/2 changes one row's gradient).
    "ufido_grad_atol": 1e-4,
    "ufido_grad_fraction": 0.995,
    # U-FIDO run end to end: a row ends where the original's does when its final mask is the same and its explanation
    # within the deterministic tolerance; at least this fraction of the rows must. The final keep-probabilities must
    # be within 1e-3 (section 5's P atol) on at least this fraction of the entries: a relaxed mask sample within
    # rounding of its threshold 1/2, or at a BNN kink, changes its row's gradient, which Adam then carries on (the
    # original has the same events; no kit file measures them). We see at most 5 of 704 entries off (Wine orig).
    "ufido_p_atol": 1e-3,
    "ufido_row_fraction": 0.99,
    "ufido_p_fraction": 0.99,
}

UFIDO_TESTED = {"wine": "exact", "compas": "orig"}  # the gradient variant of each dataset's U-FIDO file in the tests
UFIDO_TEACHER_FORCED = (0, 3, 6, 9, 11)  # iterations the tests teacher-force: the first, one per lr period, the last


def det_tol(ref) -> float:
    """The deterministic tolerance of an array: ``rel * max(1, max |ref|)``."""
    ref = np.asarray(ref, np.float64)
    return TOL_EVAL["rel"] * max(1.0, float(np.max(np.abs(ref))) if ref.size else 1.0)


def record(report: Report, component: str, what: str, ours, ref, tol: float | None = None) -> float:
    """Records max |ours - ref| against ``tol`` (default :func:`det_tol`); a shape mismatch fails. Returns the value."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    tol = det_tol(ref) if tol is None else tol
    if ours.shape != ref.shape:
        report.check(component, f"{what}, max |diff|", math.inf, tol, detail=f"shape {ours.shape} vs {ref.shape}")
        return math.inf
    value = float(np.max(np.abs(ours - ref))) if ref.size else 0.0
    report.check(component, f"{what}, max |diff|", value, tol)
    return value


# ----------------------------------------------------------------------------------------------------- the kit
def read_npz(path: Path) -> dict[str, Any]:
    """Every array of a kit file, with ``meta`` parsed from its JSON (SCHEMA-EVALUATION.md 0)."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["meta"] = json.loads(str(arrays["meta"]))
    return arrays


def kit_files(parity_dir: str | Path) -> list[Path]:
    """Every file the tests read: the Wine and COMPAS kits of ``verification.parity`` and the evaluation kit."""
    parity_dir = Path(parity_dir)
    ev = parity_dir / "evaluation"
    files = [parity_dir / name / f for name in DATASETS for f in ("bnn_samples.npz", "vae.npz", "io.npz")]
    for name in DATASETS:
        files += [ev / "sensitivity_clue" / f"{name}_{v}{s}.npz" for v in VARIANTS for s in ("", "_zinit_1e-6")]
        files += [ev / "vaeac" / f"{name}_{role}_{kind}.npz" for role in ROLES for kind in ("weights", "io")]
        files += [ev / "ufido" / f"{name}_{v}.npz" for v in VARIANTS]
    return files


@dataclass
class EvaluationKit:
    """The evaluation kit of one dataset: ``base`` the ``verification.parity`` kit (BNN posteriors, VAE), ``folder`` the
    evaluation kit's folder; its files and VAEACs are read on first use and kept."""

    name: str
    folder: Path
    base: Kit
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def likelihood(self) -> str:
        return self.base.likelihood

    def npz(self, relative: str) -> dict[str, Any]:
        """``folder/relative`` as :func:`read_npz` returns it."""
        if relative not in self._cache:
            self._cache[relative] = read_npz(self.folder / relative)
        return self._cache[relative]

    def bnn(self, variant: str):
        """The kit BNN over the original's 53 samples, with exact gradients or the torch-1.3 ones."""
        return self.base.post if variant == "exact" else self.base.orig

    def vaeac(self, role: str) -> VAEAC:
        """The original's trained VAEAC (``vaeac/<name>_<role>_weights.npz``) in our class."""
        key = f"vaeac:{role}"
        if key not in self._cache:
            self._cache[key] = vaeac_from_state(self.npz(f"vaeac/{self.name}_{role}_weights.npz"))
        return self._cache[key]


@functools.cache
def load_evaluation_kit(parity_dir: str | Path, name: str) -> EvaluationKit:
    """The evaluation kit of ``name`` (``wine`` or ``compas``) under ``parity_dir`` (``../shared/reference/parity``)."""
    parity_dir = Path(parity_dir)
    return EvaluationKit(name, parity_dir / "evaluation", load_kit(parity_dir, name))


def _neutral_name(key: str, depth: int) -> tuple[str, bool] | None:
    """torch key -> (neutral name of ``common.layers.assign_sequential_from_npz``, transpose?); None for the
    informational ``num_batches_tracked``.

    ``<net>.block.0`` Linear in, ``.block.<b>.inner_net.{1,2}`` residual block b's BN and Linear (b < depth),
    ``.block.<depth>`` the LeakyReLU, ``.block.<depth + 1>`` the output BN, ``.block.<depth + 2>`` Linear out.

    Raises:
      KeyError: the key is not one of the three networks' (SCHEMA-EVALUATION.md 3.2).
    """
    net, block, index, *rest = key.split(".")
    if net not in VAEAC_NETS or block != "block" or not rest:
        raise KeyError(f"{key}: not a key of the VAEAC's recognition, prior or generator network")
    param = rest[-1]
    if param == "num_batches_tracked":
        return None
    i = int(index)
    if i in (0, depth + 2):
        layer, bn = ("dense_in" if i == 0 else "dense_out"), False
    elif i == depth + 1:
        layer, bn = "out_bn", True
    else:
        bn = rest[:2] == ["inner_net", "1"]
        layer = f"block_{i}/{'bn' if bn else 'dense'}"
    names = {"weight": "gamma" if bn else "kernel", "bias": "beta" if bn else "bias", "running_mean": "moving_mean",
             "running_var": "moving_variance"}
    return f"{VAEAC_NETS[net]}/{layer}/{names[param]}", names[param] == "kernel"


def vaeac_from_state(weights: Mapping[str, Any]) -> VAEAC:
    """A ``VAEAC`` holding the torch ``state_dict`` of a ``*_weights.npz`` (SCHEMA-EVALUATION.md 3.2).

    Linear weights are transposed into Keras kernels; every key must be one of the three networks' and every float
    tensor must be used (``assign_sequential_from_npz`` counts them per network).
    """
    meta = weights["meta"]
    likelihood = {"VAEAC_gauss_net": "gauss", "VAEAC_gauss_cat_net": "gauss_cat"}[meta["cls"]]
    model = VAEAC(meta["input_dim_vec"], meta["latent_dim"], likelihood, meta["width"], meta["depth"],
                  pred_sig=bool(meta.get("pred_sig", False)))
    arrays = {}
    for key in meta["keys"]:
        named = _neutral_name(key, meta["depth"])
        if named is not None:
            name, transpose = named
            arrays[name] = weights[key].T if transpose else weights[key]
    for net, prefix in ((model.recognition_net, "recognition"), (model.prior_net, "prior"),
                        (model.decoder, "decoder")):
        assign_sequential_from_npz(net, arrays, prefix)
    return model


# ------------------------------------------------------------------------------------------ perturbed models
def nudged_bnn(kit: EvaluationKit, variant: str, layer: str = "dense_2/kernel", rel: float = 1e-3):
    """The kit BNN of ``variant`` with ``layer`` of every weight sample scaled by ``1 + rel``."""
    samples = {k: v.numpy() for k, v in kit.base.full.samples.items()}
    samples[layer] = samples[layer] * np.float32(1.0 + rel)
    if variant == "exact":
        return Posterior(kit.base.full.arch, kit.likelihood, {k: v[:-1] for k, v in samples.items()})
    n_layers = sum(k.endswith("/kernel") for k in samples)
    return OriginalGradientMLP([samples[f"dense_{i}/kernel"] for i in range(n_layers)],
                               [samples[f"dense_{i}/bias"] for i in range(n_layers)], kit.likelihood)


def nudged_decoder_kit(kit: EvaluationKit, shift: float = 1e-3) -> EvaluationKit:
    """The kit with a fresh VAE whose decoder output bias is moved by ``shift``."""
    vae = load_parity_npz(kit.base.folder / "vae.npz")
    bias = vae.decoder.get_layer("dense_out").bias
    bias.assign(bias + shift)
    return replace(kit, base=replace(kit.base, vae=vae), _cache=kit._cache)


def nudged_vaeac(kit: EvaluationKit, role: str, key: str = "prior_net.block.5.weight", rel: float = 1e-3) -> VAEAC:
    """The original's VAEAC with one torch tensor scaled by ``1 + rel``."""
    weights = dict(kit.npz(f"vaeac/{kit.name}_{role}_weights.npz"))
    weights[key] = weights[key] * np.float32(1.0 + rel)
    return vaeac_from_state(weights)


# ------------------------------------------------------------------------------------- localized sensitivity
def uncertainty_split(bnn, x) -> np.ndarray:
    """``[3, n]`` (total, aleatoric, epistemic) of the project's decomposition."""
    return np.stack([u.numpy() for u in uncertainties(bnn, tf.constant(x))[:3]])


def uncertainty_gradient(bnn, x, aleatoric: float, epistemic: float) -> tuple[float, np.ndarray]:
    """The objective ``a sum U_ale + e sum U_epi`` at ``x`` and its input gradient, through ``uncertainties``."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        _, ale, epi, _ = uncertainties(bnn, x)
        objective = aleatoric * tf.reduce_sum(ale) + epistemic * tf.reduce_sum(epi)
    return float(objective), tape.gradient(objective, x).numpy()


def check_sensitivity(kit: EvaluationKit, report: Report, variant: str, bnn=None) -> None:
    """SCHEMA-EVALUATION.md 2.1-2.2, all 32 rows, both targets, the 4 steps.

    Compared: the uncertainties of x0; the objective and its input gradient; ``localized_sensitivity``'s stepped
    points x' = x0 - step * grad, within ``max(1, step)`` times the gradient's tolerance; the uncertainties of the
    original's stepped points. Tolerance :func:`det_tol` (1e-5 of the array's largest |value|, at least 1e-5).
    """
    ref = kit.npz(f"sensitivity_clue/{kit.name}_{variant}.npz")
    bnn = kit.bnn(variant) if bnn is None else bnn
    part = f"sensitivity {variant}"
    x0 = ref["x0"]
    report.equal(part, "x0 = x_test[rows]", kit.base.io["x_test"][ref["rows"]], x0)
    record(report, part, "uncertainties of x0", uncertainty_split(bnn, x0), ref["unc_x0"])
    for target, (a, e) in TARGETS.items():
        objective, grad = uncertainty_gradient(bnn, x0, a, e)
        record(report, part, f"{target}: objective", objective, ref[f"sens/{target}/objective"])
        grad_ref = ref[f"sens/{target}/grad"]
        record(report, part, f"{target}: gradient", grad, grad_ref)
        for i, step in enumerate(ref["meta"]["steps"]):
            ours = localized_sensitivity(bnn, x0, -step, a, e)
            record(report, part, f"{target}: x' at step {step:g}", ours, ref[f"sens/{target}/x_step"][i],
                   max(1.0, step) * det_tol(grad_ref))
            record(report, part, f"{target}: uncertainties of x' at step {step:g}",
                   uncertainty_split(bnn, ref[f"sens/{target}/x_step"][i]), ref[f"sens/{target}/unc_x_step"][i])


# ------------------------------------------------------------------------------------- target-weighted CLUE
def clue_runs(ref: Mapping[str, Any]) -> list[tuple[str, float]]:
    """The (target, lambda) runs of a ``sensitivity_clue`` file."""
    return [(t, float(lam)) for t in ref["meta"]["targets"] for lam in ref["meta"]["lambdas"]]


def run_prefix(target: str, lam: float) -> str:
    return f"clue/{target}/lam{lam:g}/"


def target_clue(kit: EvaluationKit, bnn, target: str, lam: float, x_dim: int) -> CLUE:
    """The original's call of 2.3: one target weight 1, distance lambda / D, lr 0.1, 3 / 50 / 3, batch 256."""
    config = CLUEConfig(CLUEWeights.paper(lam, x_dim, target), lr=0.1, min_steps=3, max_steps=50, n_early_stop=3,
                        batch_size=256)
    return CLUE(bnn, kit.base.vae, config)


def objective_and_gradient(clue: CLUE, z: np.ndarray, x0: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The objective's terms and dJ/dz at every ``z [T, n, L]`` (all steps as one batch; rows are independent)."""
    t, n, latent = z.shape
    flat = tf.constant(z.reshape(t * n, latent))
    x0 = tf.constant(np.tile(x0, (t, 1)))
    with tf.GradientTape() as tape:
        tape.watch(flat)
        terms = clue.objective(flat, x0, flat)
        total = tf.reduce_sum(terms["cost"])
    grad = tape.gradient(total, flat).numpy().reshape(t, n, latent)
    return {k: v.numpy().reshape(t, n, *v.shape[1:]) for k, v in terms.items()}, grad


def kink_distance(kit: EvaluationKit, z: np.ndarray, x: np.ndarray, x0: np.ndarray) -> np.ndarray:
    """``[B]`` distance of each (z, x) to the nearest kink of the objective: min |input| over the BNN's ReLUs (its
    53 forward samples, whose masks both gradient variants use), the decoder's LeakyReLUs, and |x - x0| over the
    continuous columns (the L1 distance)."""
    samples = kit.base.post.samples
    n_layers = sum(k.endswith("/kernel") for k in samples)
    h = tf.broadcast_to(tf.constant(x, tf.float32)[None], [samples["dense_0/kernel"].shape[0], *x.shape])
    nearest = np.full(len(x), np.inf)
    for i in range(n_layers - 1):
        h = tf.einsum("sbi,sio->sbo", h, samples[f"dense_{i}/kernel"]) + samples[f"dense_{i}/bias"][:, None]
        nearest = np.minimum(nearest, tf.reduce_min(tf.abs(h), axis=[0, 2]).numpy())
        h = tf.nn.relu(h)
    h = tf.constant(z, tf.float32)
    for layer in kit.base.vae.decoder.layers:
        if isinstance(layer, (keras.layers.LeakyReLU, PreactResidualBlock)):  # a block starts with its LeakyReLU
            nearest = np.minimum(nearest, tf.reduce_min(tf.abs(h), axis=1).numpy())
        h = layer(h, training=False)
    continuous = ~kit.base.categorical_columns
    if continuous.any():
        nearest = np.minimum(nearest, np.abs(x - x0)[:, continuous].min(axis=1))
    return nearest


def check_clue_teacher_forced(kit: EvaluationKit, report: Report, variant: str, bnn=None,
                              runs: list[tuple[str, float]] | None = None,
                              steps: tuple[int, ...] = TEACHER_FORCED_STEPS) -> None:
    """SCHEMA-EVALUATION.md 2.3: ``steps`` of each run (default every 5th of the 50, as ``verification.parity``), all 32
    rows, replayed on the original's own z trajectory.

    Compared at :func:`det_tol`: z_init (our encoder mean); per step the decoded x, the uncertainty split, the
    weighted distance and the cost, and the hard decode after the last step; dJ/dz, where every (step, row) off by
    more than :func:`det_tol` must be at a kink (:func:`kink_distance` within ``kink_window``) and at most
    ``kink_fraction`` of the pairs may be off by more than ``grad_atol``. Also: step 0's dJ/dz differs from the
    other gradient variant's by more than 1e-2 (the check tells the variants apart).
    """
    ref = kit.npz(f"sensitivity_clue/{kit.name}_{variant}.npz")
    other = kit.npz(f"sensitivity_clue/{kit.name}_{'orig' if variant == 'exact' else 'exact'}.npz")
    bnn = kit.bnn(variant) if bnn is None else bnn
    part = f"CLUE {variant}"
    x0 = ref["x0"]
    record(report, part, "z_init (encoder mean of x0)", kit.base.vae.encode(x0)[0].numpy(), ref["clue/z_init"])
    n_pairs = n_far = 0
    for target, lam in runs or clue_runs(ref):
        p = run_prefix(target, lam)
        clue = target_clue(kit, bnn, target, lam, x0.shape[1])
        at = list(steps)
        z_ref, x_ref = ref[p + "z_traj"][at], ref[p + "x_traj_raw"][at]
        terms, grad = objective_and_gradient(clue, z_ref, x0)
        record(report, part, f"{p} x per step", terms["x"], x_ref)
        for ours, key in (("uncertainty", "uncertainty_raw"), ("aleatoric", "aleatoric_raw"),
                          ("epistemic", "epistemic_raw"), ("distance_term", "dist_raw"), ("cost", "cost_raw")):
            if p + key in ref:
                record(report, part, f"{p} {key}", terms[ours], ref[p + key][at])
        last = kit.base.vae.regenerate(ref[p + "z_traj"][-1], straight_through=False).numpy()
        record(report, part, f"{p} hard decode after the last step", last, ref[p + "x_traj_raw"][-1])
        err = _check_gradient_off_kinks(kit, report, part, p, grad, ref[p + "grad_z_raw"][at], z_ref, x_ref, x0, at)
        n_pairs += err.size
        n_far += int(np.sum(err > TOL_EVAL["grad_atol"]))
        report.check(part, f"{p} step {at[0]} dJ/dz, max |diff| from the other variant's", np.abs(
            grad[0] - other[p + "grad_z_raw"][at[0]]).max(), 1e-2, "min")
    report.check(part, f"(step, row) dJ/dz off by > {TOL_EVAL['grad_atol']:g} (kinks), of {n_pairs}", n_far,
                 TOL_EVAL["kink_fraction"] * n_pairs)


def _check_gradient_off_kinks(kit: EvaluationKit, report: Report, part: str, p: str, grad, grad_ref, z_ref, x_ref,
                              x0, at: list[int]) -> np.ndarray:
    """Records that every (step, row) whose dJ/dz is off by more than :func:`det_tol` sits at a kink of the objective
    (:func:`kink_distance` within ``kink_window`` at the reference's z and x); returns the per-pair max |diff|."""
    err = np.abs(grad - grad_ref).max(axis=-1)  # [steps, n]
    off = np.argwhere(err > det_tol(grad_ref))
    far = kink_distance(kit, z_ref[tuple(off.T)], x_ref[tuple(off.T)], x0[off[:, 1]]) if len(off) else np.zeros(0)
    not_kink = [(at[k], int(i)) for k, i in off[far > TOL_EVAL["kink_window"]]]
    report.check(part, f"{p} (step, row) dJ/dz off by > {det_tol(grad_ref):.2g} away from a kink", len(not_kink), 0,
                 "eq", detail=f"pairs {not_kink[:10]}" if not_kink else "")
    return err


def ends_elsewhere(stop, x_final, cost, ref: Mapping[str, Any], p: str) -> np.ndarray:
    """``[n]`` rows that do not end where the reference's do: another early-stop step, or x_final or the returned
    (frozen) cost off by more than ``row_atol``; ``cost`` None compares stop step and x_final only (section 2.4)."""
    elsewhere = (stop != ref[p + "stop_step"]) | (np.abs(x_final - ref[p + "x_final"]).max(1) > TOL_EVAL["row_atol"])
    if cost is not None:
        elsewhere |= np.abs(cost - ref[p + "cost"]).max(0) > TOL_EVAL["row_atol"]
    return elsewhere


def zinit_allowance(kit: EvaluationKit, n_rows: int) -> int:
    """Rows of ``n_rows`` allowed to end elsewhere: the rate at which a 1e-6 change of z_init sends the original's
    own rows elsewhere (section 2.4: both gradient variants' ``*_zinit_1e-6.npz`` against the unperturbed runs,
    pooled, as ``verification.parity.divergent_row_allowance``), through ``verification.parity.rare_allowance``."""
    events = trials = 0
    for variant in VARIANTS:
        ref = kit.npz(f"sensitivity_clue/{kit.name}_{variant}.npz")
        perturbed = kit.npz(f"sensitivity_clue/{kit.name}_{variant}_zinit_1e-6.npz")
        for target, lam in clue_runs(ref):
            p = run_prefix(target, lam)
            events += int(ends_elsewhere(perturbed[p + "stop_step"], perturbed[p + "x_final"], None, ref, p).sum())
            trials += len(ref["rows"])
    return rare_allowance(events, trials, n_rows)


def check_clue_full_runs(kit: EvaluationKit, report: Report, variant: str, bnn=None,
                         runs: list[tuple[str, float]] | None = None) -> None:
    """SCHEMA-EVALUATION.md 2.3: each run optimised end to end from the kit's z_init (32 rows, 50 steps).

    A row ends where the original's does (:func:`ends_elsewhere`); then its freeze index and the uncertainties of
    its x_final must match too (``row_atol``). The rows that end elsewhere, over all runs, must not exceed
    :func:`zinit_allowance`. Figure ``<variant>/fraction_rows_matched``.
    """
    ref = kit.npz(f"sensitivity_clue/{kit.name}_{variant}.npz")
    bnn = kit.bnn(variant) if bnn is None else bnn
    part = f"CLUE {variant}"
    x0 = ref["x0"]
    n_rows = n_elsewhere = 0
    details = []
    for target, lam in runs or clue_runs(ref):
        p = run_prefix(target, lam)
        result = target_clue(kit, bnn, target, lam, x0.shape[1]).explain(x0, z_init=ref["clue/z_init"])
        elsewhere = ends_elsewhere(result.stop_step, result.x, result.cost, ref, p)
        same = ~elsewhere
        report.equal(part, f"{p} freeze index of the rows that end alike",
                     np.where(result.stop_step[same] > 0, result.freeze_index[same], -1), ref[p + "freeze_index"][same])
        record(report, part, f"{p} uncertainties of x_final (rows that end alike)",
               uncertainty_split(bnn, result.x)[:, same], ref[p + "unc_x_final"][:, same], TOL_EVAL["row_atol"])
        n_rows += len(same)
        n_elsewhere += int(elsewhere.sum())
        if elsewhere.any():
            details.append(f"{p}: rows {np.flatnonzero(elsewhere).tolist()}")
    allowed = zinit_allowance(kit, n_rows)
    report.check(part, f"rows that end elsewhere, of {n_rows}", n_elsewhere, allowed, detail="; ".join(details))
    report.figure(f"{variant}/fraction_rows_matched", 1.0 - n_elsewhere / n_rows, allowed / n_rows)


# ------------------------------------------------------------------------------------------------------ VAEAC
@contextlib.contextmanager
def pinned_normal(eps: np.ndarray) -> Iterator[list[int]]:
    """Inside the block ``tf.random.normal`` returns the kit's exported noise ``eps`` (its shape is checked); yields a
    one-element list counting the calls. The kit replaced torch's ``Normal.sample`` the same way (section 3.3)."""
    original, calls = tf.random.normal, [0]

    def replay(shape, *args, **kwargs):
        if [int(s) for s in shape] != list(eps.shape):
            raise ValueError(f"noise of shape {[int(s) for s in shape]} requested, the kit exported {eps.shape}")
        calls[0] += 1
        return tf.constant(eps)

    tf.random.normal = replay
    try:
        yield calls
    finally:
        tf.random.normal = original


def inpaint_modes(model: VAEAC) -> dict[str, str]:
    """The original's in-filling output forms of ``model`` (section 3.3) -> the ``inpaint`` mode that gives each."""
    if model.pred_sig:
        return {"loc": "raw", "scale": "raw"}
    if model.likelihood == "gauss":
        return {"out": "raw"}
    return {"hard": "hard", "cat_probs": "probs"}


def inpaint_outputs(model: VAEAC, xy, mask, n_samples: int, z_mean: bool) -> dict[str, np.ndarray]:
    """``inpaint`` in the original's output forms, one call per mode: ``loc``, ``scale`` (Gaussian with learned
    scale: the Normal of ``normal_parse_params(out, 1e-2)``), ``out`` (Gaussian: the raw output) or ``hard`` /
    ``cat_probs`` (gauss_cat: one-hot / softmax blocks)."""
    outs = {mode: model.inpaint(xy, mask, n_samples, z_mean, mode=mode) for mode in set(inpaint_modes(model).values())}
    if model.pred_sig:
        loc, scale = lk.normal_parse_params(outs["raw"], lk.MIN_DECODER_SIGMA)
        return {"loc": loc.numpy(), "scale": scale.numpy()}
    return {form: outs[mode].numpy() for form, mode in inpaint_modes(model).items()}


def check_vaeac(kit: EvaluationKit, report: Report, role: str, model: VAEAC | None = None,
                noise: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
    """SCHEMA-EVALUATION.md 3.3, the 64 rows and every mask of one VAEAC, all at :func:`det_tol`.

    Compared: the posterior (loc, scale) and the decoder at its mean; per mask the prior (loc, scale), the decoder
    at its mean, the reconstruction per feature, the KL per latent dimension, ``elbo_terms``' rec, kl, prior
    regulariser and vlb, their mean (the original's ``eval``), ``inpaint`` at the prior mean and ``inpaint`` with 8
    prior samples drawn with the kit's noise (``noise`` maps it first: a wrong draw for the perturbation test).
    """
    io = kit.npz(f"vaeac/{kit.name}_{role}_io.npz")
    model = kit.vaeac(role) if model is None else model
    part = f"VAEAC {role}"
    report.same(part, "input_dim_vec", model.input_dim_vec, io["input_dim_vec"].tolist())
    xy = tf.constant(io["xy"])
    q_loc, q_scale = model.posterior(xy)
    record(report, part, "post/loc", q_loc, io["post/loc"])
    record(report, part, "post/scale", q_scale, io["post/scale"])
    out = model.decode(q_loc)
    record(report, part, "decoder at post/loc", out, io["decode_post_loc"])
    for m in io["meta"]["masks"]:
        mask = tf.constant(io[f"{m}/mask"])
        p_loc, p_scale = model.prior(xy, mask)
        record(report, part, f"{m}/prior/loc", p_loc, io[f"{m}/prior/loc"])
        record(report, part, f"{m}/prior/scale", p_scale, io[f"{m}/prior/scale"])
        record(report, part, f"{m}/decoder at prior/loc", model.decode(p_loc), io[f"{m}/decode_prior_loc"])
        record(report, part, f"{m}/rec_per_feature",
               lk.log_likelihood(model.likelihood, out, xy, model.input_dim_vec, model.pred_sig),
               io[f"{m}/rec_per_feature"])
        record(report, part, f"{m}/kl_per_dim", lk.kl_normal_normal(q_loc, q_scale, p_loc, p_scale),
               io[f"{m}/kl_per_dim"])
        terms = model.elbo_terms(xy, mask)
        for ours, key in (("rec", "rec"), ("kl", "kl"), ("reg", "prior_reg"), ("elbo", "vlb")):
            record(report, part, f"{m}/{key}", terms[ours], io[f"{m}/{key}"])
        record(report, part, f"{m}/eval_vlb_mean", np.mean(terms["elbo"].numpy(), dtype=np.float64),
               io[f"{m}/eval_vlb_mean"])
        _check_inpaint(report, part, model, io, m, xy, mask, p_loc, p_scale, noise)


def _check_inpaint(report, part, model, io, m, xy, mask, p_loc, p_scale, noise) -> None:
    """``inpaint`` of mask ``m`` at the prior mean and with the kit's (or ``noise``-mapped) prior draws."""
    zmean = inpaint_outputs(model, xy, mask, 1, z_mean=True)
    keys = sorted(k.rsplit("/", 1)[1] for k in io if k.startswith(f"{m}/inpaint_zmean/"))
    report.same(part, f"{m}/inpaint output forms", sorted(zmean), keys)
    for key in keys:
        record(report, part, f"{m}/inpaint_zmean/{key}", zmean.get(key, np.nan), io[f"{m}/inpaint_zmean/{key}"])
    eps = io[f"{m}/eps"] if noise is None else noise(io[f"{m}/eps"])
    record(report, part, f"{m}/z_sample", p_loc.numpy()[None] + p_scale.numpy()[None] * eps, io[f"{m}/z_sample"])
    with pinned_normal(eps) as calls:
        sample = inpaint_outputs(model, xy, mask, len(eps), z_mean=False)
    report.same(part, f"{m}/inpaint noise draws (one per inpaint call)", calls[0],
                len(set(inpaint_modes(model).values())))
    for key in keys:
        record(report, part, f"{m}/inpaint_sample/{key}", sample.get(key, np.nan), io[f"{m}/inpaint_sample/{key}"])


# ----------------------------------------------------------------------------------------------------- U-FIDO
class ReplayUniforms:
    """Stands in for the Gumbel-noise generator (``rng``) of ``CLUE.baselines``' traced U-FIDO step: call i of
    ``uniform`` returns ``draws[i]``, the kit's uniforms in the order the original used them (section 4.1)."""

    def __init__(self, draws: np.ndarray):
        self.draws = tf.Variable(draws, shape=[None, *draws.shape[1:]], trainable=False, name="replayed_uniforms")
        self.count = tf.Variable(0, dtype=tf.int64, trainable=False, name="replayed_count")

    def uniform(self, shape) -> tf.Tensor:
        if [int(s) for s in shape] != self.draws.shape[1:].as_list():
            raise ValueError(f"uniforms of shape {list(shape)} requested, the kit's are {self.draws.shape[1:]}")
        return tf.gather(self.draws, self.count.assign_add(1) - 1)  # out of range (too many draws) raises

    def reset(self, state=None) -> None:  # u_fido reseeds its generator at every call: start again at draw 0
        self.seek(0)

    def seek(self, index: int) -> None:
        self.count.assign(index)


def pinned_ufido_step(bnn, vaeac, x: np.ndarray, config: UFIDOConfig, draws: np.ndarray):
    """``u_fido``'s traced step for this problem, with its Gumbel noise replaced by ``draws`` (the replacement is
    installed before the step is first traced, and reloaded with the new draws afterwards)."""
    baselines._STEPS.clear()  # a fresh traced step: one cached by an earlier caller may be keyed by a recycled id
    step = baselines._mask_step(bnn, vaeac, *x.shape, config)
    if not isinstance(step.rng, ReplayUniforms):
        if step.loss_and_grad.experimental_get_tracing_count():
            raise RuntimeError("the U-FIDO step was traced with its own noise generator before it could be pinned")
        step.rng = ReplayUniforms(draws)
    step.rng.draws.assign(draws)
    return step


def ufido_draws(ref: Mapping[str, Any], p: str) -> tuple[np.ndarray, np.ndarray]:
    """The uniforms in the order of use (``U[t, :n_t]`` for t = 0..T-1) and each iteration's first draw."""
    n = ref[p + "n_mask_samples"]
    return np.concatenate([ref[p + "U"][t, :k] for t, k in enumerate(n)]), np.concatenate([[0], np.cumsum(n)[:-1]])


def ufido_configs(ref: Mapping[str, Any]) -> list[tuple[str, float]]:
    """The (target, L1 weight) configurations of a ``ufido`` file."""
    return [(t, float(w)) for t in ref["meta"]["targets"] for w in ref["meta"]["l1ws"]]


def check_ufido(kit: EvaluationKit, report: Report, variant: str, configs: list[tuple[str, float]] | None = None,
                noise: Callable[[np.ndarray], np.ndarray] | None = None, iterations: tuple[int, ...] | None = None,
                full_run: bool = True) -> None:
    """SCHEMA-EVALUATION.md 4, the 16 rows, every (target, L1 weight) configuration (or ``configs``), the kit's
    uniforms (``noise`` maps them first: a wrong draw for the perturbation test). COMPAS runs with
    ``mnist_norm_quirk`` (trap 27).

    Compared: ``UFIDOConfig``'s schedule (learning rate per iteration, mask samples per iteration) with the
    original's; each of the T iterations (or ``iterations``) teacher-forced from the original's P_t: loss, aleatoric
    and epistemic means at :func:`det_tol`, dJ/dP within ``ufido_grad_atol`` on at least ``ufido_grad_fraction`` of
    the entries; with ``full_run``, the whole run of ``u_fido``: every draw used, at least ``ufido_row_fraction`` of
    the rows end where the original's do (same final mask, explanation at :func:`det_tol`), and the final
    keep-probabilities within ``ufido_p_atol`` on at least ``ufido_p_fraction`` of the entries.
    """
    ref = kit.npz(f"ufido/{kit.name}_{variant}.npz")
    meta, bnn, vaeac = ref["meta"], kit.bnn(variant), kit.vaeac("infill")
    part = f"U-FIDO {variant}"
    x = ref["x"]
    report.equal(part, "x = x_test[rows]", kit.base.io["x_test"][ref["rows"]], x)
    n_entries = n_grad_off = n_rows = n_elsewhere = n_probs = n_probs_off = 0
    for target, l1w in configs or ufido_configs(ref):
        p = f"{target}/l1w{l1w:g}/"
        a, e = TARGETS[target]
        config = UFIDOConfig(l1_weight=l1w, aleatoric=a, epistemic=e, n_iterations=int(meta["T"]),
                             mnist_norm_quirk=bool(meta["mnist_norm_in_fit_cat"]) and kit.likelihood == "categorical")
        _check_ufido_schedule(report, part, p, config, ref)
        draws, first = ufido_draws(ref, p)
        draws = draws if noise is None else noise(draws)
        step = pinned_ufido_step(bnn, vaeac, x, config, draws)
        step.x.assign(x)
        used, n_samples = [], ref[p + "n_mask_samples"]
        at = list(range(len(n_samples)) if iterations is None else iterations)
        for t, n_t in zip(at, n_samples[at]):
            step.keep_p.assign(ref[p + "P"][t])
            step.rng.seek(int(first[t]))
            weights = [tf.constant(w, tf.float32) for w in (l1w / x.shape[1], a, e)]
            loss, ale, epi, grad = step.loss_and_grad(tf.constant(int(n_t)), *weights)
            used.append(int(step.rng.count.numpy()) - int(first[t]))
            for ours, key in ((loss, "loss"), (ale, "aleatoric"), (epi, "epistemic")):
                record(report, part, f"{p} iteration {t} {key} (teacher-forced)", float(ours), ref[p + key][t])
            n_grad_off += int(np.sum(np.abs(grad.numpy() - ref[p + "grad_P"][t]) > TOL_EVAL["ufido_grad_atol"]))
            n_entries += grad.shape.num_elements()
        report.equal(part, f"{p} uniforms used per iteration (teacher-forced)", used, n_samples[at])
        if not full_run:
            continue
        result = u_fido(bnn, vaeac, x, config)
        report.same(part, f"{p} uniforms used by u_fido", int(step.rng.count.numpy()), len(draws))
        elsewhere = ((result.mask != ref[p + "mask"]).any(1)
                     | (np.abs(result.x - ref[p + "explanation"]).max(1) > det_tol(ref[p + "explanation"])))
        n_rows += len(x)
        n_elsewhere += int(elsewhere.sum())
        n_probs += result.mask_probs.size
        n_probs_off += int(np.sum(np.abs(result.mask_probs - ref[p + "mask_probs_final"]) > TOL_EVAL["ufido_p_atol"]))
    report.check(part, f"dJ/dP entries off by > {TOL_EVAL['ufido_grad_atol']:g} (teacher-forced), of {n_entries}",
                 n_grad_off, (1.0 - TOL_EVAL["ufido_grad_fraction"]) * n_entries)
    if not full_run:
        return
    report.check(part, f"rows of the full runs that end elsewhere, of {n_rows}", n_elsewhere,
                 math.floor((1.0 - TOL_EVAL["ufido_row_fraction"]) * n_rows))
    report.check(part, f"final keep-probabilities off by > {TOL_EVAL['ufido_p_atol']:g}, of {n_probs}", n_probs_off,
                 (1.0 - TOL_EVAL["ufido_p_fraction"]) * n_probs)


def _check_ufido_schedule(report: Report, part: str, p: str, config: UFIDOConfig, ref: Mapping[str, Any]) -> None:
    """``UFIDOConfig``'s defaults give the original's schedule: StepLR learning rate and mask samples per iteration."""
    t = np.arange(config.n_iterations)
    lr = config.lr * config.gamma ** (t // config.decay_period)
    record(report, part, f"{p} learning rate per iteration (StepLR)", lr, ref[p + "lr"], 1e-12)
    samples = np.where(t < config.late_from, config.mask_samples, config.late_mask_samples)
    report.equal(part, f"{p} mask samples per iteration", samples, ref[p + "n_mask_samples"])
