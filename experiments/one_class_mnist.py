"""One-class MNIST with the ExpVAE of Liu et al. [1]: one model per inlier digit 0-9 and training seed, image-level
AUROC on the whole official test set and the synthetic-anomaly pixel AUROC; resumable.

This is this project's protocol (the official code publishes no MNIST metric, reference-spec-expvae.md section 4):

* **Training.** ``python -m VAE.train``'s ``main`` with ``--model expvae --dataset mnist --inlier-digit d --seed s``
  and the expvae defaults (``train_expVAE.py``: Adam 1e-3, batch 128, 100 epochs, the checkpoint with the lowest
  validation loss on the inlier digit's *test* images, the original's validation set), op determinism on.
  ``--epochs`` overrides the epoch count, ``--max-train`` keeps the first N training images of the digit.
* **Image level.** Every test image scored; the inlier digit is normal (negative), every other digit anomalous
  (positive). Scores (``VAE.attention_eval.image_scores``): the eval-mode negative ELBO ``loss = BCE + KL`` (z = mu),
  the reconstruction error ``bce``, and the max and mean of the raw attention maps (code-faithful, paper formula,
  anomaly attention of Eq. 4 with the aggregate posterior of the digit's training images). The normal test images
  also chose the checkpoint (by their loss only, never seeing an anomaly), as in the original.
* **Pixel level.** ``VAE.attention_eval``'s additive and subtractive synthetic anomalies on the digit's test images
  (``Protocol(inlier_digit=d, outlier_digit=None)``: paste sources are all other digits), pooled and per-image pixel
  AUROC of every map and baseline.
* **Anchor.** Deep SVDD (Ruff et al. [2], Table 1) image AUROC per inlier digit: not Liu et al.'s, and a different
  model family; it says what a one-class method reached on this split.

Layout: ``<out>/digit<d>_s<seed>/`` the training run; ``<results>/digit<d>_s<seed>.json`` its settings, training
metrics and evaluation; ``<results>/summary.json`` the mean and sample sd over seeds of every metric per digit, image
AUROC tables and the anchor; ``--figure`` the per-digit bar chart. A run whose results JSON holds the same settings is
reused; an unfinished training run resumes (``VAE.train``), so the script can be stopped and restarted at will.
Runs on disjoint ``--digits`` can go in parallel processes (then ``--summarize-only`` once at the end).

Usage::

    TF_NUM_INTRAOP_THREADS=1 python experiments/one_class_mnist.py --digits 0 1 2 3 4 5 6 7 8 9 --seeds 0 1 2
    python experiments/one_class_mnist.py --digits 3 --seeds 0 --epochs 1 --max-train 300 --max-images 50 \\
        --dataset mnist_t10k --out /tmp/oc/runs --results /tmp/oc/results --figure /tmp/oc/bars.png   # seconds
    python experiments/one_class_mnist.py --summarize-only

#### References
[1] Liu et al. Towards Visually Explaining Variational Autoencoders. CVPR 2020. arXiv:1911.07389.
[2] Ruff et al. Deep One-Class Classification. ICML 2018.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

import data  # noqa: E402
from common.errors import UserError  # noqa: E402
from common.io import PROJECT_ROOT, jsonable, load_json, save_json  # noqa: E402
from common.runs import setup_logging  # noqa: E402
from experiments.outputs import shown  # noqa: E402
from VAE import train  # noqa: E402
from VAE.attention_eval import EvalData, Protocol, aggregate, evaluate_model, make_eval_data  # noqa: E402
from VAE.expvae import load_expvae  # noqa: E402

logger = logging.getLogger("one_class_mnist")

# Ruff et al. (ICML 2018), Table 1, one-class Deep SVDD, image AUROC in % per inlier digit (spec Part 2, P2.5)
DEEP_SVDD = {0: 98.0, 1: 99.7, 2: 91.7, 3: 91.9, 4: 94.9, 5: 88.5, 6: 98.3, 7: 94.6, 8: 93.9, 9: 96.5}
RUNS = PROJECT_ROOT / "runs" / "one_class_mnist"
RESULTS = PROJECT_ROOT / "experiments" / "results" / "one_class_mnist"
FIGURE = PROJECT_ROOT / "experiments" / "figures" / "one_class_mnist.png"
TRAIN_KEYS = ("test/loss", "test/bce", "test/kl", "best_epoch", "epochs_run", "seconds_per_epoch")
FIGURE_SCORES = ("loss", "bce", "attention_anomaly_mean")
SCORE_LABELS = {"loss": "negative ELBO", "bce": "reconstruction BCE", "attention_code_mean": "code map (mean)",
                "attention_paper_mean": "paper map (mean)", "attention_anomaly_mean": "anomaly attention (mean)",
                "attention_code_max": "code map (max)", "attention_paper_max": "paper map (max)",
                "attention_anomaly_max": "anomaly attention (max)"}


def run_name(digit: int, seed: int) -> str:
    return f"digit{digit}_s{seed}"


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """What a run's results depend on besides digit and seed (a stored run is reused only when they are equal)."""
    return {"dataset": args.dataset, "epochs": args.epochs, "max_train": args.max_train,
            "max_images": args.max_images, "anomaly_seed": args.anomaly_seed, "deterministic": args.deterministic}


