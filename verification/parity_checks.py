"""The parity checks: each recomputes one group of a kit's recorded outputs with our code (see ``verification.parity``).

Every function takes a :class:`verification.parity.Kit` and a :class:`verification.parity.Report`, appends one check
per comparison and, where it recomputes one of the original's aggregate figures (the keys of
:func:`verification.parity.kit_figures`), the figure with the tolerance it inherits. :func:`check_kit` runs them all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from BNN.posterior import evaluate
from verification.parity import (
    TEACHER_FORCED_STEPS,
    TOL,
    UNCERTAINTIES,
    VARIANTS,
    Kit,
    Report,
    divergent_row_allowance,
    forward_tol,
    gaussian_loglik,
    make_clue,
    rare_allowance,
    stated_figures,
    term_tol,
)

STATED_METRICS = {"rmse": "test_rmse", "loglik": "test_loglik", "loglik_mixture": "test_loglik_mixture",
                  "accuracy": "test_accuracy", "nll": "test_nll"}  # evaluate()'s key -> stated_figures key


def check_data(kit: Kit, report: Report, data_dir=None) -> None:
    """Our preprocessing of the upstream files gives the kit's test set bit for bit (SCHEMA 1)."""
    import data

    d, io = data.load(kit.name, data_dir=data_dir), kit.io
    report.equal("data", "x_test", d.x_test, io["x_test"])
    report.close("data", "x_means", d.x_mean, io["x_means"], rtol=1e-12, atol=1e-12)
    report.close("data", "x_stds", d.x_std, io["x_stds"], rtol=1e-12)
    y = d.y_test.reshape(io["y_test"].shape) if d.y_test.size == io["y_test"].size else d.y_test
    report.equal("data", "y_test", y, io["y_test"])
    if "y_means" in io:
        report.close("data", "y_means", np.ravel(d.y_mean), io["y_means"], rtol=1e-12)
        report.close("data", "y_stds", np.ravel(d.y_std), io["y_stds"], rtol=1e-12)


def check_bnn_outputs(kit: Kit, report: Report) -> None:
    """Architecture, sample count and the per-sample outputs of all 54 samples (SCHEMA 2, 4.2)."""
    io, post = kit.io, kit.full
    report.same("BNN", "architecture (kind, input, width, depth, output)", (
        post.arch.kind, post.arch.input_dim, post.arch.width, post.arch.depth, post.arch.output_dim),
        ("mlp", io["x_test"].shape[1], 200, 2, 2))
    report.same("BNN", "weight samples", post.n_samples, 54)
    n = int(io["bnn/n_rows_per_sample_outputs"])
    x = io["x_test"][:n]
    if kit.likelihood == "gaussian":
        report.forward("BNN", "per-sample raw outputs", post.forward(x).numpy(), io["bnn/out_raw"])
        mu, sigma = post.predict_samples(x)
        report.same("BNN", "per-sample mu, sigma shapes", (tuple(mu.shape), tuple(sigma.shape)), ((54, n), (54, n)))
        report.forward("BNN", "per-sample mu", mu.numpy(), io["bnn/mu"])
        report.forward("BNN", "per-sample sigma", sigma.numpy(), io["bnn/sigma"])
    else:
        report.forward("BNN", "per-sample logits", post.forward(x).numpy(), io["bnn/logits"])
        probs = post.predict_samples(x).numpy()
        report.same("BNN", "per-sample probabilities shape", probs.shape, (54, n, 2))
        report.forward("BNN", "per-sample probabilities", probs, io["bnn/probs"])


