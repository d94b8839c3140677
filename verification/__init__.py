"""Verification against the original code, outside the library: loaders of the parity kits (the original's trained
models in a neutral npz) and the checks that reproduce its outputs (``parity``, ``parity_checks``). Tests, notebooks
and benchmarks import them from here; the installed package does not ship them."""
