"""The computational evaluation study: ``CLUE.evaluate`` over datasets x seeds (x faithfulness switches), resumable.

Each run is ``python -m CLUE.evaluate --dataset D --preset P --seed S [switches] --out <runs>/<name>``, where
``name`` is ``<dataset>_s<seed>`` plus the switch, e.g. ``compas_s1_mnist_norm``. A finished run (its
``results.json``) is reused; an unfinished one resumes from its trained stages and sweep journal, so the script can be
stopped and restarted at will. Every finished run's ``results.json`` (small: the per-point
scores, ``point_scores.npz``, go to ``points/<name>.npz`` beside it) is copied to
``experiments/results/study/<preset>/<name>.json``,
and the seeds of each dataset and switch are summarised into ``experiments/results/study/<preset>/summary.json``
(:func:`CLUE.evaluation.summarize_seeds`): means over seeds at equal L1, their spread, each seed's bootstrap
interval, and how many seeds call each method best.

Usage::

    python experiments/evaluation_study.py --datasets wine credit compas lsat --seeds 0 1 2
    python experiments/evaluation_study.py --datasets compas credit --seeds 0 1 2 --switch mnist_norm
    python experiments/evaluation_study.py --datasets lsat --seeds 0 --max-explained 500   # one seed (resumable)
    python experiments/evaluation_study.py --summarize-only   # rebuild summary.json from the committed runs

``--publish-stages`` publishes each run's trained stages to ``weights/manifest.json`` (see ``CLUE/stages.py``).

A run that stops on a :class:`common.errors.UserError` (say, a switch whose stages do not rebuild to their published
sha256s) does not stop the others: the study goes on, then names every failed run and exits with status 2.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from CLUE import evaluate  # noqa: E402
from CLUE import evaluation as ev  # noqa: E402
from common.config import with_preset  # noqa: E402
from common.errors import UserError  # noqa: E402
from common.io import PROJECT_ROOT, load_json, save_json  # noqa: E402
from common.runs import setup_logging  # noqa: E402

logger = logging.getLogger("evaluation_study")

# the faithfulness switches of the study (issue: reported beside the default), as CLUE.evaluate settings
SWITCHES: dict[str, dict[str, Any]] = {
    "default": {},
    "mnist_norm": {"ufido_mnist_norm": True},  # the original U-FIDO's MNIST input normalization (classification)
    "top20": {"threshold_quantile": 0.8},  # each run's top 20% of BNN uncertainty instead of the [nb] constants
    "torch13_grad": {"bnn_gradient": "torch13"},  # the torch-1.3 gradient of the original, same trained stages
    # the authors' configuration: torch-1.3 gradient in every method, U-FIDO's MNIST normalization on classification
    "original_config": {"original_config": True},
}
# every run of the study from this version on: sensitivity's sweep three times as dense (its L1 grows 1.24x per value
# instead of 1.9x) over the same [nb] range, so that its overlaps with CLUE's and U-FIDO's sweeps are resolved
STUDY_SETTINGS: dict[str, Any] = {"n_sensitivity": 60}
RESULTS = PROJECT_ROOT / "experiments" / "results" / "study"


def run_name(dataset: str, seed: int, switch: str) -> str:
    return f"{dataset}_s{seed}" + ("" if switch == "default" else f"_{switch}")


def make_config(dataset: str, seed: int, switch: str, preset: str, runs: Path, publish: bool,
                **overrides: Any) -> evaluate.Config:
    """The run's settings. A switch rescores the default run's trained stages, taken from the weights, so the
    default run must have published them (``--publish-stages``); where their files are neither here nor hosted,
    they are retrained and used only if they match the published sha256s (``--stages rebuild``, single-threaded)."""
    if switch not in SWITCHES:
        raise UserError(f"unknown switch {switch!r}; choose one of {sorted(SWITCHES)}")
    stages = {} if switch == "default" or "stages" in overrides else {"stages": "rebuild"}
    settings = {**(STUDY_SETTINGS if preset == "paper" else {}), **SWITCHES[switch], **overrides}
    return with_preset(evaluate.Config, evaluate.PRESETS, preset, dataset=dataset, seed=seed,
                       out=str(runs / run_name(dataset, seed, switch)), progress=False,
                       publish_stages=publish and switch == "default", **stages, **settings)


def summarize(preset: str, results: Path = RESULTS) -> Path:
    """``summary.json`` of every committed run of ``preset``, grouped by switch."""
    folder = results / preset
    runs = [load_json(p) for p in sorted(folder.glob("*.json")) if p.name != "summary.json"]
    by_switch: dict[str, list[dict]] = {}
    for run in runs:
        by_switch.setdefault(run.get("study_switch", "default"), []).append(run)
    summary = {"preset": preset,
               "runs": [{"name": run_name(r["dataset"], r["config"]["seed"], r.get("study_switch", "default")),
                         "dataset": r["dataset"], "seed": r["config"]["seed"],
                         "switch": r.get("study_switch", "default"), "seconds": r.get("seconds", {}),
                         "references": r.get("references", {})} for r in runs],
               "switches": {name: ev.summarize_seeds(group) for name, group in sorted(by_switch.items())}}
    path = folder / "summary.json"
    save_json(path, summary)
    return path


def _count(value: str) -> int | None:
    """``--max-explained``: a positive number, or ``none`` (every selected point)."""
    if value == "none":
        return None
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of points or 'none', got {value!r}")
    return int(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python experiments/evaluation_study.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["wine", "credit", "compas", "lsat"],
                        choices=sorted(ev.SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--switch", nargs="+", default=["default"], choices=sorted(SWITCHES),
                        help="faithfulness switches to run beside (or instead of) the default")
    parser.add_argument("--preset", default="paper", choices=sorted(evaluate.PRESETS))
    parser.add_argument("--runs", type=Path, default=PROJECT_ROOT / "runs" / "study")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the runs' JSON and the summary go")
    parser.add_argument("--publish-stages", action="store_true", help="publish each run's trained stages")
    parser.add_argument("--max-explained", type=_count, default=argparse.SUPPRESS, metavar="N|none",
                        help="explain a seeded subset of at most N selected points per target (none: all); default: "
                             "the preset's (1000 for paper). Give a switch the value its default run had: the same "
                             "points are explained then")
    parser.add_argument("--stages", choices=evaluate.pipeline.STAGE_SOURCES, default=argparse.SUPPRESS,
                        help="where every run's trained stages come from (default: train for the default switch, "
                             "rebuild for the others); weights: the published ones, e.g. to rescore a default run")
    parser.add_argument("--summarize-only", action="store_true")
    args = parser.parse_args(argv)
    setup_logging()
    logging.getLogger("absl").setLevel(logging.WARNING)
    (args.results / args.preset).mkdir(parents=True, exist_ok=True)
    failed: dict[str, str] = {}
    if not args.summarize_only:
        for dataset in args.datasets:  # seeds inside: a dataset's seeds finish together
            for seed in args.seeds:
                for switch in args.switch:
                    name = run_name(dataset, seed, switch)
                    overrides = {k: getattr(args, k) for k in ("max_explained", "stages") if hasattr(args, k)}
                    config = make_config(dataset, seed, switch, args.preset, args.runs / args.preset,
                                         args.publish_stages, **overrides)
                    start = time.perf_counter()
                    try:
                        results = evaluate.main(config)
                    except UserError as err:  # e.g. stages that cannot be rebuilt: the other runs still go on
                        logger.error("%s failed after %.0f s: %s", name, time.perf_counter() - start, err)
                        failed[name] = str(err).splitlines()[0]
                        continue
                    results = {**results, "study_switch": switch}
                    save_json(args.results / args.preset / f"{name}.json", results)
                    scores = Path(config.out) / "point_scores.npz"
                    if scores.exists():  # the per-point scores behind every interval, committed beside the run
                        (args.results / args.preset / "points").mkdir(exist_ok=True)
                        shutil.copy2(scores, args.results / args.preset / "points" / f"{name}.npz")
                    logger.info("%s: done in %.0f s", name, time.perf_counter() - start)
                    summarize(args.preset, args.results)
    logger.info("wrote %s", summarize(args.preset, args.results))
    if failed:
        raise UserError(f"{len(failed)} run(s) failed, the others finished:\n"
                        + "\n".join(f"  {name}: {why}" for name, why in failed.items()))
    return 0


if __name__ == "__main__":
    import common.cli

    common.cli.run(main, resumable=True)
