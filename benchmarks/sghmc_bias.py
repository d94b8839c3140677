"""The scale-adapted SG-HMC sampler's variance shortfall on Bayesian linear regression, measured and predicted.

The target is the analytic posterior of y = X w + N(0, noise^2) under a fixed prior w ~ N(0, prior_sigma^2 I)
(the sampler's Gibbs step for the prior precision is off, so the target is exactly Gaussian):
``Sigma = (X^T X / noise^2 + I / prior_sigma^2)^-1``. K independent chains start at exact posterior draws. V (the
preconditioner's gradient second moment) is fixed at E[d^2] = diag(H) + diag(gradient-noise covariance), the value
burn-in adaptation aims at, or (``adapt`` rows) adapted by a burn-in from 1 as in training, which leaves each chain a
noisy V. Then they sample with V frozen; every step after a discarded warm-up enters each chain's second moment
about the analytic mean. The ratio reported is that
moment over ``diag(Sigma)``, averaged over chains and dimensions; its standard error comes from the spread over
the independent chains.

Engines (the same problem and schedule):
  tf      ``BNN/sghmc.py`` (``ScaleAdaptedSGHMC.apply``; the gradient clipper is left out: it never fires here and
          would couple the chains, which share one variable), float32.
  numpy   the update equations of the spec (reference-spec-clue.md 2.2, steps 2-8) written out in float64.
  torch   the original ``H_SA_SGHMC.step`` as the spec gives it (the code of
          ``experiments/diagnostics/bnn_lsat_torch_port.py``), float32; needs torch.
Rows vary the step size, the momentum resampling (every 10 steps as in training, or never), the ``- lr^4`` term of
the injected noise (``correction``; ``SGHMCParams(noise_correction=False)``) and the minibatch size.

Prediction: with V frozen the sampler is a linear recurrence in (w, v),
``v' = (1 - C) v - lr^2 M^-1 (H (w - mu) + xi) + eta,  w' = w + v'``, eta ~ N(0, 2 lr^2 M^-1 C - lr^4), xi the
minibatch-gradient noise (its covariance measured at the posterior mean). Its stationary covariance, averaged over
the resampling period, is computed exactly from each chain's final V (``predicted_ratio``); ``first_order_ratio``
is ``1 - lr^2 (V - B) / (2 C sqrt(V))`` (B the gradient-noise variance; ``sqrt(V)`` for full batches), the loss of
injected noise alone.

Run (writes, or updates engine by engine, ``benchmarks/results/sghmc_bias.json``):
    OMP_WAIT_POLICY=PASSIVE python benchmarks/sghmc_bias.py --engines tf,numpy
    python benchmarks/sghmc_bias.py --engines torch      # with a Python that has torch (and numpy)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

EPS = 1e-6  # the sampler's epsilon (spec 2.2)


@dataclass(frozen=True)
class Problem:
    n: int = 625
    dim: int = 4
    noise: float = 0.5  # with n: diag(H) = n / noise^2 = 2500, so sqrt(V) ~ 50-100 and lr 1e-2 loses ~10%
    prior_sigma: float = 1.0
    correlation: float = 0.0  # between the columns of X (0: a near-diagonal H; see BNN/README.md on correlated noise)
    seed: int = 0

    def build(self):
        rng = np.random.RandomState(self.seed)
        cov_x = np.full((self.dim, self.dim), self.correlation) + (1 - self.correlation) * np.eye(self.dim)
        x = rng.randn(self.n, self.dim) @ np.linalg.cholesky(cov_x).T
        w_true = rng.randn(self.dim)
        y = x @ w_true + self.noise * rng.randn(self.n)
        h = x.T @ x / self.noise**2 + np.eye(self.dim) / self.prior_sigma**2  # Hessian of U
        cov = np.linalg.inv(h)
        mean = cov @ x.T @ y / self.noise**2
        return x.astype(np.float32), y.astype(np.float32), mean, cov, h

    def start(self, chains: int, seed: int) -> np.ndarray:
        """Exact posterior draws ``[chains, dim]``: the chains start in the target, so burn-in adapts V to it."""
        _, _, mean, cov, _ = self.build()
        rng = np.random.RandomState(1000 + seed)
        return mean + rng.randn(chains, self.dim) @ np.linalg.cholesky(cov).T


@dataclass(frozen=True)
class Run:
    lr: float
    batch: int = 0  # 0: full-batch gradients
    resample_every: int = 10  # momentum resampling period (0: never); 10 is the training schedule
    correction: bool = True  # the original's - lr^4
    adapt: bool = False  # burn-in adapts V from 1 (as in training); False: V fixed at E[d^2], where adaptation aims
    chains: int = 128
    burn_in: int = 3000  # adaptation steps at lr 1e-2 (adapt only); scaled by 1e-2 / lr
    steps: int = 8000  # sampling steps at lr 1e-2, the first 10% discarded; scaled by 1e-2 / lr
    base_c: float = 0.05
    seed: int = 0

    def schedule(self) -> tuple[int, int, int]:
        scale = max(1.0, 1e-2 / self.lr)
        burn, steps = int(self.burn_in * scale) if self.adapt else 0, int(self.steps * scale)
        return burn, steps // 10, steps

    def v_start(self, problem: Problem) -> np.ndarray:
        """V before sampling: 1 when burn-in adapts it, else E[d^2] = diag(H) + diag(gradient-noise covariance)."""
        if self.adapt:
            return np.ones(problem.dim)
        return np.diag(problem.build()[4]) + np.diag(gradient_noise_cov(problem, self.batch))


def _grad_fn_np(x, y, noise, batch, rng):
    n = len(x)

    def grad(w):  # w [K, d] -> d(N * mean NLL)/dw, [K, d]
        if not batch:
            return ((w @ x.T - y) @ x) / noise**2
        idx = rng.randint(0, n, size=(w.shape[0], batch))
        xb, yb = x[idx], y[idx]  # [K, B, d], [K, B]
        r = np.einsum("kbd,kd->kb", xb, w) - yb
        return (n / batch) * np.einsum("kb,kbd->kd", r, xb) / noise**2

    return grad


def run_numpy(problem: Problem, run: Run) -> dict:
    """The spec's steps 2-8 (fixed prior precision, no clipping) in float64, chains along axis 0."""
    x, y, mean, _, _ = problem.build()
    x, y = x.astype(np.float64), y.astype(np.float64)
    rng = np.random.RandomState(run.seed)
    grad = _grad_fn_np(x, y, problem.noise, run.batch, rng)
    k, d, lr, c = run.chains, problem.dim, run.lr, run.base_c
    lam = 1.0 / problem.prior_sigma**2
    w, v = problem.start(k, run.seed), np.zeros((k, d))
    tau, g, vh = np.ones((k, d)), np.ones((k, d)), np.tile(run.v_start(problem), (k, 1))
    burn, warm, steps = run.schedule()
    s1, s2, count = np.zeros((k, d)), np.zeros((k, d)), 0
    for t in range(burn + steps):
        dp = grad(w) + lam * w
        if t < burn:
            tau = tau - tau * g**2 / (vh + EPS) + 1.0
            r = 1.0 / (tau + EPS)
            g = g - r * g + r * dp
            vh = vh - r * vh + r * dp**2
        m_inv = 1.0 / (np.sqrt(vh) + EPS)
        if run.resample_every and t % run.resample_every == 0:
            v = lr * np.sqrt(m_inv) * rng.randn(k, d)
        var = np.maximum(2.0 * lr**2 * m_inv * c - (lr**4 if run.correction else 0.0), 1e-16)
        v = v - lr**2 * m_inv * dp - c * v + np.sqrt(var) * rng.randn(k, d)
        w = w + v
        if t >= burn + warm:
            s1 += w - mean
            s2 += (w - mean) ** 2
            count += 1
    return {"first": s1 / count, "second": s2 / count, "v_hat": vh}


