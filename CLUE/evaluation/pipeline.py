"""The evaluation pipeline (paper section 5.1, spec 6.3, 6.4): the real data loaded once, flowing through every stage.

``real`` (``data.load``) -> ground-truth VAEAC and under-VAEAC -> artificial data (``artificial.npz``) -> BNN, CLUE's
VAE and U-FIDO's in-filling VAEAC (each script's ``main(config, dataset=...)``) -> explained sets -> sweeps of
:data:`CLUE.evaluation.METHODS` -> ``results.json``. Every stage is resumable; ``python -m CLUE.evaluate`` is the
command line of :func:`main`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

import data
from BNN import train as bnn_train
from BNN.posterior import Posterior
from CLUE import evaluation as ev
from CLUE import stages
from CLUE.evaluation.config import Config
from common.config import command_line
from common.errors import UserError
from common.io import PROJECT_ROOT, jsonable, load_json, save_json, save_npz
from common.runs import make_run_dir
from common.seeding import set_seed
from VAE import train as vae_train
from VAE.model import load_vae
from VAEAC import train as vaeac_train
from VAEAC.export import load_model

logger = logging.getLogger(__name__)

# bumped when a metric's definition changes: older results.json files are then rescored (the stages stay valid)
RESULTS_VERSION = 3


def results_are_current(results: dict[str, Any]) -> bool:
    """Whether a ``results.json`` was scored with the current metric definitions."""
    return results.get("results_version") == RESULTS_VERSION


# where the stages come from, and whether they are published: the results are the same either way
NOT_RESULT_SETTINGS = ("stages", "publish_stages")
STAGE_SOURCES = ("train", "weights", "rebuild")


def saved_settings(saved: dict[str, Any]) -> dict[str, Any]:
    """A saved run's config, with settings added since it ran set to their defaults (the behavior it ran with)."""
    return {**jsonable(dataclasses.asdict(Config())), **saved}


def same_results(saved: dict[str, Any], config: Config) -> bool:
    """Whether a saved run's config gives the results ``config`` asks for."""
    strip = lambda c: {k: v for k, v in c.items() if k not in NOT_RESULT_SETTINGS}  # noqa: E731
    return strip(saved_settings(saved)) == strip(jsonable(dataclasses.asdict(config)))


