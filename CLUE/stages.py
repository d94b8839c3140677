"""The trained stages of an evaluation run as pretrained weights, so that its sweeps can be rerun without training.

A run of ``CLUE.evaluate`` trains five things before it explains anything: the ground-truth VAEAC with its under-
VAEAC, the artificial data drawn from them, and, on that data, the BNN, CLUE's VAE and U-FIDO's in-filling VAEAC.
:func:`publish` copies them (with each stage's ``metrics.json``) into one folder under ``weights/`` and records it in
``weights/manifest.json`` as an ``evaluation_stages`` entry whose ``stage_config`` holds every setting the stages
depend on; :func:`fetch` finds the entry matching a run's settings, verifies every file's sha256 (downloading it where
it is hosted rather than committed) and places the stages into the run folder, where ``CLUE.evaluate`` then finds them
finished. ``python -m CLUE.evaluate ... --publish-stages true`` and ``--stages weights`` call them. This module knows
nothing of the pipeline that trains the stages (:mod:`CLUE.evaluation.pipeline`), which imports it.

Stages that are neither committed nor hosted can be rebuilt. Training is seeded, and a fresh single-threaded process
(``TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1``) retrains them bit for bit, where more threads can change the
last bit of a sum and with it every later step. The published copies leave out what no retraining can repeat: wall-
clock seconds in ``metrics.json`` and the absolute run folder in a ``model.json`` (made relative to the project).
``--stages rebuild`` takes the published stages where their files are available; otherwise the pipeline's
``rebuild_stages`` retrains them in such a process, in the run folder of the entry's command, and :func:`install`
checks every retrained file against the manifest's sha256 and only on a full match places them where ``--stages
weights`` looks (``weights/cache/``), so that the sweeps that follow run on exactly the published models.

Bit for bit holds on one kind of CPU only: TensorFlow (oneDNN) picks other kernels for other instruction sets, and
stages trained on an AVX2 machine come out different on an AVX-512 / AMX one (COMPAS seeds 0 and 1, measured). So each
time a stage starts (or resumes) training, the run records TensorFlow's thread counts and the CPU (model and
instruction sets, :func:`cpu_signature`) in ``stage_threads.json`` (:func:`note_training`); :func:`publish` copies the
CPUs into the entry (``trained_on``) and marks it ``"rebuildable": false`` when any stage trained with more than one
intra-op thread, and :func:`check_rebuildable` stops a rebuild at once, saying what to do instead, for such an entry
or one trained on another instruction set than this machine's. (A run resumed from its checkpoints on the same machine
and thread count is the uninterrupted run, byte for byte: ``tests/test_vaeac_train.py``.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.utils import PROJECT_ROOT, load_json, save_json

logger = logging.getLogger(__name__)

KIND = "evaluation_stages"
# what a run folder holds of its trained stages
# (folders are copied whole; a stage's metrics.json, which marks it finished, comes after its model)
STAGE_PATHS = ("gt_vaeac/under_best", "gt_vaeac/metrics.json", "artificial.npz", "bnn/posterior", "bnn/metrics.json",
               "vae/best", "vae/metrics.json", "art_vaeac/best", "art_vaeac/metrics.json")
# settings of CLUE.evaluate.Config that the trained stages depend on (the rest only change the sweeps or scoring)
STAGE_PREFIXES = ("gt_", "under_", "bnn_", "vae_", "art_vaeac_")
STAGE_FIELDS = ("dataset", "seed", "max_train_rows")
NOT_STAGE_FIELDS = ("bnn_gradient",)  # explains with the BNN's gradient: the trained BNN is the same
# what trains (or draws) each stage, in order; each start of its training is recorded in THREADS_FILE
TRAINED_STAGES = ("gt_vaeac", "artificial", "bnn", "vae", "art_vaeac")
THREADS_FILE = "stage_threads.json"


def stage_config(config) -> dict[str, Any]:
    """The settings of an evaluation ``config`` (``CLUE.evaluate.Config``) that its trained stages depend on."""
    values = dataclasses.asdict(config)
    return {k: v for k, v in sorted(values.items()) if k not in NOT_STAGE_FIELDS
            and (k in STAGE_FIELDS or k.startswith(STAGE_PREFIXES))}


def entry_name(config) -> str:
    """``eval_<dataset>_s<seed>_<digest>``: the manifest name of the stages of ``config``."""
    digest = hashlib.sha256(json.dumps(stage_config(config), sort_keys=True).encode()).hexdigest()[:8]
    return f"eval_{config.dataset}_s{config.seed}_{digest}"


def tf_threads() -> dict[str, int]:
    """TensorFlow's intra-op and inter-op thread counts in this process: ``TF_NUM_INTRAOP_THREADS`` /
    ``TF_NUM_INTEROP_THREADS`` where set, else the configured value, else TensorFlow's default of one per core."""
    import tensorflow as tf

    def count(env: str, configured: int) -> int:
        value = os.environ.get(env, "").strip()
        return int(value) if value.isdigit() and int(value) > 0 else configured or os.cpu_count() or 1

    return {"intra_op": count("TF_NUM_INTRAOP_THREADS", tf.config.threading.get_intra_op_parallelism_threads()),
            "inter_op": count("TF_NUM_INTEROP_THREADS", tf.config.threading.get_inter_op_parallelism_threads())}


