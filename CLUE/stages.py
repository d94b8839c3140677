"""The trained stages of an evaluation run as pretrained weights, so that its sweeps can be rerun without training.

A run of ``CLUE.evaluate`` trains five things before it explains anything: the ground-truth VAEAC with its
under-VAEAC, the artificial data drawn from them, and, on that data, the BNN, CLUE's VAE and U-FIDO's in-filling
VAEAC. :func:`publish` copies them (with each stage's ``metrics.json``) into one folder under ``weights/`` and records
it in ``weights/manifest.json`` as an ``evaluation_stages`` entry whose ``stage_config`` holds every setting the
stages depend on; :func:`fetch` finds the entry matching a run's settings, verifies every file's sha256 (downloading
it where it is hosted rather than committed) and places the stages into the run folder, where ``CLUE.evaluate``
then finds them finished. ``python -m CLUE.evaluate ... --publish-stages true`` and ``--stages weights`` call them.
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
from common.utils import load_json, save_json

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


def stage_config(config) -> dict[str, Any]:
    """The settings of an evaluation ``config`` (``CLUE.evaluate.Config``) that its trained stages depend on."""
    values = dataclasses.asdict(config)
    return {k: v for k, v in sorted(values.items()) if k not in NOT_STAGE_FIELDS
            and (k in STAGE_FIELDS or k.startswith(STAGE_PREFIXES))}


def entry_name(config) -> str:
    """``eval_<dataset>_s<seed>_<digest>``: the manifest name of the stages of ``config``."""
    digest = hashlib.sha256(json.dumps(stage_config(config), sort_keys=True).encode()).hexdigest()[:8]
    return f"eval_{config.dataset}_s{config.seed}_{digest}"


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
        files = [p for s in STAGE_PATHS
                 for p in ((run_dir / s).rglob("*") if (run_dir / s).is_dir() else [run_dir / s]) if p.is_file()]
        if committed is None:
            present = sum(f["bytes"] for m in raw["models"] if m["committed"] and m["name"] != name for f in m["files"])
            total = sum(p.stat().st_size for p in files)
            committed = max(p.stat().st_size for p in files) < MAX_FILE_BYTES and present + total < MAX_COMMITTED_BYTES
        rel = f"eval/{name}"
        dest = root / rel if committed else root / "cache" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=dest.parent))
        try:
            for p in files:
                target = staging / p.relative_to(run_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, target)
            save_json(staging / "stage_config.json", stage_config(config))
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
                 "metrics": {f"{stage}/{k}": v for stage, m in metrics.items() for k, v in m.items()
                             if isinstance(v, (int, float)) and k.startswith("test/")}}
        raw["models"] = [m for m in raw["models"] if m["name"] != name] + [entry]
        new, errors = rebuild(raw, root)
        if errors:
            raise UserError("publishing the stages breaks the weights' limits: " + "; ".join(errors))
        new["models"][-1]["metrics"] = entry["metrics"]  # rebuild reads a top-level metrics.json, which stages lack
        save_json(manifest_path, new)
        logger.info("published the stages of %s as %s (%s)", run_dir, name, "committed" if committed else "cache")
    return name


def fetch(config, run_dir: str | os.PathLike, manifest=None) -> str:
    """Places the published stages matching ``config`` into ``run_dir`` (sha256-checked; downloaded if hosted).

    Stages already in ``run_dir`` are left as they are. Raises a :class:`UserError` naming what is published for
    the dataset when no entry matches the run's stage settings.
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
    name = found[0].name
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