@contextlib.contextmanager
def _timed(run_dir: Path, stage: str):
    """Adds the wall seconds spent in ``stage`` to ``run_dir/timings.json`` (summed over resumes)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        path = run_dir / "timings.json"
        timings = load_json(path) if path.exists() else {}
        timings[stage] = round(timings.get(stage, 0.0) + time.perf_counter() - start, 1)
        save_json(path, timings)


def _done(run_dir: Path) -> bool:
    return (run_dir / "metrics.json").exists()


def script_config(config: Config, script: type, prefixes: dict[str, str], renames: dict[str, str] | None = None,
                  **fixed: Any):
    """A training script's Config from this run's settings: field ``<prefix><name>`` -> ``<prefixes[prefix]><name>``
    (or ``renames``), plus the ``fixed`` values; TypeError for a field the script lacks."""
    fields = {f.name for f in dataclasses.fields(script)}
    values = {}
    for f in dataclasses.fields(config):
        if f.name in stages.NOT_STAGE_FIELDS:  # e.g. bnn_gradient: how the sweeps use the BNN, not its training
            continue
        for prefix, theirs in prefixes.items():
            if f.name.startswith(prefix):
                key = (renames or {}).get(f.name, theirs + f.name[len(prefix):])
                if key not in fields:
                    raise TypeError(f"{f.name} maps to {script.__module__}.Config.{key}, which does not exist")
                values[key] = getattr(config, f.name)
    return script(**{**values, **fixed})


class Stages(NamedTuple):
    """The trained stages of a run: what the sweeps explain with and score against."""

    gt: ev.GroundTruth  # the under-VAEAC over the ground-truth VAEAC
    data: data.Dataset  # the artificial data drawn from it
    bnn: Posterior  # trained on ``data``
    vae: Any  # CLUE's VAE, trained on ``data``
    art_vaeac: Any  # U-FIDO's in-filling VAEAC, trained on ``data`` (x only)


def train_ground_truth(config: Config, run_dir: Path, real: data.Dataset) -> ev.GroundTruth:
    """Stage 1: the VAEAC on the real joint (x, y) and its under-VAEAC (credit masks whole variables, [nb])."""
    out = run_dir / "gt_vaeac"
    if not _done(out):
        with _timed(run_dir, "gt_vaeac"):
            stages.note_training(run_dir, "gt_vaeac")
            vaeac_train.main(script_config(
                config, vaeac_train.Config, {"gt_": "", "under_": "under_"}, dataset=config.dataset, targets=True,
                mask_per_variable=data.spec(config.dataset).mask_per_variable, under_early_stop=config.gt_early_stop,
                max_train_rows=config.max_train_rows, seed=config.seed, data_dir=config.data_dir, out=str(out),
                progress=config.progress), dataset=real)
    return ev.GroundTruth(load_model(out / "under_best"), real.x_dim, real.task)


def artificial_dataset(config: Config, run_dir: Path, gt: ev.GroundTruth, real: data.Dataset) -> data.Dataset:
    """Stage 2: draws the artificial data, or reloads the saved draw (so a resumed run explains its models' data)."""
    path = run_dir / "artificial.npz"
    if path.exists():
        with np.load(path) as saved:
            return ev.artificial_dataset(real, *(saved[k] for k in ("x_train", "y_train", "x_test", "y_test")),
                                         seed=config.seed)
    stages.note_training(run_dir, "artificial")  # drawn by the ground truth's TensorFlow sampling
    ds = ev.make_artificial_dataset(gt, real, config.seed)
    save_npz(path, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test)
    return ds


def train_art_models(config: Config, run_dir: Path, ds: data.Dataset) -> tuple[Posterior, Any, Any]:
    """Stage 3: BNN, CLUE VAE and in-filling VAEAC on the artificial training split (via :func:`script_config`)."""
    latent = data.spec(config.dataset).latent_dim
    common = {"dataset": ds.name, "seed": config.seed, "progress": config.progress}
    if not _done(run_dir / "bnn"):
        with _timed(run_dir, "bnn"):
            stages.note_training(run_dir, "bnn")
            bnn_train.main(script_config(config, bnn_train.Config, {"bnn_": ""}, {"bnn_epochs": "n_epochs"},
                                         out=str(run_dir / "bnn"), eval_every=max(1, config.bnn_epochs // 10),
                                         **common), dataset=ds)
    if not _done(run_dir / "vae"):
        with _timed(run_dir, "vae"):
            stages.note_training(run_dir, "vae")
            vae_train.main(script_config(config, vae_train.Config, {"vae_": ""}, latent_dim=latent,
                                         out=str(run_dir / "vae"), **common), dataset=ds)
    if not _done(run_dir / "art_vaeac"):
        with _timed(run_dir, "art_vaeac"):
            stages.note_training(run_dir, "art_vaeac")
            vaeac_train.main(script_config(config, vaeac_train.Config, {"art_vaeac_": ""}, targets=False,
                                           latent_dim=latent, early_stop=config.vae_early_stop,
                                           out=str(run_dir / "art_vaeac"), **common), dataset=ds)
    return (Posterior.load(run_dir / "bnn" / "posterior"), load_vae(run_dir / "vae" / "best"),
            load_model(run_dir / "art_vaeac" / "best"))


def trained_stages(config: Config, run_dir: Path, real: data.Dataset | None = None) -> Stages:
    """Stages 1-3 in ``run_dir``: each trained unless finished there, then loaded (``real``: if already loaded)."""
    real = real if real is not None else data.load(config.dataset, data_dir=config.data_dir)
    gt = train_ground_truth(config, run_dir, real)
    ds = artificial_dataset(config, run_dir, gt, real)
    return Stages(gt, ds, *train_art_models(config, run_dir, ds))


def train_stages(config: Config) -> Path:
    """Stages 1-3 only, in ``config.out``, seeded as :func:`main` (run by :func:`rebuild_stages`); returns it."""
    set_seed(config.seed)
    run_dir = make_run_dir(config.out, dataclasses.asdict(config), kind="CLUE.evaluate")
    trained_stages(config, run_dir)
    return run_dir


def rebuild_stages(config: Config, manifest=None) -> str:
    """Retrains the published stages matching ``config`` in a fresh single-threaded process, in the run folder of the
    entry's command, then :func:`CLUE.stages.install`s them; returns the entry's name (UserError on any mismatch)."""
    import weights

    manifest = manifest or weights.read_manifest(weights.MANIFEST)
    entry = stages.published(config, manifest)
    stages.check_rebuildable(entry)
    out = stages.training_folder(entry)
    settings = {**dataclasses.asdict(config), "out": str(out), "stages": "train", "publish_stages": False}
    logger.info("%s is neither here nor hosted: retraining it in %s (one thread), to be checked against its "
                "sha256s", entry.name, out)
    done = subprocess.run([sys.executable, "-m", "CLUE.evaluation.pipeline", json.dumps(settings)],
                          cwd=PROJECT_ROOT, env={**os.environ, **stages.SINGLE_THREAD_ENV})
    if done.returncode:
        raise UserError(f"retraining the stages of {entry.name} in {out} failed (exit {done.returncode}); "
                        "its log is above")
    return stages.install(config, out, manifest)


def load_trained_run(run_dir: str | Path) -> tuple[Config, Stages]:
    """A run's settings and trained stages, loaded without training or writing (UserError if not a finished run)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise UserError(f"{run_dir} has no config.json: pass a directory written by python -m CLUE.evaluate")
    saved = saved_settings(load_json(run_dir / "config.json"))
    config = Config(**{f.name: saved[f.name] for f in dataclasses.fields(Config)})
    for stage in ("gt_vaeac", "bnn", "vae", "art_vaeac"):
        if not _done(run_dir / stage):
            raise UserError(f"{run_dir / stage} is not trained yet: finish (or resume) the run's training first")
    return config, trained_stages(config, run_dir)  # every stage is trained, so this only loads


def make_sweep(config: Config) -> ev.Sweep:
    """The sweep of ``config``; ``original_config``: the authors' gradient and, on classification, U-FIDO's MNIST
    normalization (``fit_cat`` applies it, ``fit_gauss`` does not)."""
    original = config.original_config
    return ev.Sweep.paper(
        {m: getattr(config, f"n_{m}") for m in ev.METHODS},
        clue_max_steps_aleatoric=config.clue_max_steps_aleatoric,
        clue_max_steps_epistemic=config.clue_max_steps_epistemic, clue_n_early_stop=config.clue_n_early_stop,
        ufido_iterations=config.ufido_iterations, bnn_gradient="torch13" if original else config.bnn_gradient,
        ufido_mnist_norm=config.ufido_mnist_norm or (original and data.spec(config.dataset).task == "classification"))


def explained_sets(config: Config, gt: ev.GroundTruth, bnn, ds: data.Dataset,
                   budget: ev.EvalBudget) -> tuple[dict[str, ev.Reference], dict[str, Any]]:
    """Stage 4a: uncertain test points per target (at most ``max_explained``, a seeded subset) and their references;
    each target's info records the threshold and the fractions the [nb] constant and top-20% quantile select."""
    u = ev.bnn_uncertainties(bnn, ds.x_test)
    rng = np.random.default_rng(config.seed)
    refs, info = {}, {}
    for target in ev.TARGETS:
        tau = ev.selection_threshold(u, target, config.dataset, config.threshold_quantile)
        idx = ev.select_uncertain(u, target, tau)
        info[target] = {"threshold": tau, "threshold_rule": ("nb" if config.threshold_quantile is None else
                                                             f"quantile {config.threshold_quantile:g}"),
                        "n_selected": int(len(idx)), "n_test": int(len(ds.x_test)),
                        "fraction_selected": float(len(idx) / len(ds.x_test)),
                        "fraction_nb_threshold": float(np.mean(u[target] >= ev.SETTINGS[config.dataset]
                                                               .threshold(target))),
                        "nb_threshold": ev.SETTINGS[config.dataset].threshold(target),
                        "quantile_0.8_threshold": float(np.quantile(u[target], 0.8))}
        if len(idx) == 0:
            logger.warning("%s: no test point has %s uncertainty >= %g; skipping that target", config.dataset,
                           target, tau)
            continue
        if config.max_explained is not None and len(idx) > config.max_explained:
            idx = np.sort(rng.choice(idx, config.max_explained, replace=False))
        refs[target] = ev.Reference.build(gt, bnn, ds.x_test[idx], budget)
        info[target].update({"n_explained": int(len(idx)), "mean_log_px_x0": float(refs[target].log_px.mean()),
                             "mean_gt_uncertainty_x0": float(refs[target].gt_uncertainty.mean()),
                             "error_x0": refs[target].error})
    return refs, info


def publish_command(config: Config) -> str:
    """The command that trains the stages of ``config`` (for the manifest), its run folder relative to the project."""
    out = Path(config.out).resolve()
    if out.is_relative_to(PROJECT_ROOT):
        config = dataclasses.replace(config, out=str(out.relative_to(PROJECT_ROOT)))
    return command_line("python -m CLUE.evaluate", config, skip=("progress", "stages", "publish_stages")) \
        + " --publish-stages true"


def main(config: Config) -> dict[str, Any]:
    """Runs every stage; returns ``{"references": ..., "rows": [...]}`` (also in ``results.json``)."""
    if config.dataset not in ev.SETTINGS:
        raise UserError(f"unknown dataset {config.dataset!r}; choose one of {sorted(ev.SETTINGS)}")
    if config.stages not in STAGE_SOURCES:
        raise UserError(f"--stages must be one of {STAGE_SOURCES}, got {config.stages!r}")
    sweep = make_sweep(config)  # checks the sweep settings before any training
    set_seed(config.seed)
    done = Path(config.out) / "results.json"
    if done.exists():
        finished = load_json(done)
        if not results_are_current(finished):
            logger.info("%s was scored with older metric definitions: rescoring from its trained stages", done)
        elif same_results(finished.get("config", {}), config):
            logger.info("%s holds a finished run with these settings: reusing it", config.out)
            return finished
    run_dir = make_run_dir(config.out, dataclasses.asdict(config), kind="CLUE.evaluate")
    if config.stages == "rebuild" and stages.needs_rebuild(config):
        rebuild_stages(config)  # retrained apart and installed in the weights only if they match bit for bit
    if config.stages in ("weights", "rebuild"):
        stages.fetch(config, run_dir)
    trained = trained_stages(config, run_dir)
    if config.publish_stages:
        stages.publish(config, run_dir, command=publish_command(config))
    return score(config, run_dir, trained, sweep)


def score(config: Config, run_dir: Path, trained: Stages, sweep: ev.Sweep) -> dict[str, Any]:
    """Stage 4: the explained sets, every method's sweep over them, scored; writes ``results.json``."""
    budget = ev.EvalBudget(config.n_gt_samples, config.n_px_samples, config.seed)
    with _timed(run_dir, "references"):
        refs, info = explained_sets(config, trained.gt, trained.bnn, trained.data, budget)
    with _timed(run_dir, "sweeps"):
        points = ev.run_sweeps(trained.gt, trained.bnn, refs, trained.vae, trained.art_vaeac, sweep, budget,
                               progress=config.progress, journal=run_dir / "sweep_points.jsonl")
    table = ev.points_table(points)
    task = trained.data.task
    boot = {"per_point": points.per_point, "task": task, "n_boot": config.n_boot, "seed": config.seed}
    table.to_csv(run_dir / "table.csv", index=False)
    ev.save_point_scores(run_dir / "point_scores.npz", points.per_point)
    for target, ref in refs.items():
        ev.plot_sweeps(points, target, float(ref.log_px.mean()), len(ref.x0),
                       run_dir / f"{config.dataset}_{target}.png", title=config.dataset)
    results = {"dataset": config.dataset, "results_version": RESULTS_VERSION, "config": dataclasses.asdict(config),
               "references": info,
               "models": {k: load_json(run_dir / k / "metrics.json") for k in ("gt_vaeac", "bnn", "vae", "art_vaeac")},
               "seconds": load_json(run_dir / "timings.json") if (run_dir / "timings.json").exists() else {},
               "at_equal_distance": ev.compare_at_distance(table, **boot) if len(table) else [],
               "verdicts": ev.verdicts(table, **boot) if len(table) else [],
               "overlaps": ev.run_overlaps(table, **boot) if len(table) else [],
               "sweep": {"bnn_gradient": sweep.bnn_gradient, "ufido_mnist_norm": sweep.ufido_mnist_norm},
               "rows": ev.point_intervals(points, points.per_point, task, config.n_boot, config.seed)}
    save_json(run_dir / "results.json", results)
    logger.info("wrote %s", run_dir / "results.json")
    return results


if __name__ == "__main__":  # the process rebuild_stages() starts: trains the stages of a config given as JSON
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m CLUE.evaluation.pipeline '<CLUE.evaluate settings as JSON>' (what "
                         "--stages rebuild starts; to rebuild stages yourself, run python -m CLUE.evaluate ... "
                         "--stages rebuild)")
    train_stages(Config(**json.loads(sys.argv[1])))