def cpu_signature() -> dict[str, Any]:
    """This machine's CPU as a stage record holds it: ``model`` and ``simd`` (:func:`common.utils.cpu_info`)."""
    from common.utils import cpu_info

    info = cpu_info()
    return {"model": info["cpu_model"], "simd": info["simd"]}


def _stage_record(run_dir: str | os.PathLike) -> dict[str, list[dict[str, Any]]]:
    """``run_dir/stage_threads.json``: per stage, one record per start of its training (empty when absent)."""
    path = Path(run_dir) / THREADS_FILE
    return load_json(path) if path.exists() else {}


def note_training(run_dir: str | os.PathLike, stage: str) -> None:
    """Records in ``run_dir/stage_threads.json`` that ``stage`` starts (or resumes) training in this process, with
    its :func:`tf_threads` and :func:`cpu_signature`: one record per start, so a stage resumed under other settings
    or on another machine shows both."""
    if stage not in TRAINED_STAGES:
        raise ValueError(f"unknown stage {stage!r}; one of {TRAINED_STAGES}")
    record = _stage_record(run_dir)
    record.setdefault(stage, []).append({**tf_threads(), "cpu": cpu_signature()})
    save_json(Path(run_dir) / THREADS_FILE, record)


def trained_on(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The distinct CPUs (:func:`cpu_signature`) that the stages of ``run_dir`` recorded training on."""
    cpus = [t["cpu"] for starts in _stage_record(run_dir).values() for t in starts if "cpu" in t]
    return [c for i, c in enumerate(cpus) if c not in cpus[:i]]


def rebuildable(run_dir: str | os.PathLike) -> bool | None:
    """Whether a single-threaded retrain can repeat the stages of ``run_dir``: True when every stage recorded its
    training and each start had one intra-op thread, False when any start had more, None when a stage has no
    record (trained before the record existed, or taken from the weights)."""
    record = _stage_record(run_dir)
    if any(t["intra_op"] != 1 for starts in record.values() for t in starts):
        return False
    return True if all(record.get(stage) for stage in TRAINED_STAGES) else None


def missing_stages(run_dir: str | os.PathLike) -> list[str]:
    return [p for p in STAGE_PATHS if not (Path(run_dir) / p).exists()]


def publish(config, run_dir: str | os.PathLike, command: str, committed: bool | None = None,
            root: str | os.PathLike | None = None) -> str:
    """Copies the trained stages of ``run_dir`` into the weights folder and records them in its manifest.

    Args:
      config: the run's ``CLUE.evaluate.Config``.
      run_dir: the run folder, whose stages are all trained.
      command: the command line that trained them (recorded in the manifest).
      committed: whether the files go into git (``weights/eval/<name>``) or the git-ignored cache for hosting
        (``weights/cache/eval/<name>``); None: committed when every file is under the size limit of committed
        weights and the committed total stays under its limit.
      root: the folder holding ``manifest.json`` (default: ``weights/``).

    Returns:
      the manifest name of the stages.
    """
    from weights import MANIFEST
    from weights.manifest import MAX_COMMITTED_BYTES, MAX_FILE_BYTES, lock, rebuild

    run_dir = Path(run_dir)
    if missing := missing_stages(run_dir):
        raise UserError(f"{run_dir} lacks trained stages ({', '.join(missing)}): finish the run before publishing")
    manifest_path = Path(root) / "manifest.json" if root is not None else MANIFEST
    root = manifest_path.parent
    with lock(manifest_path):  # runs publishing at once must not lose each other's entries
        raw = json.loads(manifest_path.read_text())
        name = entry_name(config)
        files = _stage_files(run_dir)
        if committed is None:
            present = sum(f["bytes"] for m in raw["models"] if m["committed"] and m["name"] != name for f in m["files"])
            total = sum(p.stat().st_size for p in files)
            committed = max(p.stat().st_size for p in files) < MAX_FILE_BYTES and present + total < MAX_COMMITTED_BYTES
        rel = f"eval/{name}"
        dest = root / rel if committed else root / "cache" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=dest.parent))
        try:
            _stage_copy(run_dir, files, staging, config)
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        metrics = {stage: load_json(run_dir / stage / "metrics.json")
                   for stage in ("gt_vaeac", "bnn", "vae", "art_vaeac")}
        entry = {"name": name, "kind": KIND, "dataset": config.dataset,
                 "description": f"trained stages of a CLUE.evaluate run on {config.dataset}, seed {config.seed}: "
                                "ground-truth VAEAC + under-VAEAC, artificial data, BNN, CLUE VAE, in-filling VAEAC",
                 "path": rel, "committed": bool(committed), "command": command, "seed": int(config.seed),
                 "stage_config": stage_config(config), "files": [],
                 **({} if (single := rebuildable(run_dir)) is None else {"rebuildable": single}),
                 **({"trained_on": cpus} if (cpus := trained_on(run_dir)) else {}),
                 "metrics": {f"{stage}/{k}": v for stage, m in metrics.items() for k, v in m.items()
                             if isinstance(v, (int, float)) and k.startswith("test/")}}
        raw["models"] = [m for m in raw["models"] if m["name"] != name] + [entry]
        new, errors = rebuild(raw, root)
        if errors:
            raise UserError("publishing the stages breaks the weights' limits: " + "; ".join(errors))
        new["models"][-1]["metrics"] = entry["metrics"]  # rebuild reads a top-level metrics.json, which stages lack
        save_json(manifest_path, new)
        logger.info("published the stages of %s as %s (%s)", run_dir, name, "committed" if committed else "cache")
        if single is False and not committed:
            logger.warning("%s: a stage trained with more than one TensorFlow thread (%s), so --stages rebuild cannot "
                           "repeat it; host its files (weights/download.py) or they are lost with this folder",
                           name, run_dir / THREADS_FILE)
    return name


def fetch(config, run_dir: str | os.PathLike, manifest=None) -> str:
    """Places the published stages matching ``config`` into ``run_dir`` (sha256-checked; downloaded if hosted).

    Stages already in ``run_dir`` are left as they are. Raises a :class:`UserError` naming what is published for
    the dataset when no entry matches the run's stage settings.
    """
    import weights

    manifest = manifest or weights.read_manifest(weights.MANIFEST)
    name = published(config, manifest).name
    folder = weights.path(name, manifest=manifest)
    run_dir = Path(run_dir)
    for stage in missing_stages(run_dir):  # each copied beside its place, then renamed: never half there
        source, target = folder / stage, run_dir / stage
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        if source.is_dir():
            shutil.copytree(source, partial)
        else:
            shutil.copy2(source, partial)
        os.replace(partial, target)
    logger.info("took the trained stages of %s from the weights (%s)", run_dir, name)
    return name


def published(config, manifest=None):
    """The manifest entry (``weights.Entry``) of the published stages matching ``config``'s stage settings.

    Raises:
      UserError: none matches; the message names what is published for the dataset and how it differs.
    """
    import weights

    manifest = manifest or weights.read_manifest(weights.MANIFEST)
    wanted = stage_config(config)
    found = [e for e in manifest.entries.values() if e.kind == KIND and e.info.get("stage_config") == wanted]
    if not found:
        others = [e for e in manifest.entries.values() if e.kind == KIND and e.info.get("dataset") == config.dataset]
        detail = "; ".join(f"{e.name}: " + ", ".join(f"{k}={v!r}" for k, v in e.info["stage_config"].items()
                                                    if wanted.get(k) != v) for e in others)
        raise UserError(f"no published evaluation stages match these settings ({config.dataset}, seed {config.seed})"
                        + (f"; published for {config.dataset}, with other settings: {detail}" if others else "")
                        + ". Train them with --stages train (and publish them with --publish-stages true)")
    return found[0]



def _portable(path: Path) -> None:
    """Rewrites a stage's JSON record without what no retraining repeats: the wall-clock seconds of a
    ``metrics.json``, and the absolute run folder in a ``model.json``'s training settings (relative to the project
    when inside it)."""
    record = load_json(path)
    if path.name == "metrics.json":
        record = {k: v for k, v in record.items() if not k.split("/")[-1].startswith("seconds")}
    elif isinstance(record.get("train_config"), dict):
        train = dict(record["train_config"])
        for key in ("out", "data_dir"):
            if isinstance(train.get(key), str) and Path(train[key]).is_absolute() \
                    and Path(train[key]).resolve().is_relative_to(PROJECT_ROOT):
                train[key] = Path(train[key]).resolve().relative_to(PROJECT_ROOT).as_posix()
        record["train_config"] = train
    save_json(path, record)


def _stage_copy(run_dir: Path, files: list[Path], staging: Path, config) -> None:
    """Copies the stage ``files`` of ``run_dir`` into ``staging`` as they are published (JSON records made portable,
    ``stage_config.json`` added)."""
    for p in files:
        target = staging / p.relative_to(run_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, target)
        if target.suffix == ".json":
            _portable(target)
    save_json(staging / "stage_config.json", stage_config(config))


def _stage_files(run_dir: Path) -> list[Path]:
    return [p for s in STAGE_PATHS
            for p in ((run_dir / s).rglob("*") if (run_dir / s).is_dir() else [run_dir / s]) if p.is_file()]


def needs_rebuild(config, manifest=None) -> bool:
    """Whether ``--stages rebuild`` must retrain the published stages matching ``config``: their files are missing
    here and no base url hosts them. (A local copy that differs is no reason: :func:`fetch` refuses it.)

    Raises:
      UserError: no published stages match ``config``.
    """
    import weights
    from weights.download import base_url

    manifest = manifest or weights.read_manifest(weights.MANIFEST)
    problems = weights.mismatches(published(config, manifest).name, manifest)
    return bool(problems) and base_url(manifest) is None and all(v.startswith("missing") for v in problems.values())


def training_folder(entry) -> Path:
    """The run folder where the entry's command trained its stages (``--out``, relative to the project root)."""
    words = entry.command.split()
    if "--out" not in words or words.index("--out") + 1 >= len(words):
        raise UserError(f"{entry.name}: its command names no --out folder to rebuild in: {entry.command}")
    out = Path(words[words.index("--out") + 1])
    return out if out.is_absolute() else PROJECT_ROOT / out


