"""Diagnostic: the original's LSAT BNN training (reference-spec-clue.md 2.1-2.5) written in PyTorch from the spec.

What it is: a PyTorch port of the original CLUE code's SG-HMC BNN for LSAT, used to measure the seed-to-seed spread of
the original's own procedure (is its single-run test RMSE 0.8716 / log-lik -1.2815 inside that spread?).

* Model: MLP_gauss(12, 200, 2, 1): Linear-ReLU-Linear-ReLU-Linear(200, 2); mu = out[:, :1],
  sigma = softplus(out[:, 1:]); PyTorch default Linear init.
* Loss (BNN_gauss.fit): -mean_i sum_d log N(y; mu, clamp(sigma, 1e-3)) * N_train, full log-density.
* Clipping (spec 2.3): buffer of pre-clip total grad norms; once it holds more than 100, max_grad = mean + 20 * std
  (population) and the oldest entry is dropped; clip_grad_norm_(max_grad); a norm >= max_grad is removed again.
* H_SA_SGHMC (spec 2.2), per parameter tensor in this order: Gibbs prior draw (numpy gamma, scale 1/beta), d = grad +
  lambda * theta, burn-in adaptation of tau, g, V_hat, preconditioner, momentum resample, noise, momentum and theta
  update.
* Schedule (spec 2.4): 1200 epochs, batch 512 (last batch 24), burn_in 120, a sample after every epoch i >= 120 with
  i % 20 == 0 (54 samples), momentum resampled every 10 iterations, prior every 50 (both at iteration 0).
* RNG stream of the original driver (pytorch-original README): torch.manual_seed(s) and np.random.seed(s), the net is
  built, then BNN_gauss.create_net reseeds torch with 42 (here 42 + s, so that s = 0 is the reference run). Each epoch
  the DataLoader iterator draws its base seed, then RandomSampler draws the seed of a private generator for randperm;
  every 10th epoch (i % 10 == 0) the dev loader's iterator draws one more base seed.
* Evaluation (evaluate_BNN_net_gauss with gmm_sig=True): samples 0..52 (sample_predict's off-by-one drops the last
  saved sample), sigma unclamped; mu = mean_s mu_s, sigma = sqrt(mean sigma^2 + mean mu^2 - mu^2); test RMSE and mean
  Gaussian log-lik in original ZFYA units. Also reported with all 54 samples and with the mean-sigma variant.

Run (needs torch; reads .tmp_bnndiag/lsat.npz = data.load('lsat') x_train, y_train, x_test, y_test, y_mean, y_std):
    OMP_NUM_THREADS=1 python experiments/diagnostics/bnn_lsat_torch_port.py --seed S --out S.json
    python experiments/diagnostics/bnn_lsat_torch_port.py --ref_check .tmp_bnndiag/bnn_samples.npz --out ref.json
--ref_check evaluates the original's saved weight samples (shared/reference/parity/lsat/bnn_samples.npz) with this
evaluation code. With --ref_samples the run also compares its saved samples with the original's, sample by sample.
"""
import argparse
import copy
import json
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--seed", type=int, default=0)
p.add_argument("--epochs", type=int, default=1200)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--data", default=".tmp_bnndiag/lsat.npz")
p.add_argument("--ref_check", default="")
p.add_argument("--ref_samples", default="")
p.add_argument("--out", required=True)
args = p.parse_args()
torch.set_num_threads(args.threads)

d = np.load(args.data)
x_train, y_train = torch.tensor(d["x_train"]), torch.tensor(d["y_train"])
x_test, y_test = torch.tensor(d["x_test"]), torch.tensor(d["y_test"])
Y_MEAN, Y_STD = float(np.asarray(d["y_mean"]).ravel()[0]), float(np.asarray(d["y_std"]).ravel()[0])
N = len(x_train)
BATCH, BURN_IN, SIM_STEPS, N_SAVES, RES_ITS, RES_PRIOR_ITS, NB_ITS_DEV = 512, 120, 20, 100, 10, 50, 10
LR, BASE_C, ALPHA0, BETA0, EPS, GRAD_STD_MUL, SIG_EPS = 1e-2, 0.05, 10.0, 10.0, 1e-6, 20, 1e-3


