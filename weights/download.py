"""Fetches pretrained weights listed in ``weights/manifest.json``, verified by sha256, written atomically.

``python -m weights.download NAME ... | --all | --parity | --list``. File urls are relative to ``--base-url``, else
``$CLUE_WEIGHTS_URL``, else the manifest's ``base_url``: ``http(s)://``, ``file://`` or a folder laid out like
``weights/`` (a base holding ``{flat}`` takes flat file names). A model's files are all verified before any is moved
into place; a local file that differs is refused unless ``--force``. Hosts and parity kits: ``weights/README.md``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath

from common.io import DownloadError, download_file, making_parents
from weights import CACHE, ENV_URL, MANIFEST, FileEntry, Manifest, WeightsError, git_path, mismatches, read_manifest

logger = logging.getLogger(__name__)

PARITY_KIND = "parity_kit"  # manifest entries holding the PyTorch original's parity kits
PARITY_PATH = "parity"  # their folder on the host (<base>/parity/lsat/io.npz) and in the weights cache
ENV_PARITY = "CLUE_PARITY_DIR"  # where the kits are (and are downloaded to); the parity tests read it too
PARITY_FETCH = "python -m weights.download --parity"


def parity_root(manifest: Manifest | None = None) -> Path:
    """Where the parity kits are downloaded to: ``$CLUE_PARITY_DIR``, else ``parity/`` of the manifest's cache
    (``weights/cache/parity`` in a checkout). Laid out as ``../shared/reference/parity``: ``<root>/<kit>/...``."""
    if env := os.environ.get(ENV_PARITY):
        return Path(env).expanduser()
    manifest = manifest or read_manifest()
    return (manifest.cache or manifest.root / CACHE) / PARITY_PATH


def parity_view(manifest: Manifest, root: str | os.PathLike | None = None) -> Manifest:
    """The manifest's parity kits alone, their local folders under ``root`` (default :func:`parity_root`)."""
    root = Path(root) if root is not None else parity_root(manifest)
    entries = {name: replace(e, path=PurePosixPath(e.path).relative_to(PARITY_PATH).as_posix())
               for name, e in manifest.entries.items() if e.kind == PARITY_KIND}
    return Manifest(manifest.root, manifest.base_url, entries, root)


def base_url(manifest: Manifest, override: str | None = None) -> str | None:
    """The base url in force: ``override``, else ``$CLUE_WEIGHTS_URL``, else the manifest's; plain paths -> file://."""
    base = override or os.environ.get(ENV_URL) or manifest.base_url
    if base and "://" not in base:
        base = Path(base).resolve().as_uri()
    return base.rstrip("/") if base else None


FLAT = "{flat}"  # in a base url: where each file's flat name goes (hosts that keep a flat list of files)


def flat_name(url: str) -> str:
    """A manifest url as one flat file name: ``bnn/mnist/samples.npz`` -> ``bnn--mnist--samples.npz``."""
    return url.strip("/").replace("/", "--")


def file_url(base: str, f: FileEntry) -> str:
    """The url of one file: its manifest url under ``base``, or its flat name in place of ``{flat}``; absolute as is."""
    if "://" in f.url:
        return f.url
    if FLAT in base:
        return base.replace(FLAT, flat_name(f.url))
    return f"{base}/{f.url.lstrip('/')}"


def fetch_file(url: str, target: Path, expected: FileEntry, timeout: float = 60.0, progress: bool = True) -> None:
    """Downloads ``url`` to ``target``, checking size and sha256 against ``expected``; on any failure, WeightsError
    (naming the file, url and expected sha256) and no ``target``."""
    try:
        download_file(url, target, expected.sha256, size=expected.bytes, timeout=timeout, progress=progress,
                      name=expected.file)
    except DownloadError as err:
        raise WeightsError(str(err)) from err