def check_uncertainty(kit: Kit, report: Report, suffix: str) -> None:
    """The uncertainty split with the original's 53 samples (``Sm1``) or all 54 (``S``), and the predictive mean."""
    io = kit.io
    post = kit.post if suffix == "Sm1" else kit.full
    report.same("BNN", f"weight samples, {suffix}", post.n_samples, 53 if suffix == "Sm1" else 54)
    for kind, ours in zip(UNCERTAINTIES, post.uncertainty(io["x_test"]), strict=True):
        ref = io[f"bnn/unc_{kind}_{suffix}"]
        report.forward("BNN", f"{kind} uncertainty, {suffix}", ours.numpy(), ref)
        if suffix == "Sm1" and kind == "total":
            report.figure("mean_uncertainty_all_test", ours.numpy().mean(), forward_tol(ref))
    if suffix == "Sm1":
        out = post.predict_samples(io["x_test"])
        if kit.likelihood == "gaussian":
            report.forward("BNN", "predictive mean", out[0].numpy().mean(0), io["bnn/mean_mu_Sm1"])
        else:
            report.forward("BNN", "predictive probabilities", out.numpy().mean(0), io["bnn/mean_probs_Sm1"])


def check_bnn_metrics(kit: Kit, report: Report, reference_dir=None) -> None:
    """Our ``evaluate`` with the original's 53 samples against the metrics of the kit's own predictive (4.2), and
    against the original's stated figures (``pytorch-original.json``, where ``reference_dir`` has it).

    Each figure is held to the forward rule propagated to first order: RMSE moves by at most the predictive mean's
    tolerance (times y_std); the NLL by mean(tol / p(y)); the accuracy by the rows whose p(class 1) is within tol of
    1/2; the Gaussian log-likelihood as :func:`verification.parity.gaussian_loglik` says.
    """
    io = kit.io
    x, y = io["x_test"], io["y_test"]
    if kit.likelihood == "gaussian":
        y_std = float(io["y_stds"][0])
        ours = evaluate(kit.post, x, y, y_std=y_std)
        mean_mu = io["bnn/mean_mu_Sm1"].astype(np.float64)
        rmse = float(np.sqrt(np.mean((mean_mu - y[:, 0]) ** 2))) * y_std
        report.check("BNN", "test RMSE, |diff|", abs(ours["rmse"] - rmse), y_std * forward_tol(mean_mu))
        report.figure("test_rmse", ours["rmse"], y_std * forward_tol(mean_mu))
        if (loglik := gaussian_loglik(io)) is not None:
            report.check("BNN", "test log-likelihood, |diff|", abs(ours["loglik"] - loglik[0]), loglik[1])
            report.figure("test_loglik", ours["loglik"], loglik[1])
    else:
        ours = evaluate(kit.post, x, y)
        p_bar = io["bnn/mean_probs_Sm1"].astype(np.float64)
        tol = forward_tol(p_bar)
        accuracy = float(np.mean(p_bar.argmax(1) == y))
        undecided = int(np.sum(np.abs(p_bar[:, 1] - 0.5) <= tol))
        report.check("BNN", "test accuracy, |diff|", abs(ours["accuracy"] - accuracy), undecided / len(y) + 1e-7)
        report.figure("test_accuracy", ours["accuracy"], undecided / len(y) + 1e-7)
        p_y = p_bar[np.arange(len(y)), y]
        nll_tol = float(np.mean(tol / p_y))
        report.check("BNN", "test NLL, |diff|", abs(ours["nll"] - float(np.mean(-np.log(p_y)))), nll_tol)
        report.figure("test_nll", ours["nll"], nll_tol)
    stated = stated_figures(reference_dir, kit.name) if reference_dir is not None else {}
    for key, figure in STATED_METRICS.items():
        if key in ours and figure in stated:
            report.check("BNN", f"test {key} against the original's stated figure, |diff|",
                         abs(ours[key] - stated[figure]), TOL["stated_atol"])
            report.figure(figure, ours[key], max(report.figures.get(figure, (0, 0))[1], TOL["stated_atol"]))