def build():
    return nn.Sequential(nn.Linear(12, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, 2))


def forward(model, x):
    out = model(x)
    return out[:, :1], F.softplus(out[:, 1:])


def gauss_ll(x, mu, sigma):  # src/utils.diagonal_gauss_loglike
    cte = -0.5 * np.log(2 * np.pi)
    inner = (x - mu) / sigma
    return (cte + -torch.log(sigma) + -0.5 * inner ** 2).sum(dim=1)


EVAL_NET = build()  # built before any seeding, so it takes nothing from the training run's RNG stream


@torch.no_grad()
def evaluate(samples, n_used):
    """evaluate_BNN_net_gauss over the first n_used samples (the original passes len - 1)."""
    mus, sigs = [], []
    for sd in samples[:n_used]:
        EVAL_NET.load_state_dict(sd)
        m, s = zip(*[forward(EVAL_NET, x_test[i:i + BATCH]) for i in range(0, len(x_test), BATCH)])
        mus.append(torch.cat(m))
        sigs.append(torch.cat(s))
    mu_vec, sig_vec = torch.stack(mus), torch.stack(sigs)
    mu = mu_vec.mean(dim=0)
    marg = torch.sqrt((sig_vec ** 2).mean(dim=0) + (mu_vec ** 2).mean(dim=0) - mu ** 2)  # probability.marginal_std
    y_un = y_test * Y_STD + Y_MEAN
    rms = torch.sqrt(((mu * Y_STD + Y_MEAN - y_un) ** 2).sum() / len(y_test))
    ll = gauss_ll(y_un, mu * Y_STD + Y_MEAN, marg * Y_STD).mean()
    ll_mean_sig = gauss_ll(y_un, mu * Y_STD + Y_MEAN, sig_vec.mean(dim=0) * Y_STD).mean()
    return {"n_samples": len(mu_vec), "rmse": float(rms), "ll_gmm_sig": float(ll), "ll_mean_sigma": float(ll_mean_sig)}


def load_ref(path):
    """The original's samples from the parity kit (kernel [in, out] = torch weight transposed) as state dicts."""
    r = np.load(path)
    out = []
    for k in range(r["dense_0/kernel"].shape[0]):
        sd = {}
        for j in range(3):
            sd[f"{2 * j}.weight"] = torch.tensor(np.ascontiguousarray(r[f"dense_{j}/kernel"][k].T))
            sd[f"{2 * j}.bias"] = torch.tensor(r[f"dense_{j}/bias"][k])
        out.append(sd)
    return out


def dump(obj):
    with open(args.out, "w") as f:
        json.dump(obj, f, indent=1)


if args.ref_check:
    ref = load_ref(args.ref_check)
    dump({"ref_check": args.ref_check, "used_53": evaluate(ref, len(ref) - 1), "all_54": evaluate(ref, len(ref))})
    print(open(args.out).read())
    raise SystemExit

# ---- the original's RNG stream: driver seed, build, BNN_gauss.create_net reseed
torch.manual_seed(args.seed)
np.random.seed(args.seed)
model = build()
torch.manual_seed(42 + args.seed)
params = list(model.parameters())
state = [{"tau": torch.ones_like(q), "g": torch.ones_like(q), "V": torch.ones_like(q), "v": torch.zeros_like(q),
          "wd": 1 / 0.1 ** 2} for q in params]
grad_buff, max_grad = [], 1e20


@torch.no_grad()
def sghmc_step(burn_in, resample_momentum, resample_prior):
    for q, st in zip(params, state):
        if resample_prior:
            alpha = ALPHA0 + q.data.nelement() / 2
            beta = BETA0 + (q.data ** 2).sum().item() / 2
            st["wd"] = np.random.gamma(shape=alpha, scale=1 / beta, size=None)
        tau, g, V = st["tau"], st["g"], st["V"]
        d_p = q.grad
        d_p.add_(q.data, alpha=st["wd"])
        if burn_in:
            tau.add_(-tau * (g ** 2) / (V + EPS) + 1)
            tau_inv = 1. / (tau + EPS)
            g.add_(-tau_inv * g + tau_inv * d_p)
            V.add_(-tau_inv * V + tau_inv * (d_p ** 2))
        v_inv_sqrt = 1. / (torch.sqrt(V) + EPS)
        if resample_momentum:
            st["v"] = torch.normal(mean=torch.zeros_like(d_p), std=torch.sqrt((LR ** 2) * v_inv_sqrt))
        v = st["v"]
        noise_std = torch.sqrt(torch.clamp(2. * (LR ** 2) * v_inv_sqrt * BASE_C - (LR ** 4), min=1e-16))
        noise = torch.normal(mean=torch.zeros_like(d_p), std=torch.ones_like(d_p) * noise_std)
        v.add_(-(LR ** 2) * v_inv_sqrt * d_p - BASE_C * v + noise)
        q.data.add_(v)