def download(name: str, manifest: Manifest | None = None, base: str | None = None, force: bool = False,
             progress: bool = True) -> Path:
    """Makes the files of model ``name`` present and verified, downloading what is missing; returns its folder.

    ``base`` overrides ``$CLUE_WEIGHTS_URL`` and the manifest's; ``force`` replaces local files that differ. Raises
    WeightsError when nothing hosts it (the message gives the training command), a local file differs without
    ``force``, or a download fails or does not match."""
    manifest = manifest or read_manifest()
    entry, folder = manifest.entry(name), manifest.local_dir(name)
    problems = mismatches(name, manifest)
    if not problems:
        logger.debug("%s: all %d files present and verified in %s", name, len(entry.files), folder)
        return folder
    differing = {k: v for k, v in problems.items() if not v.startswith("missing")}
    base = base_url(manifest, base)
    # Committed models are in git only: without a mirror there is nothing to download them from.
    restore = " ".join(git_path(folder / f) for f in problems)
    if differing and not force:
        if entry.committed and base is None:
            replace = (f"to restore the committed files, run `git checkout -- {restore}` (committed models are not "
                       f"hosted for download, so `python -m weights.download {name} --force` cannot replace them)")
        else:
            replace = f"to replace them with the published files, run `python -m weights.download {name} --force`"
        raise WeightsError(
            f"{name}: local files differ from the manifest; refusing to use or overwrite them:\n"
            + "\n".join(f"  {v}" for v in differing.values())
            + f"\nIf you replaced them on purpose, record them with `python -m weights.manifest`; {replace}.")
    todo = [f for f in entry.files if f.file in problems]
    if base is None and entry.committed:
        if differing:
            raise WeightsError(
                f"{name} is committed in git and not hosted for download, so --force has nothing to replace "
                f"{', '.join(differing)} with. Restore the committed files with `git checkout -- {restore}`, or set "
                f"{ENV_URL} to a mirror of weights/.")
        raise WeightsError(f"{name}: files missing from the checkout ({', '.join(problems)}); they are committed: "
                           f"restore them with `git checkout -- {restore}`, or set {ENV_URL} to a mirror of weights/.")
    if base is None and entry.kind == PARITY_KIND:
        raise WeightsError(
            f"{name} is not hosted yet (the manifest has no base_url): it is the original PyTorch code's parity kit "
            f"({entry.info.get('source', '../shared/reference/parity')}); copy that folder to {folder}, set "
            f"{ENV_PARITY} to where it is, or set {ENV_URL} to a mirror published by `python -m weights.publish`.")
    if base is None and any("://" not in f.url for f in todo):
        raise WeightsError(
            f"{name} is not hosted yet (the manifest has no base_url). Train it with:\n  {entry.command}\n"
            f"(a retrained model has its own sha256: load it from that run's folder, not through weights/), or set "
            f"{ENV_URL} to an http(s)://, file:// or folder address that mirrors weights/ and holds {entry.path}/.")
    with making_parents(folder.parent):  # on failure, removes the folders it made
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".download", dir=folder.parent))
        try:
            for f in todo:
                url = file_url(base, f)
                logger.info("downloading %s/%s from %s", name, f.file, url)
                fetch_file(url, staging / f.file, f, progress=progress)  # files may sit in sub-folders
            for f in todo:
                (folder / f.file).parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / f.file, folder / f.file)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if remaining := mismatches(name, manifest):  # cannot happen unless the folder changed under us
        raise WeightsError(f"{name}: still not verified after download: {remaining}")
    return folder


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m weights.download", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="models to fetch (see --list)")
    parser.add_argument("--all", action="store_true", help="every model of the manifest (not the parity kits)")
    parser.add_argument("--parity", action="store_true",
                        help=f"the PyTorch parity kits, into ${ENV_PARITY} or weights/cache/parity")
    parser.add_argument("--list", action="store_true", help="list the entries and where each is or comes from")
    parser.add_argument("--force", action="store_true", help="replace local files that differ from the manifest")
    parser.add_argument("--base-url", default=None, help=f"overrides ${ENV_URL} and the manifest's base_url")
    parser.add_argument("--manifest", default=str(MANIFEST), help="manifest file (default: weights/manifest.json)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if not (args.names or args.all or args.list or args.parity):
        parser.error("give NAME(s), --all, --parity or --list")
    return args


def status(name: str, manifest: Manifest, base: str | None = None) -> str:
    """Where entry ``name`` is or can come from: committed, in cache, downloadable from a base url, or not hosted
    (with what makes it); a local copy that differs from the manifest says so."""
    entry = manifest.entry(name)
    local = parity_view(manifest) if entry.kind == PARITY_KIND else manifest
    problems = mismatches(name, local)
    differing = [p for p in problems.values() if not p.startswith("missing")]
    if not problems:
        return "committed" if entry.committed else f"in cache ({local.local_dir(name)})"
    if differing:
        return f"differs from the manifest: {differing[0]}"
    explicit = base or os.environ.get(ENV_URL)  # a mirror the user names, rather than the manifest's host
    base = base_url(manifest, base)
    if base and entry.info.get("hosted") is False and not explicit:
        base = None  # the upload at the manifest's base_url left it out
    if base:
        return ("committed, missing here: " if entry.committed else "") + f"downloadable from {base}"
    if entry.committed:
        return f"committed, missing here: `git checkout -- {git_path(local.local_dir(name))}`"
    if entry.kind == PARITY_KIND:
        return f"not hosted: copy it from {entry.info.get('source', '../shared/reference/parity')}"
    return f"not hosted: train it with {entry.command}"


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (0 when every requested entry is present and verified)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    manifest = read_manifest(args.manifest)
    if args.list:
        for entry in manifest.entries.values():
            size = sum(f.bytes for f in entry.files)
            print(f"{entry.name:24} {size / 1e6:8.1f} MB  {status(entry.name, manifest, args.base_url)}")
        return 0
    names = list(args.names)
    if args.all:
        names += [n for n, e in manifest.entries.items() if e.kind != PARITY_KIND]
    if args.parity:
        kits = [n for n, e in manifest.entries.items() if e.kind == PARITY_KIND]
        if not kits:
            logger.error("%s lists no parity kits (they are recorded by `python -m weights.publish`)", args.manifest)
            return 1
        names += kits
    failed = []
    for name in dict.fromkeys(names):
        try:
            kind = manifest.entry(name).kind
            target = parity_view(manifest) if kind == PARITY_KIND else manifest
            folder = download(name, target, args.base_url, args.force, progress=not args.no_progress)
            logger.info("%s: verified in %s", name, folder)
        except WeightsError as err:
            failed.append(name)
            logger.error("%s", err)
    if failed:
        logger.error("failed: %s", ", ".join(failed))
    elif args.parity:
        logger.info("parity kits in %s (the parity tests find them there%s)", parity_root(manifest),
                    "" if os.environ.get(ENV_PARITY) else f"; elsewhere, set {ENV_PARITY}")
    return 1 if failed else 0


if __name__ == "__main__":
    from common.cli import run

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(main)
