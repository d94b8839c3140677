"""Runs the computational evaluation framework of [1] on one tabular dataset (spec 6.3, 6.4; paper section 5.1).

The pipeline (:mod:`CLUE.evaluation.pipeline`; every stage resumable) trains the ground truth, draws artificial data,
trains the BNN, VAE and in-filling VAEAC on it, then sweeps localized sensitivity, CLUE and U-FIDO over the
uncertain test points; writes ``table.csv``, ``results.json`` and ``<dataset>_{aleatoric,epistemic}.png``. Presets:
``PRESETS`` (``paper``: the [nb] budgets, at most 1000 explained points per target).

    python -m CLUE.evaluate --dataset compas --preset fast --seed 0 --out runs/eval_compas

[1] Antorán et al. "Getting a CLUE: A Method for Explaining Uncertainty Estimates." ICLR 2021.
"""

from CLUE.evaluation import pipeline  # noqa: F401 (CLUE.evaluate.pipeline)
from CLUE.evaluation.config import PRESETS, Config  # noqa: F401 (the public names)
from CLUE.evaluation.pipeline import load_trained_run, main  # noqa: F401 (the public names)

if __name__ == "__main__":
    import common.cli

    common.cli.run_script(main, Config, PRESETS, prog="python -m CLUE.evaluate", description=__doc__.split("\n\n")[0],
                          preset_help={"paper": "the [nb] budgets (the defaults; see above)",
                                       "fast": "tens of minutes per dataset on 2 CPU cores: shorter training, "
                                               "8 values per sweep, at most 300 explained points per target",
                                       "tiny": "seconds, for tests: tiny networks, a handful of epochs and sweep "
                                               "values"},
                          resumable=True)