def run_torch(problem: Problem, run: Run) -> dict:
    """The original ``H_SA_SGHMC.step`` (spec 2.2) as written in torch, float32, with a fixed prior precision."""
    import torch

    torch.manual_seed(run.seed)
    x, y, mean, _, _ = problem.build()
    xt, yt = torch.tensor(x), torch.tensor(y)
    k, d, lr, base_c = run.chains, problem.dim, run.lr, run.base_c
    q = torch.tensor(problem.start(k, run.seed), dtype=torch.float32)
    st = {"tau": torch.ones_like(q), "g": torch.ones_like(q), "v": torch.zeros_like(q),
          "V": torch.tensor(np.tile(run.v_start(problem), (k, 1)), dtype=torch.float32),
          "wd": 1.0 / problem.prior_sigma**2}
    n = len(x)
    burn, warm, steps = run.schedule()
    mean_t = torch.tensor(mean, dtype=torch.float32)
    s1, s2, count = torch.zeros(k, d, dtype=torch.float64), torch.zeros(k, d, dtype=torch.float64), 0
    with torch.no_grad():
        for it in range(burn + steps):
            if run.batch:
                idx = torch.randint(0, n, (k, run.batch))
                xb, yb = xt[idx], yt[idx]
                r = torch.einsum("kbd,kd->kb", xb, q) - yb
                d_p = (n / run.batch) * torch.einsum("kb,kbd->kd", r, xb) / problem.noise**2
            else:
                d_p = ((q @ xt.T - yt) @ xt) / problem.noise**2
            tau, g, V = st["tau"], st["g"], st["V"]
            d_p.add_(q, alpha=st["wd"])
            if it < burn:
                tau.add_(-tau * (g**2) / (V + EPS) + 1)
                tau_inv = 1.0 / (tau + EPS)
                g.add_(-tau_inv * g + tau_inv * d_p)
                V.add_(-tau_inv * V + tau_inv * (d_p**2))
            v_inv_sqrt = 1.0 / (torch.sqrt(V) + EPS)
            if run.resample_every and it % run.resample_every == 0:
                st["v"] = torch.normal(mean=torch.zeros_like(d_p), std=torch.sqrt((lr**2) * v_inv_sqrt))
            v = st["v"]
            correction = lr**4 if run.correction else 0.0
            noise_std = torch.sqrt(torch.clamp(2.0 * (lr**2) * v_inv_sqrt * base_c - correction, min=1e-16))
            noise = torch.normal(mean=torch.zeros_like(d_p), std=torch.ones_like(d_p) * noise_std)
            v.add_(-(lr**2) * v_inv_sqrt * d_p - base_c * v + noise)
            q.add_(v)
            if it >= burn + warm:
                dev = (q - mean_t).double()
                s1 += dev
                s2 += dev**2
                count += 1
    return {"first": (s1 / count).numpy(), "second": (s2 / count).numpy(), "v_hat": st["V"].double().numpy()}