def check_vae(kit: Kit, report: Report) -> None:
    """SCHEMA.md 3 and 4.3 (Wine: SCHEMA-WINE-CREDIT.md 3, a Gaussian VAE): every VAE output on the whole test set."""
    io, vae = kit.io, kit.vae
    report.same("VAE", "kind", vae.likelihood, kit.vae_meta.get("kind", "gauss_cat"))
    report.same("VAE", "input_dim_vec and latent_dim", (vae.input_dim_vec, vae.latent_dim),
                (kit.vae_meta["input_dim_vec"], kit.vae_meta["latent_dim"]))
    x = io["x_test"]
    report.forward("VAE", "encoder output", vae.encoder(x).numpy(), io["vae/enc_params"])
    loc, scale = vae.encode(x)
    report.forward("VAE", "encoder loc", loc.numpy(), io["vae/enc_loc"])
    report.forward("VAE", "encoder scale", scale.numpy(), io["vae/enc_scale"])
    report.forward("VAE", "decoder output at loc", vae.decode(io["vae/enc_loc"]).numpy(), io["vae/dec_out"])
    hard = vae.regenerate(io["vae/enc_loc"], straight_through=False).numpy()
    straight_through = vae.regenerate(io["vae/enc_loc"]).numpy()
    report.forward("VAE", "regenerate (hard)", hard, io["vae/regen"])
    report.forward("VAE", "regenerate (straight-through forward value)", straight_through, io["vae/regen_st"])
    cat = kit.categorical_columns
    report.equal("VAE", "regenerate (hard), categorical columns (no argmax flips)", hard[:, cat],
                 io["vae/regen"][:, cat])
    report.equal("VAE", "regenerate (straight-through), categorical columns", straight_through[:, cat],
                 io["vae/regen_st"][:, cat])


def check_vae_elbo(kit: Kit, report: Report) -> None:
    """ELBO terms per feature and per latent dimension, their row sums, and the mean test ELBO."""
    io = kit.io
    terms = {k: t.numpy().astype(np.float64) for k, t in kit.vae.elbo_terms(io["x_test"]).items()}
    rec_tol, kl_tol = term_tol(io["vae/rec_ll_per_feature"]), term_tol(io["vae/kl_per_dim"])
    checks = [("rec_per_term", "rec_ll_per_feature", rec_tol), ("kl_per_dim", "kl_per_dim", kl_tol),
              ("rec", "rec_ll", rec_tol.sum(1)), ("kl", "kl", kl_tol.sum(1)),
              ("elbo", "elbo", rec_tol.sum(1) + kl_tol.sum(1))]
    for ours, key, tol in checks:
        ref = io[f"vae/{key}"].astype(np.float64)
        if terms[ours].shape != ref.shape:
            report.same("VAE", f"{key} shape", terms[ours].shape, ref.shape)
            continue
        report.check("VAE", f"{key}, max (|diff| - its tolerance)", float(np.max(np.abs(terms[ours] - ref) - tol)), 0.0)
    elbo_tol = float(np.mean(rec_tol.sum(1) + kl_tol.sum(1)))
    report.check("VAE", "mean test ELBO, |diff|", abs(terms["elbo"].mean() - float(io["vae/elbo_mean_eval"])), elbo_tol)
    report.figure("test_elbo", terms["elbo"].mean(), elbo_tol)
    report.figure("test_rec_loglik", terms["rec"].mean(), float(np.mean(rec_tol.sum(1))))
    report.figure("test_kl", terms["kl"].mean(), float(np.mean(kl_tol.sum(1))))