def check_rebuildable(entry) -> None:
    """Raises a :class:`UserError` saying what to do instead when a single-threaded retrain on this machine cannot
    repeat the sha256s of the published stages ``entry``: they trained with more than one TensorFlow thread, or on a
    CPU with other instruction sets."""
    if entry.info.get("rebuildable") is False:
        raise UserError(f"{entry.name} was trained with more than one TensorFlow thread, so a single-threaded "
                        "retrain cannot repeat its sha256s; host its files (CLUE_WEIGHTS_URL), or score a run on "
                        "stages of its own (--stages train)")
    here = cpu_signature()
    if (other := [c for c in entry.info.get("trained_on", []) if c.get("simd") != here["simd"]]):
        def describe(cpu):
            return f"{cpu.get('model')} ({', '.join(cpu.get('simd') or ['no SIMD flags read'])})"
        raise UserError(f"{entry.name} was trained on {describe(other[0])}; this machine is {describe(here)}. "
                        "TensorFlow runs other kernels for other instruction sets, so a retrain here cannot repeat "
                        "its sha256s: rebuild it on such a CPU, host its files (CLUE_WEIGHTS_URL), or score a run "
                        "on stages of its own (--stages train)")


def install(config, run_dir: str | os.PathLike, manifest=None) -> str:
    """Checks the stages trained in ``run_dir`` against the published entry matching ``config``, file by file
    (sha256 of the copies :func:`publish` would make), and on a full match places them where the weights are looked
    up (the cache, for an entry not committed), so that ``--stages weights`` runs take them from there.

    Raises:
      UserError: a stage is missing, or a retrained file differs from the published one; nothing is placed then,
        and the message names the files.
    """
    import weights
    from common.io import sha256_of

    manifest = manifest or weights.read_manifest(weights.MANIFEST)
    entry = published(config, manifest)
    run_dir = Path(run_dir)
    if missing := missing_stages(run_dir):
        raise UserError(f"{run_dir} lacks trained stages ({', '.join(missing)}): finish the run before installing")
    folder = manifest.local_dir(entry.name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".rebuild", dir=folder.parent))
    try:
        _stage_copy(run_dir, _stage_files(run_dir), staging, config)
        differ = [f"{f.file}: not retrained" if not (staging / f.file).is_file() else
                  f"{f.file}: sha256 {got[:12]}, published {f.sha256[:12]}"
                  for f in entry.files
                  if not (staging / f.file).is_file() or (got := sha256_of(staging / f.file)) != f.sha256]
        if differ:
            raise UserError(
                f"the stages trained in {run_dir} differ from the published {entry.name}:\n  " + "\n  ".join(differ)
                + "\nSweeps on them would not be on the published models, so nothing was installed. Score them as a "
                "run of their own (--stages train), or retrain them single-threaded on the code of the published run.")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("rebuilt %s bit for bit (%d files match their sha256s); installed in %s", entry.name,
                len(entry.files), folder)
    return entry.name


SINGLE_THREAD_ENV = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
