"""The contract of every uncertainty model CLUE explains, and the one uncertainty decomposition (spec 3, 5.2).

Models that keep it: ``BNN.posterior.Posterior`` (SG-HMC samples) and the adapters of ``BNN.adapters``
(``DeepEnsemble``, ``MCDropout``, ``DistributionHead``). A Laplace or SWAG posterior would join them by giving the
same three attributes; CLUE, its baselines and the evaluation use nothing else of a model.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import tensorflow as tf

from common.errors import UserError
from common.probability import decompose_entropy_cat, decompose_std_gauss


@runtime_checkable
class Predictive(Protocol):
    """An uncertainty model as CLUE sees it.

    Attributes:
      arch: its inputs, ``arch.input_dim`` (int, or None when unknown) and ``arch.image_shape`` (or None).
      dataset: the ``data.load`` name it was trained on, or None (for error messages).
    """

    arch: Any
    dataset: str | None

    def predict_samples(self, x: tf.Tensor) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
        """S samples of the predictive at ``x [B, D]``, differentiable in ``x``: probabilities ``[S, B, C]``
        (classification) or ``(mu, sigma)``, each ``[S, B]`` (regression)."""


def decompose(out) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Total, aleatoric, epistemic uncertainty ``[B]`` and the predictive mean of ``predict_samples``' output:
    entropies (nats) and mean probabilities ``[B, C]``, or standard deviations and the mean of the means ``[B]``.

    Classification: H[mean_s p_s] = E_s H[p_s] + (H[mean_s p_s] - E_s H[p_s]). Regression:
    Var = E_s sigma_s^2 + Var_s mu_s, reported as standard deviations (Depeweg et al. 2018)."""
    if isinstance(out, (tuple, list)):
        mu, sigma = out
        total, aleatoric, epistemic = decompose_std_gauss(mu, sigma)
        return total, aleatoric, epistemic, tf.reduce_mean(mu, axis=0)
    total, aleatoric, epistemic = decompose_entropy_cat(out)
    return total, aleatoric, epistemic, tf.reduce_mean(out, axis=0)


def uncertainties(model: Predictive, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """:func:`decompose` of ``model.predict_samples(x)``."""
    return decompose(model.predict_samples(x))


def input_spec(model: Predictive, generator=None) -> dict:
    """The inputs of ``model`` (and of ``generator``, a VAE or VAEAC) for :func:`common.validation.check_inputs`:
    ``width``, ``dataset``, ``image_shape``, ``what`` (None where the models do not say); UserError if the model's
    and the generator's widths differ."""
    arch = getattr(model, "arch", None)
    bnn_width = getattr(arch, "input_dim", None)
    gen_width = getattr(generator, "input_dim", None)
    if isinstance(bnn_width, int) and isinstance(gen_width, int) and bnn_width != gen_width:
        raise UserError(f"the BNN takes {bnn_width} input columns but the {type(generator).__name__} {gen_width}: "
                        "they were trained on different datasets; load a BNN and a generator of the same dataset")
    width = bnn_width if isinstance(bnn_width, int) else gen_width if isinstance(gen_width, int) else None
    dataset = getattr(model, "dataset", None) or getattr(generator, "dataset", None)
    return {"width": width, "dataset": dataset if isinstance(dataset, str) else None,
            "image_shape": getattr(arch, "image_shape", None), "what": "this BNN" if bnn_width else "the models"}
