"""Parity of the evaluation parts with the ORIGINAL PyTorch code, on the evaluation parity kit.

``../shared/reference/parity/evaluation`` (format: its ``SCHEMA-EVALUATION.md``) holds what the original code
computed on the Wine and COMPAS kits for localized sensitivity, target-weighted CLUE, the VAEAC and U-FIDO. The
loaders and checks live in ``parity_evaluation_kit`` (beside this file; tolerances in its ``TOL_EVAL``): each test
runs one part's checks on one dataset and asserts that every check passes, and for each part a perturbed model (or
noise draw) makes the same checks report failures, so they are shown able to fail.
"""

from __future__ import annotations

import numpy as np
import pytest
from parity_evaluation_kit import (
    DATASETS,
    ROLES,
    UFIDO_TEACHER_FORCED,
    UFIDO_TESTED,
    VARIANTS,
    check_clue_full_runs,
    check_clue_teacher_forced,
    check_sensitivity,
    check_ufido,
    check_vaeac,
    clue_runs,
    kit_files,
    load_evaluation_kit,
    nudged_bnn,
    nudged_decoder_kit,
    nudged_vaeac,
    ufido_configs,
)

from verification.parity import Report, run_checks


@pytest.fixture(scope="module")
def evaluation_parity_dir(parity_dir):
    """``../shared/reference/parity`` with the Wine and COMPAS kits and the evaluation kit (skip when incomplete)."""
    missing = [str(f.relative_to(parity_dir)) for f in kit_files(parity_dir) if not f.exists()]
    if missing:
        pytest.skip(f"evaluation parity kit not available: expected {parity_dir / 'evaluation'} (format "
                    f"SCHEMA-EVALUATION.md) and the wine and compas kits beside it; missing {', '.join(missing[:4])}"
                    + (f" and {len(missing) - 4} more" if len(missing) > 4 else ""))
    return parity_dir


@pytest.fixture(scope="module", params=DATASETS)
def kit(request, evaluation_parity_dir):
    return load_evaluation_kit(evaluation_parity_dir, request.param)




def failing(check, kit, *args, **kwargs) -> list[str]:
    """Runs one group of checks and returns the names of those that fail."""
    report = Report(kit.name)
    check(kit, report, *args, **kwargs)
    assert report.checks, f"{check.__name__} recorded no check"
    return [c["check"] for c in report.failures()]