def run_tf(problem: Problem, run: Run) -> dict:
    """``BNN/sghmc.py``: K chains as one ``[K, d]`` variable (every update is elementwise; the prior is fixed)."""
    import tensorflow as tf

    from BNN.sghmc import ScaleAdaptedSGHMC, SGHMCParams

    x, y, mean, _, _ = problem.build()
    w = tf.Variable(tf.constant(problem.start(run.chains, run.seed), tf.float32))
    sampler = ScaleAdaptedSGHMC([w], SGHMCParams(lr=run.lr, base_c=run.base_c, prior_sigma=problem.prior_sigma,
                                                 noise_correction=run.correction), seed=run.seed)
    sampler.v_hat[0].assign(tf.constant(np.tile(run.v_start(problem), (run.chains, 1)), tf.float32))
    xt, yt, mean_t = tf.constant(x), tf.constant(y), tf.constant(mean, tf.float32)
    n, noise2 = len(x), problem.noise**2

    def grad():
        if not run.batch:
            return tf.matmul(tf.matmul(w, xt, transpose_b=True) - yt, xt) / noise2
        idx = sampler.rng.uniform([run.chains, run.batch], 0, n, dtype=tf.int32)
        xb, yb = tf.gather(xt, idx), tf.gather(yt, idx)
        r = tf.einsum("kbd,kd->kb", xb, w) - yb
        return (n / run.batch) * tf.einsum("kb,kbd->kd", r, xb) / noise2

    @tf.function
    def loop(n_steps, burn_in, record):
        s1 = tf.zeros_like(w, tf.float64)
        s2 = tf.zeros_like(w, tf.float64)
        for t in tf.range(n_steps):
            resample = (t % run.resample_every == 0) if run.resample_every else False
            sampler.apply([grad()], burn_in, resample, False)
            if record:
                dev = tf.cast(w - mean_t, tf.float64)
                s1 += dev
                s2 += dev**2
        return s1, s2

    burn, warm, steps = run.schedule()
    if burn:
        loop(tf.constant(burn), tf.constant(True), False)
    loop(tf.constant(warm), tf.constant(False), False)
    s1, s2 = loop(tf.constant(steps - warm), tf.constant(False), True)
    count = steps - warm
    return {"first": s1.numpy() / count, "second": s2.numpy() / count, "v_hat": sampler.v_hat[0].numpy()}


ENGINES = {"tf": run_tf, "numpy": run_numpy, "torch": run_torch}


