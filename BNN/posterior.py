"""A BNN posterior as S weight samples stacked on a leading axis, predicted in one vectorized pass.

All S samples run in one graph call, differentiable w.r.t. ``x`` (the original dropped the last sample, spec trap 19:
``posterior[:-1]``). Exports are folders written atomically: ``samples.npz`` (the parity kit's neutral format,
``dense_0/kernel`` ``[S, in, out]``, ...) and ``model.json``.

References: [1] Antorán et al. Getting a CLUE. ICLR 2021, Eqs. (1)-(2)."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tensorflow as tf

from BNN.model import Architecture, forward, forward_unrolled, get_likelihood, unrolled_layers
from common import probability
from common.errors import UserError
from common.export import read_model, write_model
from common.io import save_npz
from common.predictive import uncertainties
from common.validation import check_tensor_inputs, load_npz

logger = logging.getLogger(__name__)

KIND = "bnn_posterior"  # its kind in common.export and weights/manifest.json
SAMPLES_FILE = "samples.npz"

# MLP batches from this size on (static shape) run as one graph branch per sample (``BNN.model.forward_unrolled``),
# up to this many samples (graph size); smaller or dynamic batches, CNNs and XLA use the batched matmuls.
UNROLLED_MIN_BATCH = 128
UNROLLED_MAX_SAMPLES = 512
# Up to this many parameters (all samples, 64 MB), the unrolled path keeps a rearranged copy of the weights and runs
# transposed (``unrolled_layers``), which pays for narrow layers; larger posteriors (wide layers) run without a copy.
UNROLLED_MAX_COPY_FLOATS = 16 * 2**20


class Posterior:
    """S posterior weight samples (``samples``: name -> ``[S, *shape]``) of one architecture with a likelihood.

    ``input_norm``: ``(mean, std)`` applied to inputs first; ``jit_compile``: XLA; ``unroll``: MLP batches of
    ``UNROLLED_MIN_BATCH`` rows or more run one branch per sample; ``dataset``: for messages."""

    def __init__(self, arch: Architecture, likelihood: str, samples: Mapping[str, np.ndarray],
                 input_norm: tuple[float, float] | None = None, jit_compile: bool = False, unroll: bool = True,
                 dataset: str | None = None):
        self.arch = arch
        self.dataset = dataset
        self.jit_compile = jit_compile
        self.unroll = unroll
        self.likelihood_name = likelihood
        self.likelihood = get_likelihood(likelihood)
        self.input_norm = None if input_norm is None else (float(input_norm[0]), float(input_norm[1]))
        shapes = arch.param_shapes()
        missing = sorted(set(shapes) - set(samples))
        if missing:
            raise ValueError(f"posterior samples lack parameters {missing}; expected keys {list(shapes)}")
        n_samples = {int(np.shape(samples[k])[0]) for k in shapes}
        if len(n_samples) != 1 or 0 in n_samples:
            raise ValueError(f"every parameter needs the same, non-zero number of samples; got {n_samples}")
        for name, shape in shapes.items():
            if tuple(np.shape(samples[name])[1:]) != shape:
                raise ValueError(f"{name}: expected [S, {', '.join(map(str, shape))}], got {np.shape(samples[name])}")
        self.samples = {name: tf.constant(np.asarray(samples[name], np.float32)) for name in shapes}
        signature = [tf.TensorSpec([None, arch.input_dim], tf.float32)]
        self._forward = tf.function(self._forward_impl, jit_compile=jit_compile, input_signature=signature)
        self._forward_unrolled = self._unrolled_layers = None
        if unroll and arch.kind == "mlp" and not jit_compile and self.n_samples <= UNROLLED_MAX_SAMPLES:
            if sum(int(np.prod(v.shape)) for v in self.samples.values()) <= UNROLLED_MAX_COPY_FLOATS:
                self._unrolled_layers = unrolled_layers(arch, self.samples)
            self._forward_unrolled = tf.function(
                lambda x: forward_unrolled(self.arch, self.samples, self._normalize(x), self._unrolled_layers),
                input_signature=signature)

    @property
    def n_samples(self) -> int:
        return int(next(iter(self.samples.values())).shape[0])

    def __getitem__(self, index: slice) -> Posterior:
        """A posterior over a slice of the samples, e.g. ``posterior[:-1]`` to drop the last as the original."""
        if not isinstance(index, slice):
            raise TypeError("index a Posterior with a slice, e.g. posterior[:53]")
        return Posterior(self.arch, self.likelihood_name, {k: v.numpy()[index] for k, v in self.samples.items()},
                         self.input_norm, self.jit_compile, self.unroll, dataset=self.dataset)

    def _normalize(self, x: tf.Tensor) -> tf.Tensor:
        return x if self.input_norm is None else (x - self.input_norm[0]) / self.input_norm[1]

    def _forward_impl(self, x: tf.Tensor) -> tf.Tensor:
        return forward(self.arch, self.samples, self._normalize(x))

    def forward(self, x) -> tf.Tensor:
        """Raw outputs ``[S, B, output_dim]`` of ``x`` ``[B, input_dim]`` (``UserError`` for a bad ``x``)."""
        x = check_tensor_inputs(x, self.arch.input_dim, "x", "this BNN", self.dataset, self.arch.image_shape)
        x = tf.convert_to_tensor(x, tf.float32)
        if x.shape.rank != 2 or x.shape[-1] != self.arch.input_dim:
            raise UserError(f"expected x of shape [B, {self.arch.input_dim}], got {x.shape}")
        if self._forward_unrolled is not None and (x.shape[0] or 0) >= UNROLLED_MIN_BATCH:
            return self._forward_unrolled(x)
        return self._forward(x)

    def predict_samples(self, x):
        """Per-sample predictives: probabilities ``[S, B, C]``, or (mu, sigma) ``[S, B]`` (``[S, B, D]`` if D > 1)."""
        return self.likelihood.predict(self.forward(x))

    def uncertainty(self, x) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(total, aleatoric, epistemic), each ``[B]``: entropies (nats) or standard deviations (spec section 3)."""
        return uncertainties(self, x)[:3]

    def save(self, directory: str | os.PathLike, dtype: str = "float32") -> Path:
        """Writes ``samples.npz`` and ``model.json`` into ``directory``, atomically (all or nothing); ``dtype``
        ``"float16"`` stores the samples rounded to half precision (``load`` computes in float32 either way)."""
        samples = {k: v.numpy().astype(dtype) for k, v in self.samples.items()}
        config = {"architecture": self.arch.to_dict(), "likelihood": self.likelihood_name,
                  "input_norm": self.input_norm}
        extra = {} if dtype == "float32" else {"dtype": dtype}
        return write_model(directory, KIND, config, {SAMPLES_FILE: lambda p: save_npz(p, **samples)}, self.dataset,
                           n_samples=self.n_samples, **extra)

    @classmethod
    def load(cls, directory: str | os.PathLike, jit_compile: bool = False) -> Posterior:
        """Rebuilds a posterior written by ``save`` (or an older ``config.json`` + ``samples.npz`` folder)."""
        directory = Path(directory)
        command = "`python -m BNN.train --dataset {} --out RUN_DIR`"
        dataset = _trained_on(directory)
        info = read_model(directory, (KIND,), "BNN posterior", "Posterior.save (for samples in the neutral npz "
                          "format use Posterior.from_npz)", command.format(dataset or "NAME"))
        dataset = info.dataset or dataset
        retrain = command.format(dataset or "NAME")
        samples = load_npz(directory / SAMPLES_FILE, "the BNN posterior's weight samples", retrain)
        config = info.config
        try:
            arch = Architecture(**config["architecture"])
            return cls(arch, config["likelihood"], samples, config["input_norm"], jit_compile, dataset=dataset)
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, UserError):
                raise
            raise UserError(f"{directory}: {info.path.name} and {SAMPLES_FILE} do not make a posterior ({err}); "
                            f"re-export it, or retrain it with {retrain}") from err

    @classmethod
    def from_npz(cls, path: str | os.PathLike, likelihood: str, input_norm: tuple[float, float] | None = None,
                 image_shape: tuple[int, int, int] | None = None, jit_compile: bool = False) -> Posterior:
        """Imports stacked samples in the neutral format (SCHEMA.md section 2), inferring the MLP or CNN (needs
        ``image_shape``) from the keys."""
        samples = load_npz(path, "the posterior samples", keep=lambda k: k.startswith(("dense_", "conv_")))
        n_dense = sum(1 for k in samples if k.startswith("dense_") and k.endswith("/kernel"))
        if n_dense < 2 or "dense_0/kernel" not in samples:
            raise ValueError(f"{path}: expected keys dense_0/kernel, ... with a leading sample axis; "
                             f"got {sorted(samples)}")
        output_dim = samples[f"dense_{n_dense - 1}/kernel"].shape[-1]
        if any(k.startswith("conv_") for k in samples):
            if image_shape is None:
                raise ValueError(f"{path} holds a CNN: pass image_shape=(H, W, C)")
            arch = Architecture("cnn", math.prod(image_shape), output_dim, image_shape=tuple(image_shape))
        else:
            in_dim, width = samples["dense_0/kernel"].shape[1:]
            arch = Architecture("mlp", int(in_dim), int(output_dim), int(width), n_dense - 1)
        return cls(arch, likelihood, samples, input_norm, jit_compile)