def fit(xb, yb, burn_in, resample_momentum, resample_prior):
    global max_grad
    for q in params:
        q.grad = None
    mu, sigma = forward(model, xb)
    sigma = sigma.clamp(min=SIG_EPS)
    loss = -gauss_ll(yb, mu, sigma).mean(dim=0) * N
    loss.backward()
    if len(grad_buff) > 100:
        buf = np.array(grad_buff, dtype=np.float32)
        max_grad = np.mean(buf) + GRAD_STD_MUL * np.std(buf)
        grad_buff.pop(0)
    grad_buff.append(float(nn.utils.clip_grad_norm_(params, max_norm=float(max_grad), norm_type=2)))
    clipped = bool(grad_buff[-1] >= max_grad)
    if clipped:
        grad_buff.pop()
    sghmc_step(burn_in, resample_momentum, resample_prior)
    return float(loss.detach()) * len(xb) / N, clipped


def draw_base_seed():  # _BaseDataLoaderIter.__init__
    torch.empty((), dtype=torch.int64).random_()


samples, result = [], {"seed": args.seed, "torch_init_seed": args.seed, "np_seed": args.seed,
                       "torch_sampler_seed": 42 + args.seed, "threads": args.threads, "epochs": args.epochs}
it_count, n_clipped, t0 = 0, 0, time.time()
for i in range(args.epochs):
    draw_base_seed()
    gen = torch.Generator()
    gen.manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))  # RandomSampler.__iter__
    perm = torch.randperm(N, generator=gen)
    cost = 0.0
    for b in range(0, N, BATCH):
        idx = perm[b:b + BATCH]
        c, clipped = fit(x_train[idx], y_train[idx], i % 10_000_000 < BURN_IN, it_count % RES_ITS == 0,
                         it_count % RES_PRIOR_ITS == 0)
        cost += c
        n_clipped += clipped
        it_count += 1
    if i >= BURN_IN and i % SIM_STEPS == 0:
        if len(samples) >= N_SAVES:
            samples.pop(0)
        samples.append(copy.deepcopy(model.state_dict()))
    if i % NB_ITS_DEV == 0:
        draw_base_seed()  # dev loader iterator (the dev metrics themselves use no RNG)
    if i % 100 == 0 or i == args.epochs - 1:
        el = time.time() - t0
        print(json.dumps({"epoch": i, "train_nll": cost / N, "n_samples": len(samples), "n_clipped": n_clipped,
                          "wall_s": round(el, 1)}), flush=True)
        result.update(epochs_done=i + 1, wall_s=el, s_per_epoch=el / (i + 1), n_clipped=n_clipped,
                      n_samples_saved=len(samples))
        if len(samples) >= 2:
            result["used_S_minus_1"] = evaluate(samples, len(samples) - 1)
            result["all_S"] = evaluate(samples, len(samples))
        dump(result)

if args.ref_samples:
    ref = load_ref(args.ref_samples)
    cmp = []
    for k in (0, 1, 5, len(samples) - 1):
        if k < min(len(ref), len(samples)):
            diff = max(float((samples[k][n] - ref[k][n]).abs().max()) for n in ref[k])
            scale = max(float(ref[k][n].abs().max()) for n in ref[k])
            cmp.append({"sample": k, "max_abs_param_diff": diff, "max_abs_ref_param": scale})
    result["vs_reference_samples"] = cmp
    result["reference_eval_53"] = evaluate(ref, len(ref) - 1)
dump(result)
print(json.dumps(result), flush=True)
assert math.isfinite(result.get("used_S_minus_1", {}).get("rmse", 0.0))