def check_clue_selection(kit: Kit, report: Report) -> None:
    """Our uncertainties select the same 10% most uncertain rows; the same z_init; the same u of reconstructions."""
    io, vae = kit.io, kit.vae
    clue = make_clue(kit, "exact", 0.1)
    u = clue.uncertainty(io["x_test"])
    report.forward("CLUE", "total uncertainty", u, io["bnn/unc_total_Sm1"])
    n = int(np.ceil(0.1 * len(u)))
    # The same set (duplicate rows tie exactly, and the original's unstable argsort orders ties arbitrarily).
    ours_set, ref_set = set(np.argsort(-u)[:n].tolist()), set(io["clue/idx"].tolist())
    report.check("CLUE", "rows of the 10% most uncertain set that differ", len(ours_set ^ ref_set), 0, "eq")
    report.equal("CLUE", "x0 = x_test[idx]", io["x_test"][io["clue/idx"]], io["clue/x0"])
    u0 = u[io["clue/idx"]]
    report.forward("CLUE", "uncertainty before CLUE", u0, io["clue/u0_total_Sm1"])
    report.figure("mean_uncertainty_before", u0.mean(), forward_tol(io["clue/u0_total_Sm1"]))
    report.forward("CLUE", "z_init", clue.encode(io["clue/x0"]), io["clue/z_init"])
    recon = vae.regenerate(io["vae/enc_loc"], straight_through=False).numpy()
    report.forward("CLUE", "uncertainty of reconstructions", clue.uncertainty(recon),
                   io["vae/bnn_unc_total_Sm1_of_regen"])
    for prefix in VARIANTS:  # step 0 decodes z_init: the same for every variant
        ours = clue.uncertainty(io[f"{prefix}/x_traj_raw"][0])
        report.forward("CLUE", f"{prefix}: uncertainty of the VAE reconstruction of x0", ours,
                       io[f"{prefix}/u_rec0_total_Sm1"])
        if prefix == "clue_exact":
            report.figure("mean_uncertainty_vae_reconstruction", ours.mean(),
                          forward_tol(io[f"{prefix}/u_rec0_total_Sm1"]))


def check_clue_teacher_forced(kit: Kit, report: Report, prefix: str) -> None:
    """Every 5th step of the reference run, from the reference's own z: x, the objective's terms and dJ/dz."""
    io = kit.io
    variant, lr = VARIANTS[prefix]
    clue = make_clue(kit, variant, lr)
    x0 = tf.constant(io["clue/x0"])

    @tf.function(reduce_retracing=True)
    def step(z):
        with tf.GradientTape() as tape:
            tape.watch(z)
            terms = clue.objective(z, x0, z)
            total = tf.reduce_sum(terms["cost"])  # each row's gradient is that of its own cost
        return terms, tape.gradient(total, z)

    grad_rows_off = 0
    for k in TEACHER_FORCED_STEPS:
        terms, grad = step(tf.constant(io[f"{prefix}/z_traj"][k]))
        report.forward("CLUE", f"{prefix}: step {k} x", terms["x"].numpy(), io[f"{prefix}/x_traj_raw"][k])
        for ours, key in (("uncertainty", "uncertainty_raw"), ("aleatoric", "aleatoric_raw"),
                          ("epistemic", "epistemic_raw"), ("distance_term", "dist_raw"), ("cost", "cost_raw")):
            report.forward("CLUE", f"{prefix}: step {k} {key}", terms[ours].numpy(), io[f"{prefix}/{key}"][k])
        row_err = np.abs(grad.numpy() - io[f"{prefix}/grad_z_raw"][k]).max(axis=1)
        grad_rows_off += int(np.sum(row_err >= TOL["grad_atol"]))
        if k == 0:  # the two gradient variants really differ, so this check tells them apart
            other = "orig" if variant == "exact" else "exact"
            report.check("CLUE", f"{prefix}: step 0 dJ/dz, max |diff| from the {other} variant's",
                         np.abs(grad.numpy() - io[f"clue_{other}/grad_z_raw"][0]).max(), 1e-2, "min")
    verify = kit.verify[prefix]
    n_pairs = len(TEACHER_FORCED_STEPS) * len(io["clue/idx"])
    allowed = rare_allowance(verify["grad_z_n_step_rows_err_gt_1e-5"], verify["grad_z_n_step_rows"], n_pairs,
                             TOL["kink_implementations"])
    report.check("CLUE", f"{prefix}: (step, row) dJ/dz off by >= 1e-4, of {n_pairs}", grad_rows_off, allowed)
    last = kit.vae.regenerate(io[f"{prefix}/z_traj"][50], straight_through=False).numpy()
    report.forward("CLUE", f"{prefix}: hard decode after the last step", last, io[f"{prefix}/x_traj_raw"][50])


