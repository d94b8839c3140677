"""δ-CLUE (K explanations per point, one batch of n * K rows) against plain CLUE, in seconds.

Workloads, each the median of ``--repeats`` timed runs after one warm-up, written to
``benchmarks/results/diverse_speed.json``:

* ``plain``: one CLUE per point (``CLUE.explain``);
* ``restarts``: K CLUEs per point as K sequential runs from perturbed starts (``CLUE.explain_many``), the way to get K
  explanations without δ-CLUE;
* ``diverse``: K δ-CLUEs per point (``CLUE.diverse.DeltaCLUE``, all ``n * K`` rows in one batch), with the
  diversity term (``--diversity-weight``) and without it.

COMPAS (default): a deep ensemble (``BNN.adapters.train_ensemble``: 5 members, 200-200, 40 epochs, seed 0; not
timed) explained with the committed COMPAS VAE on its ``--n-points`` most uncertain test points (reference CLUE
settings: lambda 2, lr 0.1, at most 50 steps, early stopping, batch 256 points).

``--mnist``: the issue's MNIST workload, K = 10 on the 200 most uncertain ``mnist_t10k`` test images with the MNIST
BNN and conv VAE (lambda 4, lr 0.1, 35 steps, batch 128 points), plus a figure of the K δ-CLUEs of the most
uncertain image (``benchmarks/results/diverse_mnist.png``). It needs the MNIST weights: ``--bnn`` (a ``BNN.train
--preset mnist`` run or posterior folder; default the ``bnn_mnist`` weights entry, 192 MB, not committed) and ``--vae``
(a ``VAE.train --dataset mnist_t10k`` run or its ``best/`` folder; default the committed ``vae_mnist`` entry).

Usage::

    OMP_WAIT_POLICY=PASSIVE TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 python benchmarks/diverse_speed.py
    python benchmarks/diverse_speed.py --mnist --bnn runs/bnn_paper/mnist_t10k_s0
    python benchmarks/diverse_speed.py --mnist --dataset mnist --bnn runs/bnn_paper/mnist_s0 \
        --vae runs/paper/vae_mnist_s0 --repeats 1   # the official split: results/diverse_speed_mnist_official.json
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path

import numpy as np
from machine import machine_info

import data
import weights
from BNN.adapters import train_ensemble
from CLUE import generate
from CLUE.diverse import DeltaCLUE, DiverseConfig
from CLUE.explainer import CLUE, CLUEConfig, CLUEWeights
from common.io import save_json
from common.runs import setup_logging
from common.seeding import set_seed

logger = logging.getLogger("benchmarks.diverse_speed")

RESULTS = Path(__file__).resolve().parent / "results"


def _median(run, repeats: int) -> tuple[float, object]:
    out = run()  # warm-up: traces the step functions
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def bench(model, vae, x0: np.ndarray, config: CLUEConfig, k: int, delta: float, weight: float,
          repeats: int) -> dict:
    """Seconds of plain CLUE, K restarts and δ-CLUE on ``x0`` (medians), with each run's mean uncertainty."""
    clue = CLUE(model, vae, config)
    z0 = clue.encode(x0)
    n = len(x0)
    out = {}
    seconds, plain = _median(lambda: clue.explain(x0, z_init=z0), repeats)
    out["plain"] = {"seconds": seconds, "explanations": n, "seconds_per_100_points": 100 * seconds / n,
                    "uncertainty_before": float(plain.uncertainty_before.mean()),
                    "uncertainty_after": float(plain.uncertainty_after.mean())}
    seconds, restarts = _median(lambda: clue.explain_many(x0, k, z_init=z0), repeats)
    out["restarts"] = {"seconds": seconds, "explanations": n * k, "seconds_per_100_points": 100 * seconds / n,
                       "uncertainty_after": float(np.mean([r.uncertainty_after.mean() for r in restarts]))}
    for name, w in (("diverse", weight), ("diverse_no_diversity", 0.0)):
        search = DeltaCLUE(model, vae, DiverseConfig(config, n_explanations=k, delta=delta, diversity_weight=w))
        seconds, sets = _median(lambda s=search: s.explain(x0, z_init=z0), repeats)
        summary = sets.summary()
        out[name] = {"seconds": seconds, "explanations": n * k, "seconds_per_100_points": 100 * seconds / n,
                     "diversity_weight": w, **{key: summary[key] for key in (
                         "uncertainty_after", "uncertainty_best", "l1_distance", "diversity_x", "max_latent_distance")},
                     "n_classes_reached": summary.get("n_classes_reached"),
                     "mean_stop_step": float(sets.stop_step[sets.stop_step > 0].mean()) if sets.stop_step.any()
                     else 0.0}
        out[name]["slowdown_vs_plain"] = seconds / out["plain"]["seconds"]
        out[name]["speedup_vs_restarts"] = out["restarts"]["seconds"] / seconds
        logger.info("%s: %.2f s for %d x %d (plain %.2f s, %d restarts %.2f s)", name, seconds, n, k,
                    out["plain"]["seconds"], k, out["restarts"]["seconds"])
    return out


