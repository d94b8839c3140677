"""The PyTorch parity kits as manifest entries: each kit folder of ``../shared/reference/parity`` is an entry
``parity_<folder>`` of kind ``parity_kit``, the files at its top the entry ``parity_docs``."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from common.io import save_json
from weights import MANIFEST, WeightsError
from weights.download import PARITY_KIND, PARITY_PATH

logger = logging.getLogger(__name__)

DEFAULT_PARITY_DIR = MANIFEST.parent.parent.parent / "shared" / "reference" / "parity"
PARITY_DOCS = "parity_docs"  # the files at the top of the parity folder (schemas, verify reports)
KIT_DESCRIPTIONS = {
    "lsat": "the original PyTorch CLUE code's trained LSAT BNN posterior (SG-HMC samples, Gaussian MLP) and VAE, with "
            "the reference inputs and the outputs its code computed from them (bnn_samples.npz, vae.npz, io.npz)",
    "compas": "the original PyTorch CLUE code's trained COMPAS BNN posterior (SG-HMC samples, categorical MLP) and "
              "VAE, with the reference inputs and the outputs its code computed from them",
    "wine": "the original PyTorch CLUE code's trained Wine BNN posterior (SG-HMC samples, Gaussian MLP) and its "
            "continuous-only Gaussian VAE, with the reference inputs and outputs (format SCHEMA-WINE-CREDIT.md)",
    "credit": "the original PyTorch CLUE code's trained Credit BNN posterior (SG-HMC samples, categorical MLP) and "
              "VAE, with the reference inputs and outputs (format SCHEMA-WINE-CREDIT.md)",
    "evaluation": "the original evaluation framework's reference outputs for Wine and COMPAS: sensitivity and CLUE "
                  "runs, the ground-truth and in-filling VAEACs' weights and outputs, U-FIDO (format "
                  "evaluation/SCHEMA-EVALUATION.md)",
}
KIT_DATASETS = {"evaluation": "wine, compas"}
KIT_COMMAND = ("exported from the original PyTorch code (cambridge-mlg/CLUE@3aaea125, patched as "
               "../shared/reference/README.md lists); not reproducible from this repository")


def _files_of(folder: Path, recursive: bool) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return [p for p in sorted(found) if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)]


def parity_kits(parity_dir: str | os.PathLike) -> dict[str, tuple[Path, list[Path]]]:
    """The kits of ``parity_dir``: entry name -> (its folder, its files). Each sub-folder is a kit ``parity_<folder>``
    (all files below it); the files at the top are ``parity_docs``."""
    parity_dir = Path(parity_dir)
    if not parity_dir.is_dir():
        raise WeightsError(f"--parity-dir {parity_dir} is not a folder (give the parity kits' folder, or --no-parity)")
    kits = {}
    top = _files_of(parity_dir, recursive=False)
    if top:
        kits[PARITY_DOCS] = (parity_dir, top)
    for sub in sorted(p for p in parity_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if files := _files_of(sub, recursive=True):
            kits[f"parity_{sub.name}"] = (sub, files)
    return kits


def kit_entry(name: str, folder: Path, files: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest entry of one parity kit (``files``: file, sha256, bytes, url records)."""
    kit = name.removeprefix("parity_")
    if name == PARITY_DOCS:
        path, dataset = PARITY_PATH, "lsat, compas, wine, credit"
        description = ("the parity kits' format descriptions (SCHEMA*.md) and the independent numpy recomputation "
                       "reports (verify_report*.json) that verification.parity reads beside the kits")
    else:
        path, dataset = f"{PARITY_PATH}/{kit}", KIT_DATASETS.get(kit, kit)
        description = KIT_DESCRIPTIONS.get(kit, f"parity kit {kit} of the original PyTorch code")
    return {"name": name, "kind": PARITY_KIND, "dataset": dataset, "description": description, "path": path,
            "committed": False, "command": KIT_COMMAND, "seed": 0,
            "seed_note": "the original driver's torch and numpy seed; its create_net reseeds torch with 42",
            "source": "../shared/reference/parity" + ("" if name == PARITY_DOCS else f"/{kit}"),
            "files": files, "metrics": {}}


def record_kits(manifest_path: Path, kits: list[dict[str, Any]]) -> bool:
    """Adds or updates the parity kits' entries in the manifest; returns whether it changed."""
    from weights.manifest import lock

    with lock(manifest_path):
        raw = json.loads(manifest_path.read_text())
        by_name = {m["name"]: i for i, m in enumerate(raw["models"])}
        changed = False
        for kit in kits:
            if kit["name"] in by_name:
                old = raw["models"][by_name[kit["name"]]]
                if old != kit:
                    if old.get("files") != kit["files"]:
                        logger.warning("%s: the kit's files differ from the manifest's record; recording them anew",
                                       kit["name"])
                    raw["models"][by_name[kit["name"]]] = kit
                    changed = True
            else:
                raw["models"].append(kit)
                changed = True
        if changed:
            save_json(manifest_path, raw)
    return changed
