"""Diagnostic: the SG-HMC sampler's state in a BNN.train run folder, and where its training NLL blew up.

For each parameter tensor of chain 0's latest checkpoint: |theta|, the burn-in estimates tau and V-hat (frozen after
burn-in, spec 2.2), the share of entries whose tau stayed below 2 (V-hat then averages d^2 over about one step: d
hardly varied, as for the weights of a dead ReLU unit, whose d is the prior term alone) and the largest preconditioner
M^-1 = 1 / (sqrt(V-hat) + eps). Beside it, from ``metrics.csv``: the burn-in length, the last epoch whose mean
training NLL was below ``--bad-nll``, and the first epoch above it.

It writes only its JSON; the run folder is read, never written.

Run:
    python -m BNN.train --preset mnist_paper --seed 0 --out runs/bnn_paper/mnist_s0
    python experiments/diagnostics/sghmc_state.py runs/bnn_paper/mnist_s0 \
        --out experiments/diagnostics/sghmc_state_mnist_paper.json
"""

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from BNN.sghmc import EPS  # noqa: E402
from common.io import save_json  # noqa: E402


def _stats(a: np.ndarray) -> dict:
    a = np.abs(a)
    return {"min": float(a.min()), "median": float(np.median(a)), "max": float(a.max())}


def sampler_state(run: Path) -> dict:
    import tensorflow as tf

    folder = sorted((run / "ckpt").glob("chains_*"))[0]
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(folder)))
    names = reader.get_variable_to_shape_map()

    def get(prefix: str, i: int) -> np.ndarray:
        (name,) = [n for n in names if n.startswith(f"group/sampler/{prefix}/{i}/")]
        return reader.get_tensor(name)

    # the sampler's variables follow the network's order: each layer's kernel, then its bias
    params = sorted((n for n in names if n.startswith("group/params/")),
                    key=lambda n: (n.split("/")[2].split(".")[0], "bias" in n))
    state = {}
    for i, name in enumerate(params):
        tau, v_hat = get("tau", i), get("v_hat", i)
        if tau.shape != reader.get_tensor(name).shape:
            raise ValueError(f"sampler variable {i} has shape {tau.shape}, {name} {reader.get_tensor(name).shape}")
        state[name.split("/")[2]] = {
            "shape": list(tau.shape), "theta": _stats(reader.get_tensor(name)), "tau": _stats(tau),
            "tau_below_2": float(np.mean(tau < 2.0)), "v_hat": _stats(v_hat),
            "max_m_inv": float(1.0 / (np.sqrt(v_hat.min()) + EPS)),
            "prior_precision": float(np.asarray(get("prior_precision", i)).ravel()[0])}
    return {"checkpoint": Path(tf.train.latest_checkpoint(str(folder))).name, "tensors": state}


def blow_up(run: Path, bad_nll: float) -> dict:
    with open(run / "metrics.csv", newline="") as f:
        records = list(csv.DictReader(f))
    rows = [(int(r["epoch"]), float(r["train/nll"])) for r in records]
    evals = {str(r["epoch"]): {k: float(r[k]) for k in ("test_current/nll", "test_current/accuracy")}
             for r in records if r.get("test_current/nll", "nan") not in ("", "nan")}
    bad = [e for e, nll in rows if nll > bad_nll]
    first_bad = bad[0] if bad else None
    good = [e for e, nll in rows if nll <= bad_nll and (first_bad is None or e < first_bad)]
    return {"epochs": len(rows), "bad_nll": bad_nll, "last_good_epoch": good[-1] if good else None,
            "first_bad_epoch": first_bad, "epochs_above": len(bad),
            "train_nll": {str(e): nll for e, nll in rows}, "test_current": evals}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a BNN.train run folder (with ckpt/ and metrics.csv)")
    parser.add_argument("--bad-nll", type=float, default=10.0, help="a mean training NLL above this is a blow-up")
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
    args = parser.parse_args(argv)
    config = json.loads((args.run / "config.json").read_text())
    result = {"run": str(args.run), "burn_in": config["burn_in"], "n_epochs": config["n_epochs"],
              "lr": config["lr"], "dataset": config["dataset"],
              "adapt_while_sampling": config.get("adapt_while_sampling", False), **blow_up(args.run, args.bad_nll),
              "sampler": sampler_state(args.run)}
    save_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