def train_config(digit: int, seed: int, args: argparse.Namespace) -> train.Config:
    """The ``VAE.train`` settings of one run (the expvae defaults unless ``--epochs`` / ``--max-train``)."""
    return train.Config(dataset=args.dataset, model="expvae", inlier_digit=digit, seed=seed,
                        deterministic=args.deterministic, progress=False, max_epochs=args.epochs,
                        max_train_rows=args.max_train, data_dir=args.data_dir,
                        out=str(args.out / run_name(digit, seed)))


def protocol(digit: int, args: argparse.Namespace) -> Protocol:
    return Protocol(inlier_digit=digit, outlier_digit=None, anomaly_seed=args.anomaly_seed,
                    max_images=args.max_images)


def finished(digit: int, seed: int, args: argparse.Namespace) -> dict | None:
    """The stored results of ``(digit, seed)`` when they were made with the current settings, else ``None``."""
    path = args.results / f"{run_name(digit, seed)}.json"
    result = load_json(path) if path.exists() else None
    return result if result is not None and result.get("settings") == jsonable(settings(args)) else None


def run_one(eval_data: EvalData, digit: int, seed: int, args: argparse.Namespace) -> dict:
    """Trains (or resumes) the model of ``(digit, seed)``, evaluates it and writes its results JSON."""
    path = args.results / f"{run_name(digit, seed)}.json"
    start = time.perf_counter()
    metrics = train.main(train_config(digit, seed, args))
    trained = time.perf_counter()
    wanted = args.epochs or train.EXPVAE_DEFAULTS["max_epochs"]
    if metrics["epochs_run"] != wanted:  # the run folder holds a longer run (max_epochs is resume-safe)
        raise UserError(f"{args.out / run_name(digit, seed)} holds a run of {metrics['epochs_run']} epochs, not "
                        f"{wanted}: give runs of other settings their own --out and --results folders")
    model = load_expvae(args.out / run_name(digit, seed) / "best")
    evaluation = evaluate_model(model, eval_data, protocol(digit, args), seed)
    result = {"digit": digit, "seed": seed, "settings": settings(args), "protocol": asdict(protocol(digit, args)),
              "run_dir": shown(args.out / run_name(digit, seed)),
              "n_images": {"train_inliers": len(eval_data.train_inliers), "test_inliers": len(eval_data.inliers),
                           "test_outliers": len(eval_data.outliers)},
              "train": {k: metrics[k] for k in TRAIN_KEYS}, "evaluation": evaluation,
              "seconds": {"train": trained - start, "evaluate": time.perf_counter() - trained}}
    save_json(path, result)
    logger.info("%s: image AUROC loss %.3f, bce %.3f; additive pixel AUROC anomaly attention %.3f (%.0f s)",
                run_name(digit, seed), evaluation["image"]["loss"], evaluation["image"]["bce"],
                evaluation["pixel"]["additive"]["attention_anomaly"]["pooled"], time.perf_counter() - start)
    return result