def _trained_on(directory: Path) -> str | None:
    """The recorded dataset of the run that wrote ``directory``, if any."""
    for candidate in (directory / "train_config.json", directory.parent / "config.json"):
        try:
            dataset = json.loads(candidate.read_text()).get("dataset")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(dataset, str):
            return dataset
    return None


class SampleBuffer(tf.Module):
    """The last ``capacity`` samples of a chain (or of K chains) as checkpointable ring-buffer variables (spec 2.4)."""

    def __init__(self, arch: Architecture, capacity: int, n_chains: int | None = None):
        super().__init__(name="sample_buffer")
        if capacity < 1:
            raise ValueError(f"the sample buffer needs capacity >= 1, got {capacity}")
        self.arch = arch
        self.capacity = int(capacity)
        chains = [] if n_chains is None else [int(n_chains)]
        self.buffers = {name: tf.Variable(tf.zeros([self.capacity, *chains, *shape]), trainable=False,
                                          name=name.replace("/", "_"))
                        for name, shape in arch.param_shapes().items()}
        self.n_added = tf.Variable(0, dtype=tf.int64, trainable=False, name="n_added")

    @property
    def n_kept(self) -> int:
        return int(min(int(self.n_added), self.capacity))

    def add(self, params: Mapping[str, tf.Tensor]) -> None:
        """Stores a copy of the current weights, overwriting the oldest sample when full."""
        slot = int(self.n_added) % self.capacity
        for name, buffer in self.buffers.items():
            buffer[slot].assign(params[name])
        self.n_added.assign_add(1)

    def samples(self) -> dict[str, np.ndarray]:
        """name -> ``[n_kept, *shape]`` (``[n_kept, K, *shape]`` for K chains), oldest sample first."""
        start = int(self.n_added) % self.capacity if int(self.n_added) > self.capacity else 0
        order = (np.arange(self.n_kept) + start) % self.capacity
        return {name: buffer.numpy()[order] for name, buffer in self.buffers.items()}


