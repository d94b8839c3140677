"""CLUE with our own models trained on the reference settings, beside the PyTorch original's figures.

For each dataset (LSAT, COMPAS, Wine, Credit) and each seed, runs ``CLUE.generate`` (10% most uncertain test
points, lambda 2, lr 0.1, 50 steps, batch 256: the reference run's settings) with the BNN and VAE that ``BNN.train``
and ``VAE.train`` produced with ``--preset paper`` for that seed, then writes the per-seed figures, their mean and
spread, and the original's figures (``../shared/reference/pytorch-original.json``; for Wine and Credit, which the
reference run did not time, the parity kits' CLUE summaries on the original's own models) to
``experiments/results/clue_statistical_parity.json``.

Usage (after training; see the README's "Reproduce" section for the training commands)::

    python experiments/statistical_parity.py --bnn-runs runs/bnn_paper/{dataset}_s{seed} \
        --vae-runs runs/paper/vae_{dataset}_s{seed} --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from CLUE import generate
from common.config import with_preset
from common.io import PROJECT_ROOT, save_json
from common.runs import setup_logging
from VAE.model import load_vae

logger = logging.getLogger("experiments.statistical_parity")

REFERENCE = PROJECT_ROOT.parent / "shared" / "reference" / "pytorch-original.json"
OUT = PROJECT_ROOT / "experiments" / "results" / "clue_statistical_parity.json"


def run_seed(dataset: str, seed: int, bnn_dir: str, vae_dir: str, out_dir: Path) -> dict:
    summary = generate.main(with_preset(generate.Config, generate.PRESETS, "paper", dataset=dataset, bnn=bnn_dir,
                                        vae=vae_dir, out=str(out_dir), seed=0, progress=False))
    with np.load(out_dir / "explanations.npz") as f:
        before, after, x0 = f["uncertainty_before"], f["uncertainty_after"], f["x0"]
    vae = load_vae(Path(vae_dir) / "best")  # the VAE reconstruction alone, for context
    recon = vae.reconstruct(x0)
    recon_l1 = float(np.abs(recon - x0).sum(axis=1).mean())
    return {"seed": seed, "n_explained": summary["n_explained"], "uncertainty_before": float(before.mean()),
            "uncertainty_after": float(after.mean()),
            "relative_reduction": float(((before - after) / before).mean()),
            "relative_reduction_of_means": float((before.mean() - after.mean()) / before.mean()),
            "fraction_reduced": float((after < before).mean()), "l1_distance": summary["l1_distance"],
            "seconds": summary["seconds"], "recon_l1": recon_l1}


def original_figures(dataset: str) -> dict:
    """The original's CLUE figures (:func:`experiments.clues_tabular.original_figures`: the reference run for LSAT
    and COMPAS, the parity kits' runs on the original's own models for Wine and Credit)."""
    from experiments.clues_tabular import original_figures as figures

    return figures(dataset, REFERENCE.parent)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["lsat", "compas"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--bnn-runs", default="runs/bnn_paper/{dataset}_s{seed}", help="BNN.train run folders")
    parser.add_argument("--vae-runs", default="runs/paper/vae_{dataset}_s{seed}", help="VAE.train run folders")
    parser.add_argument("--work", default="runs/statistical_parity", help="CLUE.generate output folders")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    result = {"settings": "10% most uncertain test points, lambda 2, lr 0.1, 50 steps, batch 256, all samples",
              "datasets": {}}
    if Path(args.out).exists():  # datasets not rerun keep their figures
        result["datasets"] = json.loads(Path(args.out).read_text()).get("datasets", {})
    for dataset in args.datasets:
        seeds = []
        for seed in args.seeds:
            fmt = {"dataset": dataset, "seed": seed}
            seeds.append(run_seed(dataset, seed, args.bnn_runs.format(**fmt), args.vae_runs.format(**fmt),
                                  Path(args.work) / f"{dataset}_s{seed}"))
        keys = ("uncertainty_before", "uncertainty_after", "relative_reduction", "relative_reduction_of_means",
                "fraction_reduced", "l1_distance", "recon_l1")
        stats = {k: {"mean": float(np.mean([s[k] for s in seeds])), "std": float(np.std([s[k] for s in seeds]))}
                 for k in keys}
        result["datasets"][dataset] = {"ours_per_seed": seeds, "ours": stats,
                                       "original": original_figures(dataset)}
        logger.info("%s: %s", dataset, {k: round(v["mean"], 4) for k, v in stats.items()})
    save_json(args.out, result)
    return result


if __name__ == "__main__":
    setup_logging()
    main()
