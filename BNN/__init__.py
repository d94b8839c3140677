"""Bayesian neural networks trained with scale-adapted SG-HMC (spec section 2)."""
