"""The paper's computational evaluation framework: artificial data with a known ground truth (spec 6.3, 6.4).

A VAEAC trained on the joint (x, y) of a real dataset, and an "under-VAEAC" on its latent space, define a generative
ground truth ``p_gt(x, y) = int N(u; 0, I) p_VAEAC(x, y | z = g(u)) du`` (section 5.1 and appendix E of [1]).
Artificial data are drawn from it; a BNN, a VAE (for CLUE) and a VAEAC (for U-FIDO in-filling) are trained on them;
and explanations of the BNN's uncertain test points are scored against the ground truth:

1. **GT uncertainty reduction** ``dH = H_gt(x0) - H_gt(xc)`` per point, where ``H_gt`` is the entropy of the
   ground-truth conditional ``p_gt(y | x)`` (classification) or its total std (regression). ``p_gt(y | x)`` comes
   from the *base* VAEAC's prior network with y masked, with ``n_gt_samples`` prior draws (spec trap 30);
   gauss_cat regression uses sigma = 1.
2. **Epistemic error change** ``d_err = err(X0) - err(Xc)``: error rate (classification) or RMS (regression) of the
   BNN's predictive mean against the ground-truth label (argmax / mean of ``p_gt(y | x)``), each set scored against
   the ground truth at its own inputs (``evaluate_epistemic_explanation_*(BNN, VAEAC, X)`` called on X0, then Xc).
3. **In-distribution-ness** ``log p_gt(x)``, importance-sampled with the under-VAEAC (``get_VAEAC_px``):
   ``u_i ~ q(u | x)`` (base prior-net mean -> under-encoder), ``w_i = log p(x | u_i) + log N(u_i) - log q(u_i)``,
   ``log p(x) ~ logsumexp_i w_i - log N``. The x log-likelihood is the VAEAC's own (for gauss_cat the original's
   unnormalised ``-(x - mu)^2`` on continuous columns; the y variable is excluded, ``override_y_dims=1``).
4. **Distance** ``sum_j |x0_j - xc_j|`` over flat columns.

All values are in the normalised units of the data.

#### References
[1] Antorán, J., Bhatt, U., Adel, T., Weller, A., Hernández-Lobato, J. M. "Getting a CLUE: A Method for Explaining
    Uncertainty Estimates." ICLR 2021 (section 5.1, appendix E).
[2] Ivanov, Figurnov & Vetrov. Variational Autoencoder with Arbitrary Conditioning. ICLR 2019.

The package is split by job: :mod:`~CLUE.evaluation.ground_truth` (the ground truth, artificial data, metrics 1 and
3), :mod:`~CLUE.evaluation.metrics` (point selection and per-point scoring), :mod:`~CLUE.evaluation.sweeps` (the
methods over their sweeps, with the resumable journal) and :mod:`~CLUE.evaluation.report` (tables, comparisons at
equal distance with bootstrap intervals, verdicts, figures). Their public names are re-exported here.
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
    explain,
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
    "bnn_uncertainties", "clue_grid", "compare_at_distance", "error_from_terms", "error_terms", "explain",
    "gt_conditional_samples", "gt_predictive", "holm", "load_point_scores", "log_px", "make_artificial_dataset",
    "off_axis_note", "plot_sweeps", "point_intervals", "points_table", "prediction_error", "read_journal",
    "read_point_scores", "run_overlaps", "run_sweeps", "sample_artificial_xy", "save_point_scores", "score",
    "score_points", "scorecard", "select_uncertain", "selection_threshold", "sensitivity_grid", "summarize",
    "summarize_conditional", "summarize_seeds", "sweep_fingerprint", "ufido_grid", "verdicts",
]
