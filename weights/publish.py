"""Lays out every model of the manifest and the PyTorch parity kits as a folder to upload to a model host.

``python -m weights.publish OUT`` (``--only NAME ...``, ``--from DIR``, ``--flat``, ``--no-parity``) checks each file
against the manifest while copying it; after uploading, ``--set-base-url URL --revision COMMIT`` records the host.
Layout, model cards and the maintainer's steps: ``weights/README.md`` ("Publishing").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.io import atomic_path, save_json
from weights import CACHE, FORMAT, MANIFEST, Manifest, WeightsError, read_manifest
from weights.cards import CARD, index_card, model_card
from weights.download import FLAT, PARITY_KIND, flat_name
from weights.kits import DEFAULT_PARITY_DIR, kit_entry, parity_kits, record_kits

logger = logging.getLogger(__name__)

SUMS = "SHA256SUMS"
HUB = re.compile(r"^https://huggingface\.co/(?P<repo>[^/]+/[^/]+?)/?$")
HUB_RESOLVE = re.compile(r"^https://huggingface\.co/[^/]+/[^/]+/resolve/(?P<revision>[^/]+)/?$")


@dataclass
class Publication:
    """What :func:`publish` wrote: the published ``manifest``, ``sources`` (entry -> folder copied from) and
    ``unavailable`` (entry -> why its files are not here)."""

    manifest: dict[str, Any]
    sources: dict[str, Path] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [m["name"] for m in self.manifest["models"]]


def copy_hashed(src: Path, dst: Path, chunk: int = 1 << 20) -> tuple[str, int]:
    """Copies ``src`` to ``dst`` while hashing it; returns (sha256, bytes)."""
    digest, copied = hashlib.sha256(), 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while block := fin.read(chunk):
            digest.update(block)
            fout.write(block)
            copied += len(block)
    return digest.hexdigest(), copied


def copy_verified(src: Path, dst: Path, sha256: str, size: int) -> None:
    """Copies ``src`` to ``dst`` while hashing it; raises WeightsError (and removes ``dst``) unless the bytes match."""
    try:
        got, copied = copy_hashed(src, dst)
        if copied != size or got != sha256:
            raise WeightsError(
                f"refusing to publish {src}: it has {copied} bytes and sha256 {got}, the manifest "
                f"records {size} bytes and sha256 {sha256}. Restore or re-download the file, or, if it was replaced "
                "on purpose, record it with `python -m weights.manifest` first.")
    except BaseException:
        dst.unlink(missing_ok=True)
        raise


def _published_path(url: str, flat: bool) -> str:
    return flat_name(url) if flat else url.strip("/")


# ------------------------------------------------------------------------------------------------ finding the files
def candidates(manifest: Manifest, name: str, sources: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """The folders where the files of ``name`` may be: its own, then ``<from>/<path>`` and ``<from>/cache/<path>``."""
    path = manifest.entry(name).path
    found = [manifest.local_dir(name)]
    for source in sources:
        found += [Path(source) / path, Path(source) / CACHE / path]
    return list(dict.fromkeys(found))


def locate(manifest: Manifest, name: str, sources: Sequence[str | os.PathLike] = ()) -> tuple[Path | None, str]:
    """(the first folder holding every file of ``name`` at its recorded size, "") or (None, why none does)."""
    entry = manifest.entry(name)
    if not entry.files:
        return None, "the manifest lists no files (run `python -m weights.manifest`)"
    looked = candidates(manifest, name, sources)
    for folder in looked:
        if all((folder / f.file).is_file() and (folder / f.file).stat().st_size == f.bytes for f in entry.files):
            return folder, ""
    make = ("it is the original PyTorch code's export: copy it from ../shared/reference/parity"
            if entry.kind == PARITY_KIND else f"fetch it (`python -m weights.download {name}`) or train it with "
                                              f"`{entry.command}`")
    return None, f"files not on this machine (looked in {', '.join(str(p) for p in looked)}); {make}"


def present_models(manifest: Manifest, names: Sequence[str] | None = None, sources: Sequence[str | os.PathLike] = ()
                   ) -> tuple[dict[str, Path], dict[str, str]]:
    """The entries whose files are here (name -> folder) and why the others are not; WeightsError if an entry
    named in ``names`` is unknown or incomplete."""
    chosen = list(names) if names else list(manifest.entries)
    present, absent = {}, {}
    for name in chosen:
        folder, why = locate(manifest, name, sources)
        if folder is None:
            absent[name] = why
        else:
            present[name] = folder
    if names and absent:
        raise WeightsError("cannot publish " + "; ".join(f"{n}: {why}" for n, why in absent.items()))
    return present, absent


# ------------------------------------------------------------------------------------------------------- base url
def hub_base_url(url: str, revision: str | None) -> str:
    """The pinned base url: ``https://huggingface.co/ORG/REPO`` -> ``.../resolve/<revision>``, ``{revision}``
    substituted, any other address as is; WeightsError for a Hub address without (or contradicting) ``revision``."""
    url = url.rstrip("/")
    if "{revision}" in url:
        if not revision:
            raise WeightsError(f"{url} holds {{revision}}: give --revision")
        return url.replace("{revision}", revision)
    if HUB.match(url):
        if not revision:
            raise WeightsError(f"{url} is a Hugging Face repo: give --revision (the commit the upload made; "
                               "`huggingface-cli upload` prints it) so that downloads are pinned")
        return f"{url}/resolve/{revision}"
    if (match := HUB_RESOLVE.match(url)) and revision and match["revision"] != revision:
        raise WeightsError(f"{url} resolves revision {match['revision']!r}, not --revision {revision!r}")
    return url


def set_base_url(url: str, revision: str | None, manifest_path: str | os.PathLike = MANIFEST,
                 hosting: str | None = None, published: str | os.PathLike | None = None) -> dict[str, Any]:
    """Writes ``base_url`` (pinned), ``revision`` and ``hosting`` into the manifest; with ``published`` (the
    uploaded folder), entries missing from its manifest.json get ``"hosted": false`` and the others lose it."""
    from weights.manifest import lock

    base = hub_base_url(url, revision)
    match = HUB_RESOLVE.match(base)
    pinned = revision or (match["revision"] if match else None)
    if pinned and not re.fullmatch(r"[0-9a-f]{40}", pinned):
        logger.warning("revision %r is not a commit hash: a branch or tag can move, and the sha256 checks will then "
                       "refuse the files", pinned)
    with lock(manifest_path):
        raw = json.loads(Path(manifest_path).read_text())
        raw.update(base_url=base, revision=pinned,
                   hosting=hosting or f"hosted at {base} (files at <base_url>/<url>); committed models are also in git")
        if published is not None:
            uploaded = {m["name"] for m in json.loads((Path(published) / "manifest.json").read_text())["models"]}
            for model in raw["models"]:
                model.pop("hosted", None)
                if model["name"] not in uploaded:
                    model["hosted"] = False
                    logger.warning("%s is not in %s: marked \"hosted\": false", model["name"], published)
        save_json(manifest_path, raw)
    logger.info("wrote base_url %s%s into %s", base, f" (revision {pinned})" if pinned else "", manifest_path)
    return raw


# ---------------------------------------------------------------------------------------------------------- publish
def publish(out: str | os.PathLike, names: Sequence[str] | None = None, manifest_path: str | os.PathLike = MANIFEST,
            flat: bool = False, base_url: str | None = None, force: bool = False,
            sources: Sequence[str | os.PathLike] = (), parity_dir: str | os.PathLike | None = None,
            revision: str | None = None, require_all: bool = False) -> Publication:
    """Writes the upload folder ``out`` and returns what it published and what it could not.

    ``names``: default every entry on this machine; ``sources``: more folders laid out like ``weights/`` (or its
    ``cache/``); ``parity_dir``: the kits to add (None: none); ``base_url`` is recorded, pinned with ``revision``.
    Raises WeightsError when there is nothing to publish, a named (or, with ``require_all``, any) entry is absent, a
    file differs from the manifest, two files would share a name, or ``out`` exists (without ``force``) or is inside
    ``weights/``."""
    out, manifest_path = Path(out), Path(manifest_path)
    manifest = read_manifest(manifest_path)
    if out.exists() and not force and (not out.is_dir() or any(out.iterdir())):
        raise WeightsError(f"{out} exists; choose another OUT or pass --force to replace it")
    if out.resolve() == manifest.root.resolve() or manifest.root.resolve() in out.resolve().parents:
        raise WeightsError(f"OUT {out} is inside the weights folder {manifest.root}: publish to a folder outside it")
    if base_url:
        base_url = hub_base_url(base_url, revision)
    if flat and base_url and FLAT not in base_url:
        raise WeightsError(f"--flat needs a --base-url holding {FLAT} (e.g. "
                           f"https://github.com/ORG/REPO/releases/download/TAG/{FLAT}); got {base_url}")
    kits = parity_kits(parity_dir) if parity_dir is not None else {}
    wanted = [n for n in (names or manifest.entries) if n not in kits]  # kits come from parity_dir, not the cache
    present, unavailable = present_models(manifest, wanted if names else None, sources)
    present = {n: f for n, f in present.items() if n not in kits}
    unavailable = {n: why for n, why in unavailable.items() if n not in kits}
    if names:
        present = {n: present[n] for n in wanted}
    for name, why in unavailable.items():
        logger.warning("%s: not published, %s", name, why)
    if require_all and unavailable:
        raise WeightsError(f"{len(unavailable)} entries are not on this machine: {', '.join(unavailable)} (see above; "
                           "--from DIR takes them from another weights folder)")
    if not present and not kits:
        raise WeightsError(f"no entry of {manifest_path} is on this machine: nothing to publish")
    raw = json.loads(manifest_path.read_text())
    by_name = {item["name"]: item for item in raw["models"]}
    published = {key: value for key, value in raw.items() if key != "models"}
    published.update(format=FORMAT, base_url=base_url, revision=revision, layout="flat" if flat else "tree",
                     hosting=("the files of this folder, uploaded as they are; "
                              + (f"flat names: the base url ends in /{FLAT}" if flat else "a tree: <base>/<url>")))
    published["models"] = []
    taken: dict[str, str] = {}
    sums: list[str] = []
    kit_entries: list[dict[str, Any]] = []

    def place(key: str, url: str) -> str:
        where = _published_path(url, flat)
        if where in taken or where in ("manifest.json", SUMS, CARD):
            raise WeightsError(f"{key} would be published as {where}, a name already taken by {taken.get(where)}")
        taken[where] = key
        return where

    with atomic_path(out) as tmp:
        tmp.mkdir()
        for name, folder in present.items():
            entry = manifest.entry(name)
            item = json.loads(json.dumps(by_name[name]))
            item.pop("hosted", None)  # it is in this upload
            for f, record in zip(entry.files, item["files"], strict=True):
                if "://" in record["url"]:  # hosted elsewhere until now: from here on, beside the others
                    record["url"] = f"{entry.path}/{f.file}"
                where = place(f"{name}/{f.file}", record["url"])
                copy_verified(folder / f.file, tmp / where, f.sha256, f.bytes)
                sums.append(f"{f.sha256}  {where}")
            published["models"].append(item)
            logger.info("%s: %d files published from %s", name, len(entry.files), folder)
        for name, (folder, files) in kits.items():
            records = []
            for file in files:
                rel = file.relative_to(folder).as_posix()
                url = f"{kit_entry(name, folder, [])['path']}/{rel}"
                where = place(f"{name}/{rel}", url)
                sha, size = copy_hashed(file, tmp / where)
                records.append({"file": rel, "sha256": sha, "bytes": size, "url": url})
                sums.append(f"{sha}  {where}")
            kit_entries.append(kit_entry(name, folder, records))
            published["models"].append(kit_entries[-1])
            logger.info("%s: %d files published from %s", name, len(files), folder)
        for item in published["models"]:
            where = place(f"{item['name']}/{CARD}", f"{item['path']}/{CARD}")
            (tmp / where).parent.mkdir(parents=True, exist_ok=True)
            (tmp / where).write_text(model_card(item, base_url, revision))
        (tmp / CARD).write_text(index_card(published, unavailable))
        (tmp / "manifest.json").write_text(json.dumps(published, indent=2) + "\n")
        (tmp / SUMS).write_text("\n".join(sums) + "\n")
    if kit_entries and record_kits(manifest_path, kit_entries):
        logger.info("recorded the parity kits %s in %s", ", ".join(k["name"] for k in kit_entries), manifest_path)
    return Publication(published, {**present, **{n: f for n, (f, _) in kits.items()}}, unavailable)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m weights.publish", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", metavar="OUT", help="the folder to write (must not exist, or be empty)")
    parser.add_argument("--out", dest="out_option", default=None, help=argparse.SUPPRESS)  # hidden alias of OUT
    parser.add_argument("--only", nargs="+", metavar="NAME", default=None,
                        help="publish only these entries (default: every entry on this machine)")
    parser.add_argument("--from", dest="sources", action="append", default=[], metavar="DIR",
                        help="another folder laid out like weights/ or weights/cache/ to take absent entries from "
                             "(may be repeated)")
    parser.add_argument("--parity-dir", default=str(DEFAULT_PARITY_DIR),
                        help="the PyTorch parity kits' folder (default: ../shared/reference/parity)")
    parser.add_argument("--no-parity", action="store_true", help="do not publish the parity kits")
    parser.add_argument("--require-all", action="store_true", help="fail when an entry's files are not here")
    parser.add_argument("--flat", action="store_true",
                        help=f"flat file names for hosts without folders (a base url holding {FLAT})")
    parser.add_argument("--base-url", default=None,
                        help="the address the folder will have, for its manifest.json and cards "
                             "(https://huggingface.co/ORG/REPO is pinned with --revision)")
    parser.add_argument("--revision", default=None, help="the host's revision (commit) the files are pinned to")
    parser.add_argument("--set-base-url", default=None, metavar="URL",
                        help="after uploading: write URL (pinned to --revision) into the manifest; publishes nothing")
    parser.add_argument("--published", default=None, metavar="DIR",
                        help="with --set-base-url: the uploaded folder; entries not in it are marked not hosted")
    parser.add_argument("--manifest", default=str(MANIFEST), help="manifest file (default: weights/manifest.json)")
    parser.add_argument("--force", action="store_true", help="replace an existing OUT")
    args = parser.parse_args(argv)
    args.out = args.out or args.out_option
    if args.set_base_url is None and not args.out:
        parser.error("give OUT (the folder to write), or --set-base-url URL --revision REV")
    if args.set_base_url is not None and args.out:
        parser.error("--set-base-url writes the manifest only: give it without OUT")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.set_base_url is not None:
        set_base_url(args.set_base_url, args.revision, args.manifest, published=args.published)
        logger.info("now regenerate the table of weights/README.md (`python -m weights.manifest --table`) and commit "
                    "%s", args.manifest)
        return 0
    parity = None if args.no_parity else args.parity_dir
    if parity is not None and not Path(parity).is_dir():
        logger.warning("no parity kits at %s: publishing without them (--parity-dir DIR, or --no-parity)", parity)
        parity = None
    result = publish(args.out, args.only, args.manifest, args.flat, args.base_url, args.force, args.sources, parity,
                     args.revision, args.require_all)
    total = sum(f["bytes"] for m in result.manifest["models"] for f in m["files"])
    kits = sum(m["kind"] == PARITY_KIND for m in result.manifest["models"])
    logger.info("wrote %s: %d entries (%d of them parity kits), %.1f MB; %d entries not on this machine", args.out,
                len(result.manifest["models"]), kits, total / 1e6, len(result.unavailable))
    if result.unavailable:
        logger.warning("not published (files not on this machine): %s", ", ".join(result.unavailable))
    example = "https://huggingface.co/ORG/REPO"
    logger.info("upload it (`huggingface-cli upload ORG/REPO %s . --repo-type model`), then record where: "
                "`python -m weights.publish --set-base-url %s --revision <commit>`; see weights/README.md",
                shlex.quote(str(args.out)), example if not args.flat else f"<address>/{FLAT}")
    return 0


if __name__ == "__main__":
    from common.cli import run

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(main)