def compas(args) -> dict:
    ds = data.load("compas")
    set_seed(0)
    start = time.perf_counter()
    ensemble = train_ensemble(ds.x_train, ds.y_train, ds.task, n_members=5, epochs=40, seed=0, dataset="compas")
    train_seconds = time.perf_counter() - start
    vae = weights.load_vae("vae_compas")
    rows = generate.select_uncertain(ensemble, ds.x_test, args.n_points)
    config = CLUEConfig(CLUEWeights.paper(2.0, ds.x_dim), lr=0.1, max_steps=50, batch_size=256)
    settings = (f"ensemble 5 x (17-200-200-2), VAE vae_compas; {len(rows)} most uncertain test points; lambda 2, "
                f"lr 0.1, 50 steps, early stopping, batch 256 points; K={args.k}, delta={args.delta} (L2)")
    return {"settings": settings, "n_points": int(len(rows)), "k": args.k, "ensemble_train_seconds": train_seconds,
            **bench(ensemble, vae, ds.x_test[rows], config, args.k, args.delta, args.diversity_weight, args.repeats)}


def mnist(args) -> dict:
    from BNN.posterior import Posterior
    from VAE.model import load_vae

    if args.bnn is None and not weights.available("bnn_mnist"):
        raise SystemExit("--mnist needs the MNIST BNN: pass --bnn RUN (python -m BNN.train --preset mnist ...) or "
                         "fetch the bnn_mnist weights (python -m weights.download bnn_mnist)")
    if args.vae is None and not weights.available("vae_mnist"):
        raise SystemExit("--mnist needs the MNIST VAE: pass --vae RUN (python -m VAE.train --dataset mnist_t10k ...) "
                         "or restore the committed vae_mnist weights (git checkout weights/vae/mnist)")
    inner = lambda folder, name: Path(folder) / name if (Path(folder) / name).is_dir() else Path(folder)  # noqa: E731
    posterior = weights.load_posterior("bnn_mnist") if args.bnn is None else Posterior.load(inner(args.bnn,
                                                                                                    "posterior"))
    vae = weights.load_vae("vae_mnist") if args.vae is None else load_vae(inner(args.vae, "best"))
    for what, model in (("--bnn", posterior), ("--vae", vae)):
        if getattr(model, "dataset", None) not in (None, args.dataset):
            raise SystemExit(f"{what} was trained on {model.dataset}, not --dataset {args.dataset}")
    ds = data.load(args.dataset)
    rows = generate.select_uncertain(posterior, ds.x_test, args.n_points)
    config = CLUEConfig(CLUEWeights.paper(4.0, ds.x_dim), lr=0.1, max_steps=35, batch_size=128)
    out = {"settings": f"{args.dataset}, {len(rows)} most uncertain test images; lambda 4, lr 0.1, 35 steps, batch 128 "
                       f"points; K={args.k}, delta={args.delta} (L2)", "n_points": int(len(rows)), "k": args.k,
           **bench(posterior, vae, ds.x_test[rows], config, args.k, args.delta, args.diversity_weight, args.repeats)}
    sets = DeltaCLUE(posterior, vae, DiverseConfig(config, n_explanations=args.k, delta=args.delta,
                                                   diversity_weight=args.diversity_weight)).explain(ds.x_test[rows[:1]])
    _figure(sets, RESULTS / ("diverse_mnist.png" if args.dataset == "mnist_t10k" else "diverse_mnist_official.png"))
    return out


def _figure(sets, path: Path) -> None:
    """The image x0 and its K δ-CLUEs, each titled with its predicted class and entropy."""
    from matplotlib.figure import Figure

    k = sets.x.shape[1]
    fig = Figure(figsize=(1.4 * (k + 1), 1.8))
    axes = fig.subplots(1, k + 1)
    panels = [(sets.x0[0], f"x0 y={sets.original_class[0]}\nH={sets.uncertainty_before[0]:.2f}")]
    panels += [(sets.x[0, j], f"y={sets.predicted_class[0, j]}\nH={sets.uncertainty[0, j]:.2f}") for j in range(k)]
    for ax, (img, title) in zip(axes, panels):
        ax.imshow(img.reshape(28, 28), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(title, fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per workload (median reported)")
    parser.add_argument("--n-points", type=int, default=200, help="most uncertain test points explained")
    parser.add_argument("--k", type=int, default=10, help="δ-CLUE explanations per point")
    parser.add_argument("--delta", type=float, default=1.0, help="radius of the L2 latent ball")
    parser.add_argument("--diversity-weight", type=float, default=1.0, help="weight of the diversity term")
    parser.add_argument("--mnist", action="store_true", help="the MNIST workload (BNN and conv VAE)")
    parser.add_argument("--bnn", default=None, help="--mnist: BNN.train run or posterior folder (default: bnn_mnist)")
    parser.add_argument("--vae", default=None, help="--mnist: VAE.train run or best/ folder (default: vae_mnist)")
    parser.add_argument("--dataset", default="mnist_t10k", choices=("mnist_t10k", "mnist"),
                        help="--mnist: the split (mnist: the official one; pass its --bnn and --vae runs)")
    parser.add_argument("--out", default=None, help="JSON output path (default results/diverse_speed[_mnist].json)")
    args = parser.parse_args(argv)
    result = {"machine": machine_info(), "repeats": args.repeats,
              ("mnist" if args.mnist else "compas"): (mnist if args.mnist else compas)(args)}
    suffix = "" if args.dataset == "mnist_t10k" else "_official"
    save_json(args.out or RESULTS / (f"diverse_speed_mnist{suffix}.json" if args.mnist else "diverse_speed.json"),
              result)
    return result


if __name__ == "__main__":
    setup_logging()
    main()