def check_clue_full_run(kit: Kit, report: Report, prefix: str) -> None:
    """The whole optimisation: the rows that end where the original's do, their freeze index, the mean u after."""
    io = kit.io
    variant, lr = VARIANTS[prefix]
    x0 = io["clue/x0"]
    result = make_clue(kit, variant, lr).explain(x0, z_init=io["clue/z_init"])
    ref_stop, ref_x = io[f"{prefix}/stop_step"], io[f"{prefix}/x_final"]
    row_dx = np.abs(result.x - ref_x).max(axis=1)
    row_du = np.abs(result.uncertainty - io[f"{prefix}/uncertainty"]).max(axis=0)
    same = (result.stop_step == ref_stop) & (row_dx < TOL["row_atol"]) & (row_du < TOL["row_atol"])
    allowed = divergent_row_allowance(kit, len(same))
    rows = np.flatnonzero(~same)
    report.check("CLUE", f"{prefix}: rows that end elsewhere, of {len(same)}", len(rows), allowed, detail=(
        f"rows {rows.tolist()}, stop steps {result.stop_step[rows].tolist()} vs {ref_stop[rows].tolist()}, "
        f"max |dx| {row_dx[rows].round(4).tolist()}") if len(rows) else "")
    stopped = same & (ref_stop > 0)
    report.equal("CLUE", f"{prefix}: freeze index of the rows that stopped", result.freeze_index[stopped],
                 io[f"{prefix}/freeze_index"][stopped])
    after = float(result.uncertainty_after.mean())
    report.check("CLUE", f"{prefix}: mean uncertainty after CLUE, |diff|",
                 abs(after - float(io[f"{prefix}/u_after_total_Sm1"].mean())), TOL["mean_u_after_atol"])
    # The figures: a row that ends where the original's does moves each |x - x0| by < row_atol; one that ends
    # elsewhere moves its L1 by at most the larger of the two; its "reduced" verdict flips only if it ends elsewhere
    # or its uncertainty after is within row_atol of the one before.
    l1_ours, l1_ref = np.abs(result.x - x0).sum(1), np.abs(ref_x - x0).sum(1)
    worst = np.sort(np.maximum(l1_ours, l1_ref))[::-1][:allowed].sum()
    before = io["clue/u0_total_Sm1"]
    near = int(np.sum(np.abs(io[f"{prefix}/u_after_total_Sm1"] - before) < TOL["row_atol"]))
    report.figure(f"{prefix}/mean_uncertainty_after", after, TOL["mean_u_after_atol"])
    report.figure(f"{prefix}/mean_l1", l1_ours.mean(), TOL["row_atol"] * x0.shape[1] + worst / len(x0))
    report.figure(f"{prefix}/fraction_reduced", np.mean(result.uncertainty_after < before), (allowed + near) / len(x0))
    report.figure(f"{prefix}/relative_reduction", (before.mean() - after) / before.mean(),
                  TOL["mean_u_after_atol"] / before.mean())


def check_kit(kit: Kit, data_dir=None, reference_dir: str | Path | None = None, full_runs=tuple(VARIANTS),
              teacher_forced=tuple(VARIANTS)) -> Report:
    """Every check of one kit; ``full_runs`` / ``teacher_forced``: the CLUE runs (prefixes of ``VARIANTS``) optimised
    end to end / replayed on the reference's trajectory. The data check is skipped (no check recorded) when the
    upstream files are not there."""
    report = Report(kit.name)
    try:
        check_data(kit, report, data_dir)
    except (FileNotFoundError, OSError, RuntimeError):
        pass
    check_bnn_outputs(kit, report)
    for suffix in ("Sm1", "S"):
        check_uncertainty(kit, report, suffix)
    check_bnn_metrics(kit, report, reference_dir)
    check_vae(kit, report)
    check_vae_elbo(kit, report)
    check_clue_selection(kit, report)
    for prefix in VARIANTS:
        if prefix in teacher_forced:
            check_clue_teacher_forced(kit, report, prefix)
        if prefix in full_runs:
            check_clue_full_run(kit, report, prefix)
    return report
