"""CLUE (Antorán et al., ICLR 2021): the optimiser, its baselines and the computational evaluation framework."""

from CLUE.explainer import CLUE, CLUEConfig, CLUEResult, CLUEWeights

__all__ = ["CLUE", "CLUEConfig", "CLUEResult", "CLUEWeights"]
