"""A float16 copy of a BNN posterior, offered only if it changes no reported number.

Writes ``<out>/posterior`` (the samples in float16: half the bytes; ``Posterior.load`` computes in float32) and
``<out>/float16_check.json``: the test accuracy and NLL of both copies, the CLUE figures of the ``clues_mnist``
notebook (its settings; the same VAE) with both, each rounded to the precision the READMEs report it at, and
``changes_no_reported_number``. The copy is an extra weights entry beside the float32 one, never instead of it.

Usage::

    python experiments/float16_copy.py --bnn runs/bnn_paper/mnist_s0 --vae runs/paper/vae_mnist_s0 \\
        --dataset mnist --out runs/bnn_paper/mnist_s0_float16
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

import data  # noqa: E402
from BNN.posterior import Posterior, evaluate  # noqa: E402
from common.errors import UserError  # noqa: E402
from common.io import save_json  # noqa: E402
from experiments import clues_mnist as cm  # noqa: E402
from VAE.model import load_vae  # noqa: E402

# the decimals each figure is reported at (README results table, experiments/README.md, the notebook's summary)
REPORTED = {"test/accuracy": 4, "test/nll": 3, "uncertainty_before": 3, "uncertainty_after": 3, "l1_distance": 1,
            "frac_class_changed": 3}


def float16_copy(posterior: Posterior) -> Posterior:
    """The same posterior with every weight sample rounded to float16 (computed in float32 as before)."""
    samples = {k: v.numpy().astype(np.float16) for k, v in posterior.samples.items()}
    return Posterior(posterior.arch, posterior.likelihood_name, samples, posterior.input_norm,
                     dataset=posterior.dataset)


def figures(posterior: Posterior, vae, ds: data.Dataset, n_explain: int) -> dict[str, float]:
    """Test accuracy / NLL and the CLUE summary of the ``n_explain`` most uncertain test images."""
    metrics = {f"test/{k}": v for k, v in evaluate(posterior, ds.x_test, ds.y_test).items()}
    result, rows = cm.explain(ds, posterior, vae, n_explain, lam=4.0, lr=0.1, max_steps=35, batch_size=128)
    summary = cm.summarise(ds, result, rows, posterior, vae)
    return {**metrics, **{k: summary[k] for k in REPORTED if not k.startswith("test/")}}


def compare(full: dict[str, float], half: dict[str, float]) -> dict:
    """Each reported figure of both copies at its reporting precision, and whether any of them differs."""
    rows = {k: {"float32": full[k], "float16": half[k], "decimals": d,
                "same_as_reported": round(full[k], d) == round(half[k], d)} for k, d in REPORTED.items()}
    return {"figures": rows, "changes_no_reported_number": all(r["same_as_reported"] for r in rows.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python experiments/float16_copy.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bnn", required=True, help="BNN.train run or its posterior/ folder")
    parser.add_argument("--vae", required=True, help="VAE.train run or its best/ folder")
    parser.add_argument("--dataset", default="mnist", help="data.load name the models were trained on")
    parser.add_argument("--n-explain", type=int, default=200, help="most uncertain test images explained")
    parser.add_argument("--out", required=True, help="folder for posterior/ (float16) and float16_check.json")
    args = parser.parse_args(argv)
    bnn_path, vae_path = cm._inner(args.bnn, "posterior"), cm._inner(args.vae, "best")
    if bnn_path is None or vae_path is None:
        raise UserError(f"no model in {args.bnn if bnn_path is None else args.vae}: pass a training run's --out")
    posterior = cm._same_dataset(Posterior.load(bnn_path), args.dataset, bnn_path)
    vae = cm._same_dataset(load_vae(vae_path), args.dataset, vae_path)
    ds = data.load(args.dataset)
    half = float16_copy(posterior)
    report = compare(figures(posterior, vae, ds, args.n_explain), figures(half, vae, ds, args.n_explain))
    out = Path(args.out)
    half.save(out / "posterior", dtype="float16")  # its values are float16's already: stored without loss
    save_json(out / "float16_check.json", {"bnn": str(bnn_path), "vae": str(vae_path), "dataset": args.dataset,
                                           "n_explain": args.n_explain, **report})
    print(f"changes no reported number: {report['changes_no_reported_number']}")
    return 0


if __name__ == "__main__":
    import common.cli

    common.cli.run(main)
