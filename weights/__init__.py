"""Pretrained weights: the manifest, sha256-verified local lookup, and loaders for notebooks and scripts.

``weights/manifest.json`` lists each model's folder, files (sha256, size, url relative to ``base_url`` or
``$CLUE_WEIGHTS_URL``), command, seed and test metrics. Committed models live under ``weights/<component>/<dataset>/``;
the others are downloaded (``python -m weights.download NAME``) into ``weights/cache/`` of a checkout, or into the
user cache when installed. A file whose sha256 does not match is never used. ``weights.load(name)`` uses the loader
its kind registered in ``common.export``, so this package imports no model code. See ``weights/README.md``.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.io import cached_sha256
from common.io import sha256_of as sha256_of  # re-exported as weights.sha256_of
from common.validation import register_advice
from common.version import checkout_root, user_cache_dir

ROOT = Path(__file__).resolve().parent
MANIFEST = ROOT / "manifest.json"
CACHE = "cache"  # sub-folder of the manifest's folder holding downloaded (not committed) models; git-ignored
ENV_CACHE = "CLUE_CACHE_DIR"  # an installed package downloads into $CLUE_CACHE_DIR/weights/ (see default_cache)
ENV_URL = "CLUE_WEIGHTS_URL"
FORMAT = "clue-tf/weights-manifest/v1"


class WeightsError(UserError, RuntimeError):
    """Pretrained weights are missing and cannot be fetched, or a file does not match its sha256 (a UserError)."""


@dataclass(frozen=True)
class FileEntry:
    """One file of a model: its name in the model's folder, sha256, size and url (relative to the base url)."""

    file: str
    sha256: str
    bytes: int
    url: str


@dataclass(frozen=True)
class Entry:
    """One pretrained model of the manifest: ``name``, ``kind`` (of its ``common.export`` loader), ``path`` (under
    ``weights/``, or ``weights/cache/`` unless ``committed``), ``files``, training ``command`` and ``seed``, test
    ``metrics``, and ``info`` (the entry's other fields)."""

    name: str
    kind: str
    path: str
    committed: bool
    files: tuple[FileEntry, ...]
    command: str
    seed: int
    metrics: dict[str, Any]
    info: dict[str, Any]  # every other field of the manifest entry (description, dataset, code commit, ...)


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest; ``root`` is the folder that holds it (committed model folders are relative to it);
    downloaded models go under ``cache`` (``root / CACHE`` when None)."""

    root: Path
    base_url: str | None
    entries: dict[str, Entry]
    cache: Path | None = None

    def entry(self, name: str) -> Entry:
        if name not in self.entries:
            raise WeightsError(f"no pretrained weights named {name!r} in {self.root / 'manifest.json'}; "
                               f"known: {', '.join(self.entries)}")
        return self.entries[name]

    def local_dir(self, name: str) -> Path:
        """Where the model's folder is (committed) or goes when downloaded (not committed)."""
        entry = self.entry(name)
        return self.root / entry.path if entry.committed else (self.cache or self.root / CACHE) / entry.path


def default_cache() -> Path | None:
    """Where the shipped manifest's downloads go: None in a git checkout (``weights/cache/``); installed,
    ``$CLUE_CACHE_DIR/weights``, else ``~/.cache/clue-tf/weights`` (``$XDG_CACHE_HOME`` respected)."""
    if checkout_root() is not None:
        return None
    return Path(os.environ.get(ENV_CACHE) or user_cache_dir()) / "weights"


def read_manifest(path: str | os.PathLike = MANIFEST) -> Manifest:
    """Parses a manifest (default: the committed one); the shipped one's downloads go to :func:`default_cache`."""
    path = Path(path)
    raw = json.loads(path.read_text())
    if raw.get("format") != FORMAT:
        raise WeightsError(f"{path}: format {raw.get('format')!r}, expected {FORMAT!r}")
    entries = {}
    for item in raw["models"]:
        known = {"name", "kind", "path", "committed", "files", "command", "seed", "metrics"}
        entries[item["name"]] = Entry(
            item["name"], item["kind"], item["path"], bool(item["committed"]),
            tuple(FileEntry(**f) for f in item["files"]), item["command"], int(item["seed"]),
            dict(item.get("metrics") or {}), {k: v for k, v in item.items() if k not in known})
    cache = default_cache() if path.resolve() == MANIFEST else None
    return Manifest(path.resolve().parent, raw.get("base_url"), entries, cache)


def mismatches(name: str, manifest: Manifest | None = None) -> dict[str, str]:
    """Files of ``name`` that are missing or differ from the manifest: file name -> what is wrong."""
    manifest = manifest or read_manifest()
    entry, folder = manifest.entry(name), manifest.local_dir(name)
    problems = {}
    for f in entry.files:
        local = folder / f.file
        if not local.is_file():
            problems[f.file] = f"missing: {local}"
        elif local.stat().st_size != f.bytes:
            problems[f.file] = f"{local} has {local.stat().st_size} bytes, the manifest records {f.bytes}"
        elif (got := cached_sha256(local)) != f.sha256:
            problems[f.file] = f"{local} has sha256 {got}, the manifest records {f.sha256}"
    return problems


def available(name: str, manifest: Manifest | None = None) -> bool:
    """Whether every file of ``name`` is present locally and matches its sha256 (never downloads)."""
    return not mismatches(name, manifest)


