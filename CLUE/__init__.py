"""CLUE (Antorán et al., ICLR 2021): the optimizer, its baselines and the computational evaluation framework."""

import common.cli  # noqa: F401  # isort: skip  (first: quiets TensorFlow's start-up for the CLUE scripts)
from CLUE.explainer import CLUE, CLUEConfig, CLUEResult, CLUEWeights
from common.version import __version__

__all__ = ["CLUE", "CLUEConfig", "CLUEResult", "CLUEWeights", "__version__"]
