"""CLUE for any probabilistic Keras model: adapters with the ``predict_samples`` contract of a BNN posterior.

``predict_samples(x)`` gives S samples of the predictive distribution's parameters, differentiable in ``x``:
probabilities ``[S, B, C]`` or Gaussian ``(mu, sigma)`` each ``[S, B]``; the uncertainty split of [1, 2] (spec
section 3) then applies unchanged. Adapters: :class:`DeepEnsemble` [3], :class:`MCDropout` [4],
:class:`DistributionHead`.

[1] Antorán et al. "Getting a CLUE: A Method for Explaining Uncertainty Estimates." ICLR 2021.
[2] Depeweg et al. "Decomposition of uncertainty in Bayesian deep learning ..." ICML 2018.
[3] Lakshminarayanan et al. "Simple and Scalable Predictive Uncertainty Estimation using Deep Ensembles." NeurIPS 2017.
[4] Gal, Ghahramani. "Dropout as a Bayesian Approximation." ICML 2016.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tqdm.auto import tqdm

from common import probability
from common.errors import UserError
from common.predictive import uncertainties
from common.validation import check_tensor_inputs

logger = logging.getLogger(__name__)
tfd = tfp.distributions

LIKELIHOODS = ("categorical", "gaussian")
OUTPUTS = {"categorical": ("logits", "probs"), "gaussian": ("log_std", "softplus")}
MIN_STD = 1e-6  # floor of a regression member's predicted std (keeps log-likelihood and entropies finite)


@dataclass(frozen=True)
class ModelInputs:
    """What the adapters say about their inputs, under the attribute names of ``BNN.model.Architecture``."""

    input_dim: int | None
    image_shape: tuple[int, int, int] | None = None


def _input_dim(model: keras.Model, input_dim: int | None) -> int | None:
    """``input_dim`` if given, else the last axis of the model's built input shape (None when unknown)."""
    if input_dim is not None:
        return int(input_dim)
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):
        return None
    width = shape[-1] if isinstance(shape, tuple) else None
    return int(width) if isinstance(width, int) else None


def to_predictive(raw: tf.Tensor, likelihood: str, output: str):
    """The ``predict_samples`` value of raw outputs ``[S, B, K]``: probabilities ``[S, B, C]`` or ``(mu, sigma)``;
    ``output``: categorical ``"logits"`` / ``"probs"``, gaussian ``"log_std"`` (std = exp) or ``"softplus"``."""
    if likelihood == "categorical":
        return tf.nn.softmax(raw, axis=-1) if output == "logits" else raw
    if raw.shape[-1] != 2:
        raise UserError(f"a gaussian model must output 2 columns, [mean, {output}], per row; got {raw.shape[-1]}")
    scale = tf.exp(raw[..., 1]) if output == "log_std" else tf.nn.softplus(raw[..., 1])
    return raw[..., 0], tf.maximum(scale, MIN_STD)


