"""Diagnostic: the LSAT gauss_cat VAE training of reference-spec 4.2/4.3/4.5/4.8/4.10 written in PyTorch from the spec.

--stream original: mimic the original's RNG stream (seed 42 before building the net, DataLoader base-seed draw then
RandomSampler seed draw per loader iteration, rsample noise per batch).
"""
import argparse
import json
import math
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--seed", type=int, default=42)
p.add_argument("--epochs", type=int, default=150)
p.add_argument("--order", default="enc_dec")
p.add_argument("--out", required=True)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--biased_bn", type=int, default=0)
args = p.parse_args()
torch.set_num_threads(args.threads)

d = np.load(".tmp_vaediag/lsat.npz")
x_train, x_test = torch.tensor(d["x_train"]), torch.tensor(d["x_test"])
VEC = [1, 1, 8, 2]
D, W, L = 12, 300, 4


class BN(nn.BatchNorm1d):
    """BatchNorm1d; with biased_bn the running variance is updated with the biased batch variance (Keras)."""

    def forward(self, x):
        if not (self.training and args.biased_bn):
            return super().forward(x)
        mean, var = x.mean(0), x.var(0, unbiased=False)
        with torch.no_grad():
            self.running_mean.mul_(0.9).add_(0.1 * mean)
            self.running_var.mul_(0.9).add_(0.1 * var)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


class Preact(nn.Module):
    def __init__(self, w):
        super().__init__()
        self.bn = BN(w)
        self.lin = nn.Linear(w, w)

    def forward(self, x):
        return x + self.lin(self.bn(F.leaky_relu(x, 0.01)))


def encoder():
    return nn.Sequential(nn.Linear(D, W), Preact(W), Preact(W), nn.LeakyReLU(0.01), BN(W), nn.Linear(W, 2 * L))


def decoder():
    return nn.Sequential(nn.Linear(L, W), nn.LeakyReLU(0.01), BN(W), Preact(W), Preact(W), nn.Linear(W, D))


torch.manual_seed(args.seed)
if args.order == "enc_dec":
    enc = encoder()
    dec = decoder()
else:
    dec = decoder()
    enc = encoder()
params = list(enc.parameters()) + list(dec.parameters())


class RAdam:
    def __init__(self, params, lr=1e-4, b1=0.9, b2=0.999, eps=1e-8):
        self.params, self.lr, self.b1, self.b2, self.eps, self.t = params, lr, b1, b2, eps, 0
        self.m = [torch.zeros_like(q) for q in params]
        self.v = [torch.zeros_like(q) for q in params]

    @torch.no_grad()
    def step(self):
        self.t += 1
        t, b1, b2 = self.t, self.b1, self.b2
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
        for q, m, v in zip(self.params, self.m, self.v):
            g = q.grad
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            m.mul_(b1).add_(g, alpha=1 - b1)
            if rho_t >= 5:
                step = math.sqrt((1 - b2 ** t) * (rho_t - 4) * (rho_t - 2) * rho_inf
                                 / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) / (1 - b1 ** t)
                q.addcdiv_(m, v.sqrt().add_(self.eps), value=-step * self.lr)
            else:
                q.add_(m, alpha=-self.lr / (1 - b1 ** t))


opt = RAdam(params)
targets = [(s, k) for s, k in zip(np.cumsum([0] + VEC[:-1]), VEC)]


def terms(x, train):
    enc.train(train)
    dec.train(train)
    h = enc(x)
    loc, scale = h[:, :L], F.softplus(h[:, L:]).clamp(min=1e-3)
    z = loc + scale * torch.empty(loc.shape).normal_() if train else loc  # rsample draws _standard_normal(shape)
    out = dec(z)
    rec = 0
    for s, k in targets:
        if k == 1:
            rec = rec - (out[:, s] - x[:, s]) ** 2
        else:
            rec = rec - F.cross_entropy(out[:, s:s + k], x[:, s:s + k].argmax(1), reduction="none")
    kl = (0.5 * (scale ** 2 + loc ** 2 - 1) - torch.log(scale)).sum(1)
    return rec, kl


def draw_base_seed():  # _BaseDataLoaderIter.__init__
    torch.empty((), dtype=torch.int64).random_()


log = []
t0 = time.time()
N = len(x_train)
for epoch in range(args.epochs):
    draw_base_seed()
    seed = int(torch.empty((), dtype=torch.int64).random_().item())
    g = torch.Generator()
    g.manual_seed(seed)
    perm = torch.randperm(N, generator=g)
    tot = 0.0
    for i in range(0, N, 128):
        xb = x_train[perm[i:i + 128]]
        rec, kl = terms(xb, True)
        vlb = rec - kl
        loss = -(vlb * (1 / len(VEC))).mean()
        for q in params:
            q.grad = None
        loss.backward()
        opt.step()
        tot += float(vlb.mean()) * len(xb)
    draw_base_seed()  # val loader iterator
    with torch.no_grad():
        rec, kl = terms(x_test, False)
    row = {"epoch": epoch, "train_elbo": tot / N, "test_elbo": float((rec - kl).mean()),
           "test_rec": float(rec.mean()), "test_kl": float(kl.mean())}
    log.append(row)
    print(json.dumps(row), flush=True)
best = max(log, key=lambda r: r["test_elbo"])
res = {"args": vars(args), "best": best, "last": log[-1], "log": log, "wall": time.time() - t0}
json.dump(res, open(args.out, "w"))
print("BEST", json.dumps(best), "LAST", json.dumps(log[-1]), file=sys.stderr)
