"""Convergence diagnostics of SG-HMC chains: split R-hat and effective sample size of the predictive.

:func:`predictive_traces` takes, per kept sample of every chain, the mean test log-likelihood and the predictions on a
probe batch; :func:`convergence` gives split R-hat [1, 2] (``tfp.mcmc.potential_scale_reduction``) and cross-chain ESS
(``tfp.mcmc.effective_sample_size``); :func:`diagnose` warns above R-hat 1.1. With one chain, split R-hat compares its
two halves (settling, not mixing).

References: [1] Gelman & Rubin. Inference from iterative simulation using multiple sequences. Statistical Science, 1992.
[2] Vehtari et al. Rank-normalization, folding, and localization: an improved R-hat. Bayesian Analysis, 2021."""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from BNN.chains import tf_log_level
from BNN.model import Architecture
from BNN.posterior import Posterior

logger = logging.getLogger(__name__)

RHAT_WARNING = 1.1
N_PROBE = 16  # test points whose per-sample predictions enter the diagnostics
MIN_SAMPLES = 4  # per chain: split R-hat needs two halves of at least two samples


def predictive_traces(samples: dict[str, np.ndarray], arch: Architecture, likelihood: str,
                      input_norm: tuple[float, float] | None, x: np.ndarray, y: np.ndarray,
                      n_probe: int = N_PROBE) -> dict[str, np.ndarray]:
    """``test_loglik`` ``[n_kept, K]`` and ``probe`` ``[n_kept, K, P]`` predictions of samples
    ``[K, n_kept, *shape]``."""
    k, s = next(iter(samples.values())).shape[:2]
    pooled = Posterior(arch, likelihood, {n: v.reshape(k * s, *v.shape[2:]) for n, v in samples.items()}, input_norm)
    loglik = []
    probe = None
    for lo in range(0, len(x), 1000):
        out = pooled.forward(x[lo:lo + 1000])  # [K*S, B, out]
        yb = y[lo:lo + 1000]
        if likelihood == "categorical":
            log_p = tf.nn.log_softmax(out, -1)
            labels = tf.broadcast_to(tf.cast(np.reshape(yb, [-1]), tf.int32), tf.shape(out)[:2])
            ll = tf.gather(log_p, labels, batch_dims=2)  # [K*S, B]
            pred = tf.exp(ll)
        else:
            ll = -pooled.likelihood.nll(out, yb)  # the unfloored-sigma difference is irrelevant to the diagnostics
            pred = pooled.likelihood.params(out)[0][..., 0]
        loglik.append(tf.reduce_sum(ll, axis=1).numpy())
        if probe is None:
            probe = pred[:, :n_probe].numpy()
    test_loglik = np.sum(loglik, axis=0) / len(x)
    return {"test_loglik": test_loglik.reshape(k, s).T, "probe": np.swapaxes(probe.reshape(k, s, -1), 0, 1)}


def convergence(traces: dict[str, np.ndarray]) -> dict[str, float]:
    """``diagnostics/rhat/<name>`` and ``diagnostics/ess/<name>`` of traces ``[n_samples, n_chains, ...]``."""
    import tensorflow_probability as tfp  # imported here: loading it takes seconds

    out = {}
    for name, trace in traces.items():
        trace = np.asarray(trace, np.float64)
        if trace.shape[0] < MIN_SAMPLES:
            raise ValueError(f"{name}: split R-hat needs at least {MIN_SAMPLES} samples per chain, got "
                             f"{trace.shape[0]}")
        rhat = tfp.mcmc.potential_scale_reduction(trace, independent_chain_ndims=1, split_chains=True).numpy()
        with tf_log_level(logging.ERROR):  # the FFT autocorrelation casts complex to real: a spurious warning
            if trace.shape[1] > 1:
                ess = tfp.mcmc.effective_sample_size(trace, cross_chain_dims=1).numpy()
            else:  # one chain: its own ESS (cross-chain estimation needs two)
                ess = tfp.mcmc.effective_sample_size(trace[:, 0]).numpy()
        if trace.ndim == 2:
            out[f"diagnostics/rhat/{name}"], out[f"diagnostics/ess/{name}"] = float(rhat), float(ess)
        else:
            # A constant probe prediction (e.g. a saturated p = 1) has no variance: R-hat is NaN there; skip it.
            finite = rhat[np.isfinite(rhat)]
            out[f"diagnostics/rhat/{name}_max"] = float(finite.max()) if finite.size else float("nan")
            out[f"diagnostics/rhat/{name}_median"] = float(np.median(finite)) if finite.size else float("nan")
            out[f"diagnostics/ess/{name}_min"] = float(np.nanmin(ess))
    return out


def diagnose(traces: dict[str, np.ndarray]) -> dict[str, float]:
    """:func:`convergence` with a warning above ``RHAT_WARNING``; ``{}`` below ``MIN_SAMPLES`` samples per chain."""
    s, k = traces["test_loglik"].shape[:2]
    if s < MIN_SAMPLES:
        logger.warning("only %d samples per chain: R-hat and ESS need at least %d; diagnostics skipped", s,
                       MIN_SAMPLES)
        return {}
    metrics = convergence(traces)
    rhats = {m: v for m, v in metrics.items() if m.startswith("diagnostics/rhat/") and np.isfinite(v)}
    if rhats:
        name = max(rhats, key=rhats.get)
        worst, what = rhats[name], name.removeprefix("diagnostics/rhat/")
        if worst > RHAT_WARNING and k > 1:
            logger.warning("split R-hat %.3f (%s) > %.1f: the %d chains disagree (not mixed); run longer or "
                           "check the step size before trusting the pooled posterior", worst, what, RHAT_WARNING, k)
        elif worst > RHAT_WARNING:
            # One chain: split R-hat checks stationarity, not mixing (that needs --chains 2 or more).
            logger.warning("split R-hat %.3f (%s) > %.1f: the first and second halves of the single chain's "
                           "samples disagree (it is still drifting); run longer, or --chains 4 to compare "
                           "independent chains", worst, what, RHAT_WARNING)
    return metrics
