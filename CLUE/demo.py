"""``make demo``: the whole pipeline on one dataset, offline, in a few minutes on a laptop CPU.

``BNN.train`` (SG-HMC), ``VAE.train``, then ``CLUE.generate`` on the 16 most uncertain test points, with shortened
schedules (the full ones: each script's ``--preset paper``). Default dataset: scikit-learn's bundled 8x8 digits;
``--dataset lsat`` (compas, credit, wine) needs the data files (``CLUE_DATA_DIR``). Reruns resume.

Usage::

    python -m CLUE.demo [--dataset lsat --out runs/demo_lsat]
"""

from __future__ import annotations

import common.cli  # isort: skip  (first: quiets TensorFlow's start-up, see common.cli)
import argparse
import logging
import sys
import time
from pathlib import Path

from BNN import train as bnn_train
from CLUE import generate
from common.config import with_preset
from common.runs import overwriting
from VAE import train as vae_train

logger = logging.getLogger(__name__)

# shortened schedules for digits (1,437 images) and the tabular sets
BNN_DEMO = {
    "digits": {"n_epochs": 150, "batch_size": 128, "burn_in": 30, "save_every": 2, "n_saves": 50},
    "tabular": {"n_epochs": 200, "burn_in": 80, "save_every": 4, "n_saves": 30},
}
VAE_DEMO = {"digits": {"max_epochs": 150}, "tabular": {"max_epochs": 30}}
CLUE_DEMO = {"digits": {"lam": 10.0}, "tabular": {"lam": 2.0}}  # lambda / D weights the L1 distance
TINY = {  # seconds, for the test suite
    "bnn": {"n_epochs": 4, "burn_in": 1, "save_every": 1, "n_saves": 3, "width": 16},
    "vae": {"max_epochs": 2, "width": 16, "depth": 2},
    "clue": {"max_steps": 6},
}


def run(dataset: str = "digits", out: str | Path = "runs/demo", n_explain: int = 16, tiny: bool = False,
        seed: int = 0, progress: bool = True) -> dict:
    """Trains both models and explains ``n_explain`` points; returns the CLUE summary (with output paths)."""
    out = Path(out)
    kind = "digits" if dataset == "digits" else "tabular"
    bnn_overrides = TINY["bnn"] if tiny else BNN_DEMO[kind]
    vae_overrides = TINY["vae"] if tiny else VAE_DEMO[kind]
    clue_overrides = {**CLUE_DEMO[kind], **(TINY["clue"] if tiny else {})}
    start = time.perf_counter()
    logger.info("1/3 BNN with SG-HMC on %s", dataset)
    bnn_metrics = bnn_train.main(with_preset(bnn_train.Config, bnn_train.PRESETS, "paper", dataset=dataset,
                                             seed=seed, out=str(out / "bnn"), progress=progress, **bnn_overrides))
    logger.info("2/3 VAE on %s", dataset)
    vae_metrics = vae_train.main(with_preset(vae_train.Config, vae_train.PRESETS, "paper", dataset=dataset,
                                             seed=seed, out=str(out / "vae"), progress=progress, **vae_overrides))
    logger.info("3/3 CLUE on the %d most uncertain test points", n_explain)
    summary = generate.main(with_preset(generate.Config, generate.PRESETS, "paper", dataset=dataset, seed=seed,
                                        bnn=str(out / "bnn"), vae=str(out / "vae"), out=str(out / "clue"),
                                        n_explain=n_explain, progress=progress, **clue_overrides))
    figure = out / "clue" / ("clues.png" if dataset in ("digits", "mnist", "mnist_t10k") else "changes.csv")
    return {**summary, "bnn_metrics": bnn_metrics, "vae_metrics": vae_metrics, "figure": str(figure),
            "summary_path": str(out / "clue" / "summary.json"), "total_seconds": time.perf_counter() - start}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m CLUE.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="digits", help="digits (offline), lsat, compas, credit or wine")
    parser.add_argument("--out", default=None, help="output folder (default runs/demo_<dataset>)")
    parser.add_argument("--n-explain", type=int, default=16, help="most uncertain test points to explain")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="seconds-long schedules (smoke test)")
    common.cli.add_common_flags(parser)
    args = parser.parse_args(argv)
    with overwriting(args.overwrite):
        result = run(args.dataset, args.out or f"runs/demo_{args.dataset}", args.n_explain, args.tiny, args.seed)
    unit = result["uncertainty_unit"]
    print(f"\nCLUE demo on {args.dataset} finished in {result['total_seconds']:.0f} s")
    tests = {k: round(v, 4) for k, v in result["bnn_metrics"].items() if k.startswith("test/")}
    print(f"  BNN test metrics: {tests}")
    print(f"  VAE test ELBO:    {result['vae_metrics']['test/elbo']:.3f}")
    print(f"  explained {result['n_explained']} most uncertain test points: uncertainty "
          f"{result['uncertainty_before']:.3f} -> {result['uncertainty_after']:.3f} ({unit}), "
          f"mean L1 change {result['l1_distance']:.2f}")
    print(f"  figure:  {result['figure']}")
    print(f"  summary: {result['summary_path']}")
    return result


if __name__ == "__main__":
    common.cli.setup_logging(logging.WARNING)
    common.cli.run(lambda: main(sys.argv[1:]), debug="--debug" in sys.argv[1:], resumable=True)
