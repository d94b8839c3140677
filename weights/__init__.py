"""Pretrained weights: the manifest, sha256-verified local lookup, and loaders for notebooks and scripts.

``weights/manifest.json`` lists every pretrained model the notebooks use: its folder, each file's sha256, size and
download url (relative to the manifest's ``base_url``, which ``$CLUE_WEIGHTS_URL`` overrides), the command and seed
that produced it, and its test metrics. The tabular models are committed under ``weights/<component>/<dataset>/``;
models too large to commit (``"committed": false``) are downloaded by ``python -m weights.download NAME`` into the
git-ignored ``weights/cache/`` of a git checkout or, when the package is installed, into the user's cache folder
(``$CLUE_CACHE_DIR/weights/``, else ``~/.cache/clue-tf/weights/``; never into site-packages). A file whose sha256
does not match the manifest is never used.

Notebooks load pretrained weights when present and train otherwise::

    import weights
    if weights.available("bnn_lsat"):
        posterior = weights.load_posterior("bnn_lsat")   # or weights.load("bnn_lsat")
    else:
        ...  # BNN.train.main(config), as the entry's command does

This package imports no model code: ``weights.load(name)`` hands the verified folder to the loader that the entry's
kind registered in ``common.export`` (``BNN.posterior``, ``VAE.model``, ``VAE.expvae`` and ``VAEAC.model`` register
theirs when imported). Checksums and verified downloads are ``common.io``'s.

``python -m weights.manifest`` rebuilds the sha256, byte counts and metrics of the manifest from the files, so they
are never edited by hand.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import export
from common.errors import UserError
from common.io import cached_sha256
from common.io import sha256_of as sha256_of  # re-exported: weights.sha256_of, as it always was
from common.validation import register_advice
from common.version import checkout_root, user_cache_dir

ROOT = Path(__file__).resolve().parent
MANIFEST = ROOT / "manifest.json"
CACHE = "cache"  # sub-folder of the manifest's folder holding downloaded (not committed) models; git-ignored
ENV_CACHE = "CLUE_CACHE_DIR"  # an installed package downloads into $CLUE_CACHE_DIR/weights/ (see default_cache)
ENV_URL = "CLUE_WEIGHTS_URL"
FORMAT = "clue-tf/weights-manifest/v1"


class WeightsError(UserError, RuntimeError):
    """Pretrained weights are missing and cannot be fetched, or a file does not match its recorded sha256.

    A :class:`common.errors.UserError` (the message says what to do), and a ``RuntimeError`` as it always was.
    """


@dataclass(frozen=True)
class FileEntry:
    """One file of a model: its name in the model's folder, sha256, size and url (relative to the base url)."""

    file: str
    sha256: str
    bytes: int
    url: str


@dataclass(frozen=True)
class Entry:
    """One pretrained model of the manifest.

    Attributes:
      name: the key used by ``weights.path(name)`` and ``python -m weights.download NAME``.
      kind: the kind of its export (``common.export``): ``"bnn_posterior"`` (``BNN.posterior.Posterior.load``),
        ``"vae"`` (``VAE.model.load_vae``), ``"expvae"`` (``VAE.expvae.load_expvae``), ... ``weights.load`` uses
        the loader registered for it.
      path: folder relative to ``weights/`` (committed) or ``weights/cache/`` (downloaded).
      committed: whether the files are in git; otherwise they are downloaded into the cache.
      files: every file of the folder, with its sha256 and size.
      command: the command that trained it; ``seed`` its seed.
      metrics: the test metrics the training run recorded (``metrics.json`` in the folder).
    """

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
    """Where the shipped manifest's downloaded models go: None in a git checkout (``weights/cache/``, as always);
    installed, ``$CLUE_CACHE_DIR/weights`` or else ``~/.cache/clue-tf/weights`` (``$XDG_CACHE_HOME`` respected)."""
    if checkout_root() is not None:
        return None
    return Path(os.environ.get(ENV_CACHE) or user_cache_dir()) / "weights"


def read_manifest(path: str | os.PathLike = MANIFEST) -> Manifest:
    """Parses a manifest file (the committed ``weights/manifest.json`` by default). Downloads of the shipped manifest
    go to :func:`default_cache` when the package is installed; those of any other manifest beside it, in ``cache/``."""
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
    """The local folder of model ``name``, verified against the manifest; downloads it if missing and allowed.

    Raises:
      WeightsError: the files are missing and ``download`` is False or the download fails, or a local file differs
        from the manifest (it is never silently replaced: see ``python -m weights.download --force``).
    """
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
    """How to get good copies of files of model ``name`` (its whole folder when ``files`` is None).

    Committed models are not hosted anywhere: the advice is ``git checkout -- <files>``; downloaded ones get
    ``python -m weights.download NAME --force`` (with a mirror while none is hosted) or their training command.
    """
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


def load(name: str, download: bool = True, manifest: Manifest | None = None, kind: str | None = None,
         **kwargs: Any) -> Any:
    """The model ``name``, from its verified folder (see :func:`path`), rebuilt by the loader that its kind
    registered in ``common.export`` (``kwargs`` go to the loader).

    Args:
      kind: when given, the kind the entry must have (e.g. ``"vae"``).

    Raises:
      WeightsError: as :func:`path`; the entry is of another kind than ``kind``; or no loader is registered for its
        kind (import the component that defines it first, e.g. ``import VAE.model``).
    """
    manifest = manifest or read_manifest()
    got = manifest.entry(name).kind
    if kind is not None and got != kind:
        raise WeightsError(f"{name!r} is a {got!r}, not a {kind!r}")
    folder = path(name, download, manifest)
    if got not in export.registered():
        raise WeightsError(f"{name!r} is a {got!r}, for which no loader is registered (registered: "
                           f"{', '.join(export.registered()) or 'none'}): import the module that defines it first, "
                           f"or load {folder} yourself")
    return export.load(got, folder, **kwargs)


# The per-kind helpers import their component only because importing it registers its loader (weights itself
# depends on common/ alone; the component is not used here otherwise).
def load_posterior(name: str, download: bool = True, manifest: Manifest | None = None, **kwargs: Any):
    """``BNN.posterior.Posterior.load`` of the verified folder of ``name`` (kwargs go to ``load``)."""
    import BNN.posterior  # noqa: F401

    return load(name, download, manifest, "bnn_posterior", **kwargs)


def load_vae(name: str, download: bool = True, manifest: Manifest | None = None):
    """``VAE.model.load_vae`` of the verified folder of ``name``."""
    import VAE.model  # noqa: F401

    return load(name, download, manifest, "vae")


def load_expvae(name: str, download: bool = True, manifest: Manifest | None = None):
    """``VAE.expvae.load_expvae`` of the verified folder of ``name`` (the attention notebook's conv VAEs)."""
    import VAE.expvae  # noqa: F401

    return load(name, download, manifest, "expvae")


def names(manifest: Manifest | None = None) -> list[str]:
    """Names of all models in the manifest, in manifest order."""
    return list((manifest or read_manifest()).entries)