class SampledPredictive:
    """Base of the adapters: checks ``x`` as a BNN posterior does and turns raw outputs into ``predict_samples``
    (``input_dim`` None: read from the built model; ``dataset``, ``image_shape``: for error messages)."""

    def __init__(self, likelihood: str, output: str | None, input_dim: int | None, dataset: str | None = None,
                 image_shape: tuple[int, int, int] | None = None):
        if likelihood not in LIKELIHOODS:
            raise UserError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        output = output or OUTPUTS[likelihood][0]
        if output not in OUTPUTS[likelihood]:
            raise UserError(f"a {likelihood} model's output must be one of {OUTPUTS[likelihood]}, got {output!r}")
        self.likelihood_name, self.output = likelihood, output
        self.arch = ModelInputs(input_dim, image_shape)
        self.dataset = dataset

    @property
    def n_samples(self) -> int:
        raise NotImplementedError

    def raw_samples(self, x: tf.Tensor) -> tf.Tensor:
        """Raw outputs of every sample, float32 ``[S, B, K]``."""
        raise NotImplementedError

    def _check(self, x) -> tf.Tensor:
        x = check_tensor_inputs(x, self.arch.input_dim, "x", f"this {type(self).__name__}", self.dataset,
                                self.arch.image_shape)
        return tf.convert_to_tensor(x, tf.float32)

    def predict_samples(self, x):
        """Per-sample predictive at ``x [B, D]``: probabilities ``[S, B, C]`` or ``(mu, sigma)`` each ``[S, B]``;
        UserError if ``x`` is empty, not ``[B, input_dim]``, or holds NaN or inf."""
        return to_predictive(self.raw_samples(self._check(x)), self.likelihood_name, self.output)

    def uncertainty(self, x) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(total, aleatoric, epistemic), each ``[B]``: entropies (nats) or standard deviations (spec section 3)."""
        return uncertainties(self, x)[:3]


class DeepEnsemble(SampledPredictive):
    """K Keras models (``[B, D] -> [B, C]`` or ``[B, 2]``) as K samples of the predictive distribution [3]."""

    def __init__(self, members: Sequence[keras.Model], likelihood: str = "categorical", output: str | None = None,
                 input_dim: int | None = None, dataset: str | None = None):
        if len(members) < 1:
            raise UserError("a DeepEnsemble needs at least one member model")
        self.members = list(members)
        super().__init__(likelihood, output, _input_dim(self.members[0], input_dim), dataset)

    @property
    def n_samples(self) -> int:
        return len(self.members)

    def raw_samples(self, x: tf.Tensor) -> tf.Tensor:
        return tf.stack([tf.cast(m(x, training=False), tf.float32) for m in self.members])  # [K, B, out]


class MCDropout(SampledPredictive):
    """A Keras chain of layers with ``Dropout`` kept on at prediction, as S samples of its dropout posterior [4].

    Sample s multiplies each ``Dropout`` input by a Bernoulli mask from the stateless seed ``(seed, s, layer)``,
    rescaled by ``1 / (1 - rate)`` and shared by every row (S fixed thinned networks; rows stay independent).
    ``rate`` None: each layer's own. Other layers run in inference mode."""

    def __init__(self, model: keras.Model, n_samples: int = 32, seed: int = 0, rate: float | None = None,
                 likelihood: str = "categorical", output: str | None = None, input_dim: int | None = None,
                 dataset: str | None = None):
        if n_samples < 1:
            raise UserError(f"MCDropout needs n_samples >= 1, got {n_samples}")
        if rate is not None and not 0.0 <= rate < 1.0:
            raise UserError(f"a dropout rate must be in [0, 1), got {rate}")
        self.model, self._n_samples, self.seed, self.rate = model, int(n_samples), int(seed), rate
        self.layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
        if not any(isinstance(layer, keras.layers.Dropout) for layer in self.layers):
            raise UserError(f"{model.name} has no keras.layers.Dropout layer: MC dropout has nothing to sample")
        if not isinstance(model, keras.Sequential):
            for prev, layer in zip(self.layers, self.layers[1:]):
                try:
                    chained = layer.input is prev.output
                except (AttributeError, ValueError):  # a layer used more than once has no single input
                    chained = False
                if not chained:
                    raise UserError(f"MCDropout needs a chain of layers; {layer.name} does not take {prev.name}'s "
                                    "output alone (wrap the model as a keras.Sequential or use DeepEnsemble)")
        super().__init__(likelihood, output, _input_dim(model, input_dim), dataset)

    @property
    def n_samples(self) -> int:
        return self._n_samples

    def raw_samples(self, x: tf.Tensor) -> tf.Tensor:
        n_rows = tf.shape(x)[0]
        h = tf.tile(x[None], [self._n_samples] + [1] * x.shape.rank)  # [S, B, D]
        h = tf.reshape(h, tf.concat([[-1], tf.shape(x)[1:]], 0))  # [S * B, D]
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, keras.layers.Dropout):
                h = layer(h, training=False)
                continue
            rate = layer.rate if self.rate is None else self.rate
            if rate == 0.0:
                continue
            features = h.shape[1:]
            keep = tf.random.stateless_uniform([self._n_samples, 1, *features], seed=[self.seed, i]) >= rate
            h = tf.reshape(h, tf.concat([[self._n_samples, n_rows], tf.shape(h)[1:]], 0))  # [S, B, ...]
            h = h * tf.cast(keep, h.dtype) / (1.0 - rate)
            h = tf.reshape(h, tf.concat([[-1], tf.shape(h)[2:]], 0))
        h = tf.cast(h, tf.float32)
        return tf.reshape(h, tf.concat([[self._n_samples, n_rows], tf.shape(h)[1:]], 0))  # [S, B, out]