# ------------------------------------------------------------------------------------------ localized sensitivity
@pytest.mark.parametrize("variant", VARIANTS)
def test_localized_sensitivity_matches_the_original(kit, variant):
    """Section 2.2, all 32 rows, both targets, steps 1e-3 .. 10: the gradient and objective, the stepped points and
    their uncertainties, within 1e-5 of each array's largest |value| (x' within max(1, step) times that)."""
    run_checks(check_sensitivity, kit, variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_sensitivity_check_fails_on_a_nudged_bnn(kit, variant):
    """The BNN's output-layer kernels scaled by 1 + 1e-3 break the gradient checks of both targets."""
    failures = failing(check_sensitivity, kit, variant, bnn=nudged_bnn(kit, variant))
    assert {"aleatoric", "epistemic"} <= {f.split(":")[0] for f in failures if "gradient" in f}, failures


# ------------------------------------------------------------------------------------------ target-weighted CLUE
@pytest.mark.parametrize("variant", VARIANTS)
def test_target_weighted_clue_matches_the_original(kit, variant):
    """Section 2.3, all 4 runs (aleatoric / epistemic target, lambda 0.5 / 2), 32 rows each: every 5th of the 50
    steps (subset, for time) teacher-forced on the original's z (terms at 1e-5 relative, dJ/dz too except at kinks),
    and each run optimised end to end over all 50 steps, where the rows that end elsewhere (stop step, x_final or
    cost off by > 1e-3) may not exceed what the kit's own z_init + 1e-6 runs allow."""
    run_checks(check_clue_teacher_forced, kit, variant)
    run_checks(check_clue_full_runs, kit, variant)


def test_clue_checks_fail_on_a_nudged_decoder_and_the_other_gradient(kit):
    """On the first run of the orig file: a decoder bias moved by 1e-3 breaks the teacher-forced x; the exact
    gradient in place of the torch-1.3 one breaks dJ/dz and sends the rows of the full run elsewhere."""
    first = clue_runs(kit.npz(f"sensitivity_clue/{kit.name}_orig.npz"))[:1]
    failures = failing(check_clue_teacher_forced, nudged_decoder_kit(kit), "orig", runs=first)
    assert any("x per step" in f for f in failures), failures
    failures = failing(check_clue_teacher_forced, kit, "orig", bnn=kit.bnn("exact"), runs=first)
    assert any("away from a kink" in f for f in failures), failures
    failures = failing(check_clue_full_runs, kit, "orig", bnn=kit.bnn("exact"), runs=first)
    assert any("end elsewhere" in f for f in failures), failures


# ---------------------------------------------------------------------------------------------------------- VAEAC
@pytest.mark.parametrize("role", ROLES)
def test_vaeac_matches_the_original(kit, role):
    """Section 3, the original's trained weights in our VAEAC, 64 rows, every mask: posterior, prior, decoder, ELBO
    terms, in-filling at the prior mean and with the kit's 8 noise draws, within 1e-5 of each array's largest
    |value|."""
    run_checks(check_vaeac, kit, role)


def test_vaeac_check_fails_on_a_nudged_weight_and_a_wrong_noise_draw(kit):
    """The prior network's output kernel scaled by 1 + 1e-3 breaks the prior checks; the noise of the next draw
    (rolled by one) breaks exactly the checks that use the noise."""
    failures = failing(check_vaeac, kit, "infill", model=nudged_vaeac(kit, "infill"))
    assert any("prior/loc" in f for f in failures) and any("kl_per_dim" in f for f in failures), failures
    failures = failing(check_vaeac, kit, "infill", noise=lambda eps: np.roll(eps, 1, axis=0))
    masks = kit.npz(f"vaeac/{kit.name}_infill_io.npz")["meta"]["masks"]
    assert {f.split(",")[0] for f in failures} >= {f"{m}/z_sample" for m in masks}, failures
    assert all("z_sample" in f or "inpaint_sample" in f for f in failures), failures


# --------------------------------------------------------------------------------------------------------- U-FIDO
def test_ufido_matches_the_original(kit):
    """Section 4 with the kit's Gumbel uniforms, 16 rows, all 4 (target, L1 weight) configurations: iterations 0, 3,
    6, 9 and 11 of the 12 teacher-forced (losses at 1e-5 relative, dJ/dP within 1e-4 on >= 99.5% of entries) and
    all 12 run end to end by ``u_fido`` (>= 99% of the rows with the same mask and explanation, final
    keep-probabilities within 1e-3 on >= 99% of the entries). Subset, for time: those iterations, and one file per
    dataset, Wine ``exact`` and COMPAS ``orig`` (with ``mnist_norm_quirk``), so each dataset and each gradient
    variant is run once."""
    run_checks(check_ufido, kit, UFIDO_TESTED[kit.name], iterations=UFIDO_TEACHER_FORCED)


def test_ufido_check_fails_on_a_wrong_noise_draw(kit):
    """Each Gumbel sample given the uniforms of the next one breaks the teacher-forced losses (first configuration,
    first two iterations)."""
    variant = UFIDO_TESTED[kit.name]
    first = ufido_configs(kit.npz(f"ufido/{kit.name}_{variant}.npz"))[:1]
    failures = failing(check_ufido, kit, variant, configs=first, noise=lambda u: np.roll(u, 1, axis=0),
                       iterations=(0, 1), full_run=False)
    assert any("loss (teacher-forced)" in f for f in failures), failures
