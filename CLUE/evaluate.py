"""Runs the computational evaluation framework of [1] on one tabular dataset (spec 6.3, 6.4; paper section 5.1).

A finished run (``results.json`` with the same settings and metric definitions, ``RESULTS_VERSION``) is returned as
it is. Otherwise the steps, each resumable (a finished stage, i.e. one with ``metrics.json``, is reused; an
interrupted training run resumes from its checkpoint):

1. ``gt_vaeac/``: the ground-truth VAEAC on the real joint (x, y) and its under-VAEAC (``VAEAC.train``);
2. ``artificial.npz``: ``N_train + N_test`` points drawn from the ground truth (the dataset ``art_<dataset>``);
3. ``bnn/``, ``vae/``, ``art_vaeac/``: the BNN (``BNN.train``), CLUE's VAE (``VAE.train``) and U-FIDO's in-filling
   VAEAC (``VAEAC.train``, x only) on the artificial training split, handed to each script as a dataset object;
4. the artificial test points with BNN aleatoric (epistemic) uncertainty above the dataset's threshold are explained by
   localized sensitivity, CLUE and U-FIDO over their sweeps and scored against the ground truth
   (:mod:`CLUE.evaluation`). Each scored sweep value is appended to ``sweep_points.jsonl`` at once, and a rerun
   reuses the values found there for the same explained points and settings.

Writes ``table.csv`` (one row per method, target and sweep value), ``results.json`` (config, references, rows) and
``<dataset>_{aleatoric,epistemic}.png`` into ``--out``.

Usage::

    python -m CLUE.evaluate --dataset compas --preset fast --seed 0 --out runs/eval_compas
    python -m CLUE.evaluate --dataset lsat --preset paper --out runs/eval_lsat

Presets: ``paper`` = the [nb] budgets (GT VAEAC <= 2500 epochs, patience 200, under-VAEAC 2500 epochs; BNN 2400
epochs, burn-in 120, a sample every 20 epochs, 100 kept; VAE/VAEAC <= 2500 epochs; 500 GT samples; 1000 importance
samples; 30/30/20 sweep values; a seeded subset of at most 1000 uncertain test points per target, where [nb]
explains all of them: ``--max-explained none``). ``fast`` and ``tiny``: see ``PRESETS``.

The pipeline itself is :mod:`CLUE.evaluation.pipeline`; this module is its command line.

#### References
[1] Antorán, J., Bhatt, U., Adel, T., Weller, A., Hernández-Lobato, J. M. "Getting a CLUE: A Method for Explaining
    Uncertainty Estimates." ICLR 2021.
"""

from CLUE.evaluation import pipeline  # noqa: F401 (CLUE.evaluate.pipeline)
from CLUE.evaluation.pipeline import PRESETS, Config, load_trained_run, main  # noqa: F401 (the public names)

if __name__ == "__main__":
    import common.cli

    common.cli.run_script(main, Config, PRESETS, prog="python -m CLUE.evaluate", description=__doc__.split("\n\n")[0],
                          preset_help={"paper": "the [nb] budgets (the defaults; see above)",
                                       "fast": "tens of minutes per dataset on 2 CPU cores: shorter training, "
                                               "8 values per sweep, at most 300 explained points per target",
                                       "tiny": "seconds, for tests: tiny networks, a handful of epochs and sweep "
                                               "values"},
                          resumable=True)