class DistributionHead(SampledPredictive):
    """A Keras model ``[B, D] -> tfd.Distribution``, read as S samples of predictive parameters.

    ``mode="heads"``: ``Categorical`` / ``Normal`` of batch ``[B, S]`` (or a ``MixtureSameFamily`` of them, weights
    unused), one head per sample. ``mode="parameters"``: a Gaussian over the raw outputs (event ``[K]``); sample s is
    ``mean + stddev * eps_s``, ``eps_s ~ N(0, I)`` from the stateless seed ``(seed, s)``, shared by every row."""

    def __init__(self, model, mode: str = "heads", n_samples: int = 32, seed: int = 0,
                 likelihood: str = "categorical", output: str | None = None, input_dim: int | None = None,
                 dataset: str | None = None):
        if mode not in ("heads", "parameters"):
            raise UserError(f"mode must be 'heads' or 'parameters', got {mode!r}")
        if n_samples < 1:
            raise UserError(f"DistributionHead needs n_samples >= 1, got {n_samples}")
        self.model, self.mode, self._n_samples, self.seed = model, mode, int(n_samples), int(seed)
        self._heads: int | None = None
        super().__init__(likelihood, output, _input_dim(model, input_dim), dataset)

    @property
    def n_samples(self) -> int:
        return self._n_samples if self.mode == "parameters" else (self._heads or 0)

    def _distribution(self, x: tf.Tensor):
        dist = self.model(x, training=False)
        if not isinstance(dist, tfd.Distribution):
            raise UserError(f"DistributionHead needs a model that returns a tfp.distributions.Distribution; got "
                            f"{type(dist).__name__} (use DeepEnsemble for models that return tensors)")
        return dist

    def predict_samples(self, x):
        x = self._check(x)
        dist = self._distribution(x)
        if self.mode == "parameters":
            return to_predictive(self._parameter_samples(dist), self.likelihood_name, self.output)
        if isinstance(dist, tfd.MixtureSameFamily):
            dist = dist.components_distribution
        self._heads = int(dist.batch_shape[-1]) if dist.batch_shape.rank == 2 else None
        if dist.batch_shape.rank != 2 or dist.event_shape.rank != 0:
            raise UserError(f"mode='heads' needs a distribution of batch shape [B, S] and scalar events; got batch "
                            f"{dist.batch_shape}, event {dist.event_shape}")
        if self.likelihood_name == "categorical":
            if not isinstance(dist, tfd.Categorical):
                raise UserError(f"classification heads must be tfd.Categorical, got {type(dist).__name__}")
            return tf.transpose(dist.probs_parameter(), [1, 0, 2])  # [B, S, C] -> [S, B, C]
        return tf.transpose(dist.mean()), tf.maximum(tf.transpose(dist.stddev()), MIN_STD)  # [S, B] each

    def raw_samples(self, x: tf.Tensor) -> tf.Tensor:
        if self.mode != "parameters":
            raise UserError("raw_samples is only defined for mode='parameters'")
        return self._parameter_samples(self._distribution(x))

    def _parameter_samples(self, dist) -> tf.Tensor:
        inner = dist.distribution if isinstance(dist, tfd.Independent) else dist
        if not isinstance(inner, (tfd.Normal, tfd.MultivariateNormalDiag)):
            raise UserError(f"mode='parameters' needs a Normal, MultivariateNormalDiag or Independent(Normal) over "
                            f"the raw outputs, got {type(dist).__name__}")
        mean, std = dist.mean(), dist.stddev()  # [B, K]
        eps = tf.random.stateless_normal([self._n_samples, 1, mean.shape[-1]], seed=[self.seed, 0])  # [S, 1, K]
        return mean[None] + std[None] * eps  # [S, B, K]


