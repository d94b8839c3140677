"""Parity with the PyTorch original on its four trained kits: LSAT, COMPAS, Wine and Credit.

``../shared/reference/parity/{lsat,compas,wine,credit}`` hold the original's trained BNN posteriors and VAEs with the
outputs its code computed from them (format: ``SCHEMA.md``; what differs for Wine and Credit:
``SCHEMA-WINE-CREDIT.md``). The comparisons and their one set of tolerance rules live in ``verification.parity``
(``TOL``)
and ``verification.parity_checks``, which ``experiments/compare_pytorch.ipynb`` tabulates too; every test here runs
one group
of them once per kit and asserts that each check passes.

Covered: the preprocessed data; the BNN (architecture, per-sample outputs, the uncertainty split with 53 and 54
samples, the predictive means and the test metrics, export round trip); the VAE (encoder, decoder, regenerate, ELBO
per feature and per latent dimension, their row sums, the mean test ELBO); CLUE (selection of the explained rows,
z_init, the uncertainty of the VAE reconstruction; every 5th step of each reference run teacher-forced on the
reference's own z trajectory: x, uncertainty split, distance, cost and dJ/dz; and the whole optimisation of each of
the four runs, both gradient variants at lr 0.1 and 0.01: early-stop steps, final x, per-step uncertainties, the
mean uncertainty after CLUE).
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import tensorflow as tf

from BNN.posterior import Posterior
from CLUE.compat import OriginalGradientMLP
from common.errors import UserError
from VAE.model import load_parity_npz
from verification import parity_checks as checks
from verification.parity import KITS, VARIANTS, Report, load_kit, run_checks, stated_figures


@pytest.fixture(scope="module", params=list(KITS))
def kit(request, parity_dir):
    if not (parity_dir / request.param / "io.npz").exists():
        pytest.skip(f"parity kit {parity_dir / request.param} not available")
    return load_kit(parity_dir, request.param)




# ------------------------------------------------------------------------------------------------------------ data
def test_preprocessed_data_is_bitwise_the_originals(kit, data_dir):
    run_checks(checks.check_data, kit, data_dir)


# ------------------------------------------------------------------------------------------------------------- BNN
def test_bnn_architecture_and_per_sample_outputs(kit):
    run_checks(checks.check_bnn_outputs, kit)


@pytest.mark.parametrize("suffix", ["Sm1", "S"])
def test_uncertainty_split_and_predictive_mean(kit, suffix):
    run_checks(checks.check_uncertainty, kit, suffix)


def test_bnn_test_metrics(kit, parity_dir):
    """Against the kit's own predictive, and for LSAT and COMPAS against pytorch-original.json's stated figures (the
    kits store per-sample outputs for only the first 1000 LSAT rows, so its log-likelihood is checked there)."""
    reference_dir = parity_dir.parent
    stated = reference_dir if (reference_dir / "pytorch-original.json").exists() else None
    report = run_checks(checks.check_bnn_metrics, kit, stated)
    if kit.name in ("lsat", "compas") and (reference_dir / "pytorch-original.json").exists():
        n_stated = sum(1 for k in checks.STATED_METRICS.values() if k in stated_figures(reference_dir, kit.name))
        assert n_stated == (3 if kit.name == "lsat" else 2)
        assert sum("stated figure" in c["check"] for c in report.checks) == n_stated


def test_bnn_export_round_trip_preserves_predictions(kit, tmp_path):
    kit.full.save(tmp_path / "posterior")
    loaded = Posterior.load(tmp_path / "posterior")
    assert loaded.arch == kit.full.arch and loaded.n_samples == 54
    x = kit.io["x_test"][:50]
    np.testing.assert_array_equal(loaded.forward(x).numpy(), kit.full.forward(x).numpy())


# ------------------------------------------------------------------------------------------------------------- VAE
def test_vae_kind_encoder_decoder_and_regenerate(kit):
    run_checks(checks.check_vae, kit)


def test_vae_elbo_terms_and_row_sums(kit):
    run_checks(checks.check_vae_elbo, kit)


def test_parity_loader_refuses_an_unknown_vae_kind(tmp_path):
    meta = {"input_dim_vec": [1, 1], "latent_dim": 2, "width": 8, "depth": 2, "kind": "bernoulli"}
    np.savez(tmp_path / "vae.npz", meta=np.array(json.dumps(meta)))
    with pytest.raises(UserError, match="bernoulli"):
        load_parity_npz(tmp_path / "vae.npz")


# ------------------------------------------------------------------------------------------------------------ CLUE
def test_clue_selection_start_and_reconstruction_uncertainty(kit):
    run_checks(checks.check_clue_selection, kit)


@pytest.mark.parametrize("prefix", list(VARIANTS))
def test_clue_steps_teacher_forced(kit, prefix):
    run_checks(checks.check_clue_teacher_forced, kit, prefix)


@pytest.mark.parametrize("prefix", list(VARIANTS))
def test_clue_full_run_matches_point_by_point(kit, prefix):
    report = run_checks(checks.check_clue_full_run, kit, prefix)
    assert {f"{prefix}/mean_uncertainty_after", f"{prefix}/mean_l1"} <= set(report.figures)


def test_checks_fail_on_a_perturbed_model(kit):
    """The checks can fail: a VAE decoder bias moved by 1e-3 breaks the decoder and ELBO checks, and the torch-1.3
    gradient put in place of the exact one breaks the teacher-forced gradients."""
    vae = load_parity_npz(kit.folder / "vae.npz")
    bias = vae.decoder.weights[-1]
    bias.assign(bias + 1e-3)
    report = Report(kit.name)
    checks.check_vae(replace(kit, vae=vae), report)
    assert any("decoder output" in c["check"] for c in report.failures())
    swapped = replace(kit, post=kit.orig, orig=kit.post)  # make_clue takes "exact" from post, "orig" from orig
    report = Report(kit.name)
    checks.check_clue_teacher_forced(swapped, report, "clue_exact")
    assert any("dJ/dz" in c["check"] for c in report.failures())


def test_original_gradient_from_a_posterior_is_the_one_from_the_kit(kit):
    """The evaluation's torch13 mode builds the quirk from a loaded Posterior: the same forward and input gradient."""
    ours = OriginalGradientMLP.from_posterior(kit.full)
    x = tf.constant(kit.io["clue/x0"][:16])
    results = []
    for model in (ours, kit.orig):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = model.predict_samples(x)
            total = tf.add_n([tf.reduce_sum(o) for o in tf.nest.flatten(out)])
        results.append([o.numpy() for o in tf.nest.flatten(out)] + [tape.gradient(total, x).numpy()])
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)
    normalised = Posterior.from_npz(kit.folder / "bnn_samples.npz", kit.likelihood, input_norm=(0.0, 2.0))
    with pytest.raises(ValueError, match="input normalization"):
        OriginalGradientMLP.from_posterior(normalised)