def evaluate(posterior: Posterior, x: np.ndarray, y: np.ndarray, y_std: float = 1.0,
             batch_size: int = 1000) -> dict[str, float]:
    """Test metrics of the posterior predictive (the original's ``evaluate_BNN_net_{cat,gauss}``).

    ``accuracy`` and ``nll = -mean log p_bar(y)``; regression in original units (``y_std``): ``rmse`` of mu_bar,
    ``loglik`` = mean log N(y; mu_bar, total var) (``gmm_sig=True``) and ``loglik_mixture`` (the S-Gaussian mixture)."""
    outs = [posterior.forward(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    out = tf.concat(outs, axis=1)  # [S, N, out]
    n_samples = tf.cast(tf.shape(out)[0], tf.float32)
    if posterior.likelihood_name == "categorical":
        labels = tf.cast(np.reshape(y, [-1]), tf.int32)
        log_p = tf.nn.log_softmax(out, axis=-1)  # [S, N, C]
        log_p_bar = tf.reduce_logsumexp(log_p, axis=0) - tf.math.log(n_samples)  # [N, C]
        nll = -tf.gather(log_p_bar, labels, batch_dims=1)
        accuracy = tf.reduce_mean(tf.cast(tf.argmax(log_p_bar, -1, output_type=tf.int32) == labels, tf.float32))
        return {"accuracy": float(accuracy), "nll": float(tf.reduce_mean(nll))}
    mu, sigma = posterior.likelihood.params(out)  # [S, N, D] each
    y = tf.reshape(tf.cast(y, tf.float32), tf.shape(mu)[1:])
    mu_bar = tf.reduce_mean(mu, axis=0)  # [N, D]
    total_var = tf.reduce_mean(tf.square(sigma), 0) + tf.reduce_mean(tf.square(mu - mu_bar), 0)  # [N, D] marginal
    rmse = tf.sqrt(tf.reduce_mean(tf.reduce_sum(tf.square(mu_bar - y), -1)))
    log_scale = math.log(y_std)  # densities of y_orig = y * y_std + y_mean lose log(y_std) per dimension
    d = float(mu.shape[-1])
    loglik = tf.reduce_sum(probability.gaussian_log_prob(y, mu_bar, tf.sqrt(total_var)), -1)
    per_sample = tf.reduce_sum(probability.gaussian_log_prob(y, mu, sigma), -1)  # [S, N]
    loglik_mixture = tf.reduce_logsumexp(per_sample, axis=0) - tf.math.log(n_samples)
    return {"rmse": float(rmse) * y_std, "loglik": float(tf.reduce_mean(loglik)) - d * log_scale,
            "loglik_mixture": float(tf.reduce_mean(loglik_mixture)) - d * log_scale}