def path(name: str, download: bool = True, manifest: Manifest | None = None) -> Path:
    """The verified local folder of ``name``, downloaded if missing and ``download``. Raises WeightsError when it
    cannot be, or when a local file differs (never silently replaced: ``python -m weights.download --force``)."""
    manifest = manifest or read_manifest()
    problems = mismatches(name, manifest)
    if not problems:
        return manifest.local_dir(name)
    if not download:
        if manifest.entry(name).committed:
            what_to_do = restore_advice(name, [manifest.local_dir(name) / f for f in problems], manifest) + "."
        else:
            what_to_do = (f"Fetch them with `python -m weights.download {name}` or train them with:\n"
                          f"  {manifest.entry(name).command}")
        raise WeightsError(f"pretrained weights {name!r} are not available locally:\n"
                           + "\n".join(f"  {p}" for p in problems.values()) + "\n" + what_to_do)
    from weights.download import download as _download  # imported here: download imports this module

    return _download(name, manifest)


def git_path(file: str | os.PathLike) -> str:
    """``file`` relative to the repository root when it is inside it (what ``git checkout --`` takes), else as given."""
    file = Path(file).resolve()
    try:
        return file.relative_to(ROOT.parent).as_posix()
    except ValueError:
        return str(file)


def restore_advice(name: str, files: list[str | os.PathLike] | None = None, manifest: Manifest | None = None) -> str:
    """How to get good copies of ``files`` of ``name`` (default: its folder): ``git checkout`` for committed
    models, else ``python -m weights.download NAME --force`` or the training command."""
    manifest = manifest or read_manifest()
    entry = manifest.entry(name)
    targets = " ".join(git_path(f) for f in (files or [manifest.local_dir(name)]))
    if entry.committed:
        return (f"{name} is committed in git, not hosted for download: restore it with `git checkout -- {targets}` "
                f"(or, with a mirror of weights/ in ${ENV_URL}, `python -m weights.download {name} --force`)")
    hosted = manifest.base_url or os.environ.get(ENV_URL)
    mirror = "" if hosted else f" (it is not hosted yet: point ${ENV_URL} at a mirror of weights/)"
    return (f"re-download it with `python -m weights.download {name} --force`{mirror}, or retrain it with "
            f"`{entry.command}`")


def repair_advice(file: str | os.PathLike, manifest: Manifest | None = None) -> str | None:
    """``restore_advice`` for ``file`` when it belongs to a model of the manifest, else None."""
    manifest = manifest or read_manifest()
    target = Path(file).resolve()
    for name in manifest.entries:
        folder = manifest.local_dir(name).resolve()
        if target == folder or folder in target.parents:
            return restore_advice(name, [target], manifest)
    return None


register_advice(repair_advice)  # damaged-file errors of the model loaders name the manifest's remedy


# The loader of each kind of model, imported when a model of that kind is loaded (weights depends on common/ alone).
LOADERS = {"bnn_posterior": ("BNN.posterior", "Posterior.load"), "vae": ("VAE.model", "load_vae"),
           "expvae": ("VAE.expvae", "load_expvae"), "vaeac": ("VAEAC.export", "load_model"),
           "under_vaeac": ("VAEAC.export", "load_model"), "factorvae": ("VAE.factorvae", "load_factorvae"),
           "resnet_vae": ("VAE.resnet_vae", "load_resnet_vae")}


def loader(kind: str):
    """The function that loads an export of ``kind`` (a key of :data:`LOADERS`) from its folder."""
    if kind not in LOADERS:
        raise WeightsError(f"no loader for models of kind {kind!r} (kinds: {', '.join(LOADERS)})")
    module, attribute = LOADERS[kind]
    found = importlib.import_module(module)
    for part in attribute.split("."):
        found = getattr(found, part)
    return found


def load(name: str, download: bool = True, manifest: Manifest | None = None, kind: str | None = None,
         **kwargs: Any) -> Any:
    """The model ``name`` from its verified folder (:func:`path`), rebuilt by its kind's loader (``kwargs`` go to it).
    Raises WeightsError as :func:`path`, when ``kind`` differs, or when the kind has no loader."""
    manifest = manifest or read_manifest()
    got = manifest.entry(name).kind
    if kind is not None and got != kind:
        raise WeightsError(f"{name!r} is a {got!r}, not a {kind!r}")
    return loader(got)(path(name, download, manifest), **kwargs)


def load_posterior(name: str, download: bool = True, manifest: Manifest | None = None, **kwargs: Any):
    """``BNN.posterior.Posterior.load`` of the verified folder of ``name`` (kwargs go to ``load``)."""
    return load(name, download, manifest, "bnn_posterior", **kwargs)


def load_vae(name: str, download: bool = True, manifest: Manifest | None = None):
    """``VAE.model.load_vae`` of the verified folder of ``name``."""
    return load(name, download, manifest, "vae")


def load_expvae(name: str, download: bool = True, manifest: Manifest | None = None):
    """``VAE.expvae.load_expvae`` of the verified folder of ``name`` (the attention notebook's conv VAEs)."""
    return load(name, download, manifest, "expvae")


def names(manifest: Manifest | None = None) -> list[str]:
    """Names of all models in the manifest, in manifest order."""
    return list((manifest or read_manifest()).entries)