def _per_seed_metrics(result: Mapping) -> dict:
    return {**result["evaluation"], "train": dict(result["train"])}


def summarize(results: Sequence[Mapping], run_settings: Mapping[str, Any]) -> dict:
    """Mean and sample sd over seeds per digit of every metric, image-AUROC tables and the Deep SVDD anchor.

    Args:
      results: per-run results dicts (:func:`run_one`); only those with ``run_settings`` are summarised.
      run_settings: :func:`settings` of the study.

    Returns:
      ``{"settings", "anchor", "digits": {d: {"seeds", "metrics": {path: {mean, sd, min, max}}}},
      "image_auroc": {score: {d: {"mean", "sd"}}}, "mean_over_digits": {score: mean of the digit means, "deep_svdd"}}``
      (AUROCs as fractions; the anchor in %).
    """
    run_settings = jsonable(run_settings)
    by_digit: dict[int, dict[int, dict]] = {}
    for r in results:
        if r["settings"] == run_settings:
            by_digit.setdefault(int(r["digit"]), {})[int(r["seed"])] = _per_seed_metrics(r)
    digits = {d: {"seeds": sorted(runs), "metrics": aggregate(dict(sorted(runs.items())))}
              for d, runs in sorted(by_digit.items())}
    scores = sorted({k[len("image/"):] for d in digits.values() for k in d["metrics"] if k.startswith("image/")})
    table = {s: {str(d): {k: v["metrics"][f"image/{s}"][k] for k in ("mean", "sd")} for d, v in digits.items()
                 if f"image/{s}" in v["metrics"]} for s in scores}
    mean_over = {s: float(np.mean([v["mean"] for v in rows.values()])) for s, rows in table.items()}
    mean_over["deep_svdd"] = float(np.mean([DEEP_SVDD[d] / 100 for d in digits])) if digits else float("nan")
    return {"settings": run_settings, "anchor": {"name": "Deep SVDD (Ruff et al., ICML 2018), one-class, Table 1",
                                                 "image_auroc_percent": {str(d): v for d, v in DEEP_SVDD.items()}},
            "digits": {str(d): v for d, v in digits.items()}, "image_auroc": table, "mean_over_digits": mean_over}


def summarize_folder(results_dir: Path, run_settings: Mapping[str, Any]) -> Path:
    """Writes ``summary.json`` of every run JSON in ``results_dir`` with ``run_settings``; returns its path."""
    runs = [load_json(p) for p in sorted(results_dir.glob("digit*_s*.json"))]
    other = [r for r in runs if r.get("settings") != jsonable(run_settings)]
    if other:
        logger.warning("%d run(s) in %s have other settings and are left out of the summary", len(other),
                       results_dir)
    path = results_dir / "summary.json"
    save_json(path, summarize(runs, run_settings))
    return path