def make_member(input_dim: int, output_dim: int, hidden: Sequence[int] = (200, 200), dropout: float = 0.0,
                seed: int = 0) -> keras.Sequential:
    """An MLP ``input_dim -> hidden ... -> output_dim``, ReLU, ``Dropout(dropout)`` after each hidden layer if > 0."""
    layers = [keras.Input((input_dim,))]
    for i, width in enumerate(hidden):
        layers.append(keras.layers.Dense(width, activation="relu",
                                         kernel_initializer=keras.initializers.GlorotUniform(seed + 7919 * i)))
        if dropout > 0:
            layers.append(keras.layers.Dropout(dropout, seed=seed + i))
    layers.append(keras.layers.Dense(output_dim, kernel_initializer=keras.initializers.GlorotUniform(seed + 104729)))
    return keras.Sequential(layers)


def gaussian_nll(y_true, raw):
    """Mean negative log-likelihood of ``y`` under ``N(raw[:, 0], exp(raw[:, 1])^2)`` (regression members)."""
    y = tf.reshape(tf.cast(y_true, tf.float32), [-1])
    mu, sigma = to_predictive(raw, "gaussian", "log_std")
    return -tf.reduce_mean(probability.gaussian_log_prob(y, mu, sigma))


def train_ensemble(x: np.ndarray, y: np.ndarray, task: str, n_members: int = 5, hidden: Sequence[int] = (200, 200),
                   epochs: int = 40, batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 1e-4,
                   seed: int = 0, n_classes: int | None = None, dataset: str | None = None,
                   progress: bool = False) -> DeepEnsemble:
    """Fits a deep ensemble [3] of ``n_members`` MLPs (seeds ``seed, seed + 1, ...``) with ``keras.Model.fit``, AdamW,
    cross-entropy on logits or the Gaussian NLL of ``[mean, log_std]``; returns a :class:`DeepEnsemble`."""
    if task not in ("classification", "regression"):
        raise UserError(f"task must be 'classification' or 'regression', got {task!r}")
    if n_members < 1 or epochs < 1:
        raise UserError(f"n_members and epochs must be >= 1, got {n_members} and {epochs}")
    x = np.asarray(x, np.float32)
    if task == "classification":
        y = np.asarray(y).reshape(-1).astype(np.int64)
        out_dim = int(n_classes or y.max() + 1)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        y, out_dim, loss = np.asarray(y, np.float32).reshape(-1), 2, gaussian_nll
    members = []
    for k in tqdm(range(n_members), desc="ensemble", unit="member", disable=not progress):
        keras.utils.set_random_seed(seed + k)  # the member's shuffling; its initialization is seeded in make_member
        member = make_member(x.shape[1], out_dim, hidden, seed=1000 * (seed + k))
        member.compile(optimizer=keras.optimizers.AdamW(lr, weight_decay=weight_decay), loss=loss)
        history = member.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True)
        logger.info("ensemble member %d: final train loss %.4f", k, history.history["loss"][-1])
        members.append(member)
    return DeepEnsemble(members, "categorical" if task == "classification" else "gaussian", dataset=dataset)
