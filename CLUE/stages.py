"""The trained stages of an evaluation run as pretrained weights, so that its sweeps can be rerun without training.

:func:`publish` copies the stages (ground truth, artificial data, BNN, VAE, in-filling VAEAC) into ``weights/`` as
an ``evaluation_stages`` manifest entry keyed by the settings they depend on; :func:`fetch` places them, checked by
sha256, into a run folder; :func:`install` accepts stages retrained by ``--stages rebuild`` only if every sha256
matches, which needs one TensorFlow thread and the same CPU instruction sets (:func:`check_rebuildable`).
The pipeline (:mod:`CLUE.evaluation.pipeline`) imports this module, not the reverse.
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
from common.io import PROJECT_ROOT, load_json, save_json

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
    """TensorFlow's intra-op and inter-op thread counts: ``TF_NUM_*_THREADS``, else configured, else one per core."""
    import tensorflow as tf

    def count(env: str, configured: int) -> int:
        value = os.environ.get(env, "").strip()
        return int(value) if value.isdigit() and int(value) > 0 else configured or os.cpu_count() or 1

    return {"intra_op": count("TF_NUM_INTRAOP_THREADS", tf.config.threading.get_intra_op_parallelism_threads()),
            "inter_op": count("TF_NUM_INTEROP_THREADS", tf.config.threading.get_inter_op_parallelism_threads())}


def cpu_signature() -> dict[str, Any]:
    """This machine's CPU as a stage record holds it: ``model`` and ``simd`` (:func:`common.version.cpu_info`)."""
    from common.version import cpu_info

    info = cpu_info()
    return {"model": info["cpu_model"], "simd": info["simd"]}


def _stage_record(run_dir: str | os.PathLike) -> dict[str, list[dict[str, Any]]]:
    """``run_dir/stage_threads.json``: per stage, one record per start of its training (empty when absent)."""
    path = Path(run_dir) / THREADS_FILE
    return load_json(path) if path.exists() else {}


def note_training(run_dir: str | os.PathLike, stage: str) -> None:
    """Appends to ``run_dir/stage_threads.json`` that ``stage`` starts (or resumes) training, with threads and CPU."""
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
    """Whether a single-threaded retrain can repeat ``run_dir``'s stages: False if any start had > 1 intra-op thread,
    None if a stage has no record, else True."""
    record = _stage_record(run_dir)
    if any(t["intra_op"] != 1 for starts in record.values() for t in starts):
        return False
    return True if all(record.get(stage) for stage in TRAINED_STAGES) else None


def missing_stages(run_dir: str | os.PathLike) -> list[str]:
    return [p for p in STAGE_PATHS if not (Path(run_dir) / p).exists()]


def publish(config, run_dir: str | os.PathLike, command: str, committed: bool | None = None,
            root: str | os.PathLike | None = None) -> str:
    """Copies the trained stages of ``run_dir`` into the weights folder and its manifest; returns the entry name.

    ``committed``: ``weights/eval/<name>`` (git) or ``weights/cache/eval/<name>`` (hosted); None: committed if within
    the committed weights' size limits. ``root``: the folder of ``manifest.json`` (default ``weights/``)."""
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
    """Places the published stages matching ``config`` into ``run_dir`` (sha256-checked; downloaded if hosted), keeping
    stages already there; UserError naming what is published if no entry matches."""
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
    """The manifest entry (``weights.Entry``) matching ``config``'s stage settings; UserError if none."""
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
    """Rewrites a stage's JSON record without wall-clock seconds and with run folders relative to the project."""
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
    """Copies the stage ``files`` of ``run_dir`` into ``staging`` as published (portable JSON, plus stage_config)."""
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
    """Whether ``--stages rebuild`` must retrain: the published files are missing here and not hosted."""
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
    """Raises UserError (saying what to do) if a single-threaded retrain here cannot repeat ``entry``'s sha256s."""
    if entry.info.get("rebuildable") is False:
        raise UserError(f"{entry.name} was trained with more than one TensorFlow thread, so a single-threaded "
                        "retrain cannot repeat its sha256s; host its files (CLUE_WEIGHTS_URL), or score a run on "
                        "stages of its own (--stages train)")
    here = cpu_signature()
    if "trained_on" not in entry.info:
        logger.warning("%s records neither its threads nor its CPU (published before they were recorded): the retrain "
                       "may end with sha256s that differ; hosting its files (CLUE_WEIGHTS_URL) avoids the retrain",
                       entry.name)
    if (other := [c for c in entry.info.get("trained_on", []) if c.get("simd") != here["simd"]]):
        def describe(cpu):
            return f"{cpu.get('model')} ({', '.join(cpu.get('simd') or ['no SIMD flags read'])})"
        raise UserError(f"{entry.name} was trained on {describe(other[0])}; this machine is {describe(here)}. "
                        "TensorFlow runs other kernels for other instruction sets, so a retrain here cannot repeat "
                        "its sha256s: rebuild it on such a CPU, host its files (CLUE_WEIGHTS_URL), or score a run "
                        "on stages of its own (--stages train)")


def install(config, run_dir: str | os.PathLike, manifest=None) -> str:
    """Places the stages retrained in ``run_dir`` where ``--stages weights`` looks if every sha256 matches the entry;
    else raises UserError naming the files, and places nothing."""
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