def gradient_noise_cov(problem: Problem, batch: int, n_draws: int = 20000, seed: int = 1) -> np.ndarray:
    """Covariance of the minibatch estimate of the NLL gradient at the posterior mean (0 for full batches)."""
    x, y, mean, _, _ = problem.build()
    if not batch:
        return np.zeros((problem.dim, problem.dim))
    x, y = x.astype(np.float64), y.astype(np.float64)
    per_row = (x @ mean - y)[:, None] * x / problem.noise**2  # [N, d]
    rng = np.random.RandomState(seed)
    idx = rng.randint(0, len(x), size=(n_draws, batch))
    est = len(x) * per_row[idx].mean(axis=1)
    return np.cov(est.T)


def predicted_variance(h: np.ndarray, v_hat: np.ndarray, lr: float, c: float, resample_every: int,
                       correction: bool, grad_cov: np.ndarray, first_kick: float = 1.0) -> np.ndarray:
    """Exact stationary ``diag Cov(w)`` of the frozen-V recurrence for one chain, averaged over the resampling period.

    State s = (w, v): ``s' = A s + noise``, ``A = [[I - P H, (1 - C) I], [-P H, (1 - C) I]]`` with ``P = lr^2 M^-1``;
    the noise ``e = eta - P xi`` enters v and w alike. Momentum resampling sets v ~ N(0, lr^2 M^-1), independent of w.
    ``first_kick`` scales the gradient step right after a resampling (0.5: a leapfrog-style half kick; not what
    the sampler does, only for the explanation).
    """
    d = len(v_hat)
    m_inv = 1.0 / (np.sqrt(v_hat) + EPS)
    p = lr**2 * np.diag(m_inv)
    eye = np.eye(d)
    a = np.block([[eye - p @ h, (1 - c) * eye], [-p @ h, (1 - c) * eye]])
    a_first = np.block([[eye - first_kick * p @ h, (1 - c) * eye], [-first_kick * p @ h, (1 - c) * eye]])
    q_eta = np.diag(np.maximum(2 * lr**2 * m_inv * c - (lr**4 if correction else 0.0), 1e-16))
    q_v = q_eta + p @ grad_cov @ p
    q = np.block([[q_v, q_v], [q_v, q_v]])
    if not resample_every:
        n = 2 * d
        vec = np.linalg.solve(np.eye(n * n) - np.kron(a, a), q.reshape(-1))
        return np.diag(vec.reshape(n, n))[:d]
    # One resampling period maps Cov(w) affinely (v is redrawn independently of w): solve for its fixed point.
    reset_v = np.diag(lr**2 * m_inv)
    zero = np.zeros((d, d))

    def period(cov_w):
        s = np.block([[cov_w, zero], [zero, reset_v]])
        acc = np.zeros(d)
        for k in range(resample_every):
            step = a_first if k == 0 else a
            s = step @ s @ step.T + q
            acc += np.diag(s)[:d]
        return s[:d, :d], acc

    offset, acc0 = period(zero)
    basis = [np.outer(np.eye(d)[i], np.eye(d)[j]) for i in range(d) for j in range(d)]
    linear = np.stack([(period(b)[0] - offset).ravel() for b in basis], axis=1)  # [d*d, d*d]
    cov_w = np.linalg.solve(np.eye(d * d) - linear, offset.ravel()).reshape(d, d)
    return period(cov_w)[1] / resample_every


def evaluate(problem: Problem, run: Run, engine: str) -> dict:
    _, _, _, cov, h = problem.build()
    start = time.perf_counter()
    out = ENGINES[engine](problem, run)
    seconds = time.perf_counter() - start
    target = np.diag(cov)
    per_chain = out["second"] / target  # [K, d]: second moment about the analytic mean / analytic variance
    grad_cov = gradient_noise_cov(problem, run.batch)
    v_hat = np.asarray(out["v_hat"], np.float64)
    v_rows, inverse = np.unique(v_hat, axis=0, return_inverse=True)  # with V fixed: one row
    preds = np.array([predicted_variance(h, vh, run.lr, run.base_c, run.resample_every, run.correction, grad_cov)
                      for vh in v_rows])[np.ravel(inverse)] / target  # [K, d]
    # A chain whose frozen V makes the recurrence unstable (adapted V can collapse) is counted, not averaged.
    stable = np.all(np.isfinite(per_chain) & (per_chain < 100) & (preds > 0) & (preds < 100), axis=1)
    ratio_dims, chain_means = per_chain[stable].mean(0), per_chain[stable].mean(1)
    sqrt_v = float(np.sqrt(v_hat).mean())
    # The -lr^4 removes lr^4 from the velocity's noise; gradient noise of variance B puts lr^4 B / V back.
    deficit = float(np.mean((v_hat - np.diag(grad_cov)) / np.sqrt(v_hat)))
    return {
        "engine": engine, **asdict(run),
        "variance_ratio": float(ratio_dims.mean()),
        "variance_ratio_se": float(chain_means.std(ddof=1) / np.sqrt(len(chain_means))),
        "variance_ratio_per_dim": [float(r) for r in ratio_dims],
        "variance_ratio_median_chain": float(np.median(chain_means)),
        "predicted_ratio": float(preds[stable].mean()),
        "unstable_chains": int(np.sum(~stable)),
        "first_order_ratio": float(1.0 - run.lr**2 * deficit / (2 * run.base_c)) if run.correction else 1.0,
        "mean_sqrt_v_hat": sqrt_v,
        "sqrt_v_hat_min_max": [float(np.sqrt(np.min(v_hat))), float(np.sqrt(np.max(v_hat)))],
        "mean_error_in_posterior_std": float(np.max(np.abs(out["first"][stable].mean(0)) / np.sqrt(target))),
        "seconds": round(seconds, 2),
    }


