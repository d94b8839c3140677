"""The torch-1.3 original's gradient quirk, to compare with the PyTorch figures labeled ``clue`` (parity kit 5.3).

The original's ``sample_predict(grad=True)`` back-propagated every sample through the *last-loaded* sample's
weights (forward values and ReLU masks stayed per-sample) and dropped that sample from the forward
(``out[:idx]``). Used by ``CLUE.evaluate --bnn-gradient torch13``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf


def _dense_with_stale_input_grad(h: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor, stale_kernel: tf.Tensor):
    """``h [S, B, I] @ kernel [S, I, O] + bias`` whose input-gradient uses ``stale_kernel [I, O]`` for every s."""

    @tf.custom_gradient
    def dense(h):
        def grad(upstream):  # upstream [S, B, O]
            return tf.einsum("sbo,io->sbi", upstream, stale_kernel)

        return tf.einsum("sbi,sio->sbo", h, kernel) + bias[:, None, :], grad

    return dense(h)


class OriginalGradientMLP:
    """A ReLU MLP posterior with the torch-1.3 original's forward samples and backward weights.

    ``kernels`` per layer ``[S, in, out]`` and ``biases`` ``[S, out]``, all saved samples in saved order;
    ``likelihood``: ``"categorical"`` (softmax) or ``"gaussian"`` (mean, softplus scale)."""

    def __init__(self, kernels: Sequence[np.ndarray], biases: Sequence[np.ndarray], likelihood: str):
        if likelihood not in ("categorical", "gaussian"):
            raise ValueError(f"likelihood must be 'categorical' or 'gaussian', got {likelihood!r}")
        self.likelihood = likelihood
        # Forward: samples 0..S-2 (the original drops the last); backward: the last sample's kernels.
        self.kernels = [tf.constant(k[:-1], tf.float32) for k in kernels]
        self.biases = [tf.constant(b[:-1], tf.float32) for b in biases]
        self.stale = [tf.constant(k[-1], tf.float32) for k in kernels]

    @classmethod
    def from_npz(cls, path, likelihood: str) -> OriginalGradientMLP:
        """Reads the parity kit's ``bnn_samples.npz`` (keys ``dense_i/kernel`` ``[S, in, out]``, ``dense_i/bias``)."""
        with np.load(path) as f:
            n_layers = len([k for k in f.files if k.endswith("/kernel")])
            return cls([f[f"dense_{i}/kernel"] for i in range(n_layers)],
                       [f[f"dense_{i}/bias"] for i in range(n_layers)], likelihood)

    @classmethod
    def from_posterior(cls, posterior) -> OriginalGradientMLP:
        """The same weight samples from a ``BNN.posterior.Posterior``; ValueError for a CNN or input normalization."""
        if posterior.arch.kind != "mlp" or posterior.input_norm is not None:
            raise ValueError("the torch-1.3 gradient is reproduced for MLP posteriors without input normalization; "
                             f"got a {posterior.arch.kind} posterior with input_norm={posterior.input_norm}")
        n_layers = len([k for k in posterior.samples if k.endswith("/kernel")])
        return cls([posterior.samples[f"dense_{i}/kernel"].numpy() for i in range(n_layers)],
                   [posterior.samples[f"dense_{i}/bias"].numpy() for i in range(n_layers)], posterior.likelihood_name)

    def predict_samples(self, x: tf.Tensor):
        """``[S-1, B, C]`` probabilities or ``([S-1, B], [S-1, B])`` means and scales, with the stale gradient."""
        s = self.kernels[0].shape[0]
        h = tf.broadcast_to(tf.convert_to_tensor(x, tf.float32)[None], [s, tf.shape(x)[0], x.shape[-1]])
        for i, (kernel, bias, stale) in enumerate(zip(self.kernels, self.biases, self.stale)):
            h = _dense_with_stale_input_grad(h, kernel, bias, stale)
            if i < len(self.kernels) - 1:
                h = tf.nn.relu(h)
        if self.likelihood == "categorical":
            return tf.nn.softmax(h, axis=-1)
        return h[..., 0], tf.nn.softplus(h[..., 1])
