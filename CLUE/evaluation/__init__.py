"""The paper's computational evaluation framework: artificial data with a known ground truth (spec 6.3, 6.4).

A VAEAC [2] on the joint (x, y) of a real dataset and an under-VAEAC on its latent space define the ground truth
``p_gt(x, y) = int N(u; 0, I) p_VAEAC(x, y | z = g(u)) du`` ([1] section 5.1, appendix E). A BNN, a VAE and
an in-filling VAEAC are trained on data drawn from it; explanations of uncertain test points are scored
(normalized units):

1. **GT uncertainty reduction** ``dH = H_gt(x0) - H_gt(xc)``: entropy or total std of ``p_gt(y | x)`` (the base
   VAEAC's prior net with y masked, ``n_gt_samples`` draws, spec trap 30; gauss_cat regression: sigma = 1).
2. **Epistemic error change** ``d_err = err(X0) - err(Xc)``: error rate or RMS of the BNN's predictive mean
   against the ground-truth label (argmax / mean of ``p_gt(y | x)``), each set at its own inputs.
3. **In-distribution-ness** ``log p_gt(x) ~ logsumexp_i w_i - log N``, ``w_i = log p(x | u_i) + log N(u_i) -
   log q(u_i)``, ``u_i ~ q(u | x)`` (``get_VAEAC_px``; gauss_cat: the original's unnormalized ``-(x - mu)^2``,
   y excluded).
4. **Distance** ``sum_j |x0_j - xc_j|`` over flat columns.

[1] Antorán et al. "Getting a CLUE: A Method for Explaining Uncertainty Estimates." ICLR 2021.
[2] Ivanov, Figurnov, Vetrov. "Variational Autoencoder with Arbitrary Conditioning." ICLR 2019.
"""

from CLUE.evaluation.ground_truth import (
    GroundTruth,
    artificial_dataset,
    gt_conditional_samples,
    gt_predictive,
    log_px,
    make_artificial_dataset,
    sample_artificial_xy,
    summarize_conditional,
)
from CLUE.evaluation.metrics import (
    SETTINGS,
    TARGETS,
    DatasetSettings,
    EvalBudget,
    PointScores,
    Reference,
    SweepPoint,
    bnn_uncertainties,
    error_from_terms,
    error_terms,
    prediction_error,
    score,
    score_points,
    select_uncertain,
    selection_threshold,
    summarize,
)
from CLUE.evaluation.overlaps import holm, run_overlaps, scorecard
from CLUE.evaluation.report import (
    DISTANCES,
    compare_at_distance,
    off_axis_note,
    plot_sweeps,
    point_intervals,
    points_table,
    summarize_seeds,
    verdicts,
)
from CLUE.evaluation.sweeps import (
    BNN_GRADIENTS,
    METHODS,
    Sweep,
    SweepResults,
    clue_grid,
    explain_with,
    load_point_scores,
    read_journal,
    read_point_scores,
    run_sweeps,
    save_point_scores,
    sensitivity_grid,
    sweep_fingerprint,
    ufido_grid,
)

__all__ = [
    "BNN_GRADIENTS", "DISTANCES", "DatasetSettings", "EvalBudget", "GroundTruth", "METHODS", "PointScores",
    "Reference", "SETTINGS", "Sweep", "SweepPoint", "SweepResults", "TARGETS", "artificial_dataset",
    "bnn_uncertainties", "clue_grid", "compare_at_distance", "error_from_terms", "error_terms", "explain_with",
    "gt_conditional_samples", "gt_predictive", "holm", "load_point_scores", "log_px", "make_artificial_dataset",
    "off_axis_note", "plot_sweeps", "point_intervals", "points_table", "prediction_error", "read_journal",
    "read_point_scores", "run_overlaps", "run_sweeps", "sample_artificial_xy", "save_point_scores", "score",
    "score_points", "scorecard", "select_uncertain", "selection_threshold", "sensitivity_grid", "summarize",
    "summarize_conditional", "summarize_seeds", "sweep_fingerprint", "ufido_grid", "verdicts",
]