def default_runs(quick: bool) -> list[Run]:
    scale = dict(chains=16, steps=2000, burn_in=1000) if quick else {}
    runs = [Run(lr=lr, resample_every=k, **scale) for k in (10, 0) for lr in (2e-2, 1e-2, 5e-3)]  # 10: training
    runs += [Run(lr=1e-2, resample_every=k, correction=False, **scale) for k in (10, 0)]
    runs += [Run(lr=1e-2, resample_every=0, batch=b, **scale) for b in (250, 25)]  # true minibatch noise
    runs += [Run(lr=1e-2, resample_every=k, adapt=True, **scale) for k in (10, 0)]  # V as burn-in leaves it
    return runs


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default="tf,numpy", help="comma-separated: tf, numpy, torch")
    parser.add_argument("--quick", action="store_true", help="fewer chains and steps (a smoke run)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sghmc_bias.json"))
    args = parser.parse_args(argv)
    problem = Problem()
    out_path = Path(args.out)
    record = json.loads(out_path.read_text()) if out_path.exists() else {}
    _, _, _, cov, h = problem.build()
    record.update({
        "what": "SG-HMC marginal-variance ratio (sampled / analytic) on Bayesian linear regression",
        "problem": asdict(problem),
        "posterior_std": [float(s) for s in np.sqrt(np.diag(cov))],
        "sqrt_diag_hessian": [float(s) for s in np.sqrt(np.diag(h))],
    })
    record.pop("command", None)
    for engine in args.engines.split(","):
        record.setdefault("commands", {})[engine] = (
            "OMP_WAIT_POLICY=PASSIVE python benchmarks/sghmc_bias.py --engines " + args.engines
            + (" --quick" if args.quick else ""))
    # Theory alone, one dimension with V = h (the adapted value), lr -> 0 (lr 1e-4) and no -lr^4 term: the
    # variance ratio left by momentum resampling every K steps, with the sampler's full first kick and with a half one.
    h1 = np.array([[float(np.mean(np.diag(h)))]])
    record["theory_resampling"] = [
        {"resample_every": k, "full_kick": float(predicted_variance(h1, h1[0], 1e-4, 0.05, k, False,
                                                                     np.zeros((1, 1)))[0] * h1[0, 0]),
         "half_kick": float(predicted_variance(h1, h1[0], 1e-4, 0.05, k, False, np.zeros((1, 1)), 0.5)[0]
                            * h1[0, 0])}
        for k in (1, 2, 5, 10, 20, 50)]
    results = [r for r in record.get("results", []) if r["engine"] not in args.engines.split(",")]
    for engine in args.engines.split(","):
        for run in default_runs(args.quick):
            row = evaluate(problem, run, engine)
            results.append(row)
            print(json.dumps({k: row[k] for k in ("engine", "lr", "batch", "resample_every", "correction", "adapt",
                                                  "variance_ratio", "variance_ratio_se", "predicted_ratio",
                                                  "first_order_ratio", "unstable_chains", "seconds")}), flush=True)
    record["results"] = results
    for engine in args.engines.split(","):
        record.setdefault("machines", {})[engine] = {"python": platform.python_version(), "machine": platform.machine(),
                                                     "cpus": os.cpu_count()}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(out_path)
    return record


if __name__ == "__main__":
    main()