def plot_summary(summary: Mapping, path: str | Path, scores: Sequence[str] = FIGURE_SCORES) -> Path | None:
    """Per-digit bars of image AUROC (%, mean over seeds with the sample sd) beside the Deep SVDD anchor.

    Args:
      summary: :func:`summarize`'s dict.
      path: the PNG to write.
      scores: image-level scores to draw (keys of ``summary["image_auroc"]``; absent ones are skipped).

    Returns:
      ``path``, or ``None`` when the summary holds no digit.
    """
    import matplotlib.pyplot as plt

    digits = sorted(int(d) for d in summary["digits"])
    scores = [s for s in scores if s in summary["image_auroc"]]
    if not digits:
        return None
    width = 0.8 / (len(scores) + 1)
    pos = np.arange(len(digits))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.0 * len(digits) + 2), 3.4))
    for j, score in enumerate(scores):
        rows = summary["image_auroc"][score]
        mean = [100 * rows[str(d)]["mean"] if str(d) in rows else np.nan for d in digits]
        sd = [100 * rows[str(d)]["sd"] if str(d) in rows else 0.0 for d in digits]
        ax.bar(pos + j * width, mean, width, yerr=sd, capsize=2, label=SCORE_LABELS.get(score, score))
    ax.bar(pos + len(scores) * width, [DEEP_SVDD[d] for d in digits], width, color="0.6", hatch="//",
           label="Deep SVDD (Ruff et al. 2018)")
    n_seeds = sorted({len(summary["digits"][str(d)]["seeds"]) for d in digits})
    ax.set_xticks(pos + len(scores) * width / 2, [str(d) for d in digits])
    ax.set_xlabel("inlier digit")
    ax.set_ylabel("image AUROC (%)")
    lowest = min([100 * r["mean"] for s in scores for r in summary["image_auroc"][s].values()], default=50.0)
    ax.set_ylim(min(40.0, 10 * np.floor(lowest / 10)), 100)
    ax.axhline(50, color="k", lw=0.5)
    ax.set_title(f"one-class MNIST, ExpVAE ({'/'.join(map(str, n_seeds))} seed(s), mean ± sd)", fontsize=9)
    ax.legend(fontsize=7, ncol=len(scores) + 1, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return int(value)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python experiments/one_class_mnist.py",
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--digits", nargs="+", type=int, default=list(range(10)), choices=range(10), metavar="D",
                        help="inlier digits, one model each")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds")
    parser.add_argument("--epochs", type=_positive, default=None,
                        help=f"epochs per run (None: the expvae default, {train.EXPVAE_DEFAULTS['max_epochs']})")
    parser.add_argument("--max-train", type=_positive, default=None,
                        help="keep the first N training images of the inlier digit (quick runs; None: all)")
    parser.add_argument("--max-images", type=_positive, default=None,
                        help="cap the test inliers and outliers evaluated (quick runs; None: all)")
    parser.add_argument("--dataset", default="mnist", choices=train.EXPVAE_DATASETS,
                        help="mnist: the official 60,000 / 10,000 split; mnist_t10k: the quick stand-in")
    parser.add_argument("--data-dir", default=None,
                        help="folder of raw data files (None: $CLUE_DATA_DIR, then data/raw)")
    parser.add_argument("--anomaly-seed", type=int, default=0, help="seed of the synthetic pixel anomalies")
    parser.add_argument("--deterministic", type=lambda s: s.lower() in ("1", "true", "yes"), default=True,
                        help="TF op determinism in training (bitwise-repeatable runs)")
    parser.add_argument("--out", type=Path, default=RUNS, help="folder of the training runs")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the results JSON and the summary")
    parser.add_argument("--figure", type=Path, default=FIGURE, help="the per-digit bar chart (PNG)")
    parser.add_argument("--summarize-only", action="store_true", help="rebuild summary and figure from the results")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    logging.getLogger("absl").setLevel(logging.WARNING)
    args.results.mkdir(parents=True, exist_ok=True)
    if not args.summarize_only:
        ds = None
        for digit in args.digits:  # the seeds of a digit finish together
            todo = [seed for seed in args.seeds if finished(digit, seed, args) is None]
            logger.info("digit %d: %d run(s) reused, %d to do", digit, len(args.seeds) - len(todo), len(todo))
            if not todo:
                continue
            ds = ds or data.load(args.dataset, data_dir=args.data_dir)
            eval_data = make_eval_data(ds, protocol(digit, args))
            # the aggregate posterior and the mean inlier image come from the images the model was trained on
            eval_data = replace(eval_data, train_inliers=eval_data.train_inliers[:args.max_train])
            for seed in todo:
                run_one(eval_data, digit, seed, args)
                summarize_folder(args.results, settings(args))
    path = summarize_folder(args.results, settings(args))
    figure = plot_summary(load_json(path), args.figure)
    logger.info("wrote %s%s", path, f" and {figure}" if figure else "")
    return 0


if __name__ == "__main__":
    import common.cli

    common.cli.run(main, resumable=True)
