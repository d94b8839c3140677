"""Writes a folder, ready to upload to a static host, with every model of the manifest that is present locally.

Usage::

    python -m weights.publish --out dist/weights                  # a tree: <out>/bnn/lsat/samples.npz, ...
    python -m weights.publish --out dist/weights --flat           # flat names: <out>/bnn--lsat--samples.npz, ...
    python -m weights.publish --out dist/weights bnn_mnist vae_lsat --base-url https://huggingface.co/ORG/REPO/resolve/main

The folder holds each file at the place ``python -m weights.download`` asks for it (``weights.download.file_url``):
with ``$CLUE_WEIGHTS_URL`` (or the manifest's ``base_url``) set to the folder's address, the files are at
``<base>/<url>`` (the tree, for hosts that keep folders: a Hugging Face model repo's ``resolve/main`` address, a web
server, a bucket, ``file://``), or with ``--flat`` under their flat names for a base holding ``{flat}`` (hosts
with a flat list of files: GitHub release assets, Zenodo records). Beside them: ``manifest.json``, the manifest
entries of the published models (``base_url`` set to ``--base-url`` when given), and ``SHA256SUMS``
(``sha256sum -c SHA256SUMS`` checks an upload's local copy).

A model is published when its folder is present (committed models in ``weights/<path>``, downloaded ones in
``weights/cache/<path>``): every file is checked against the manifest's size and sha256 while it is copied, and one
that differs stops the run. The folder is written beside ``--out`` and renamed onto it only when everything is
good: a failure leaves no half folder, and an existing ``--out`` is left as it was unless ``--force`` replaces it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.utils import atomic_path
from weights import CACHE, FORMAT, MANIFEST, Manifest, WeightsError, read_manifest
from weights.download import FLAT, flat_name

logger = logging.getLogger(__name__)

SUMS = "SHA256SUMS"


def copy_verified(src: Path, dst: Path, sha256: str, size: int, chunk: int = 1 << 20) -> None:
    """Copies ``src`` to ``dst`` while hashing it; raises WeightsError (and removes ``dst``) unless the bytes match."""
    digest, copied = hashlib.sha256(), 0
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            while block := fin.read(chunk):
                digest.update(block)
                fout.write(block)
                copied += len(block)
        if copied != size or digest.hexdigest() != sha256:
            raise WeightsError(
                f"refusing to publish {src}: it has {copied} bytes and sha256 {digest.hexdigest()}, the manifest "
                f"records {size} bytes and sha256 {sha256}. Restore or re-download the file, or, if it was replaced "
                "on purpose, record it with `python -m weights.manifest` first.")
    except BaseException:
        dst.unlink(missing_ok=True)
        raise


def _published_path(url: str, flat: bool) -> str:
    return flat_name(url) if flat else url.strip("/")


def present_models(manifest: Manifest, names: Sequence[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The models whose files are all present locally, and for the others why they are left out.

    Raises:
      WeightsError: a model named in ``names`` is unknown or not (completely) present.
    """
    chosen = list(names) if names else list(manifest.entries)
    present, skipped = [], {}
    for name in chosen:
        entry, folder = manifest.entry(name), manifest.local_dir(name)
        missing = [f.file for f in entry.files if not (folder / f.file).is_file()]
        if not entry.files:
            skipped[name] = "the manifest lists no files (run `python -m weights.manifest`)"
        elif missing:
            where = "committed folder" if entry.committed else f"download folder {CACHE}/"
            skipped[name] = f"not present in its {where} {folder} (missing {', '.join(missing)})"
        else:
            present.append(name)
    if names and skipped:
        raise WeightsError("cannot publish " + "; ".join(f"{n}: {why}" for n, why in skipped.items())
                           + ". Fetch them with `python -m weights.download NAME` or train them with their command.")
    return present, skipped


def publish(out: str | os.PathLike, names: Sequence[str] | None = None, manifest_path: str | os.PathLike = MANIFEST,
            flat: bool = False, base_url: str | None = None, force: bool = False) -> dict[str, Any]:
    """Writes the upload folder ``out`` (module docstring) and returns its manifest.

    Args:
      out: the folder to write (created; an existing one only with ``force``).
      names: the models to publish (default: every model present locally).
      manifest_path: the manifest to publish from (its folder is the ``weights/`` root).
      flat: flat file names (``bnn--lsat--samples.npz``) for hosts without folders, instead of the tree.
      base_url: recorded as the published manifest's ``base_url`` (the address the folder will have; for ``flat``,
        holding ``{flat}``).
      force: replace an existing ``out``.

    Raises:
      WeightsError: nothing to publish, a named model is not present, a file differs from the manifest, two files
        would share a flat name, ``out`` exists (without ``force``) or is the weights folder itself.
    """
    out = Path(out)
    manifest = read_manifest(manifest_path)
    raw = json.loads(Path(manifest_path).read_text())
    if out.exists() and not force and (not out.is_dir() or any(out.iterdir())):
        raise WeightsError(f"{out} exists; choose another --out or pass --force to replace it")
    if out.resolve() == manifest.root.resolve() or manifest.root.resolve() in out.resolve().parents:
        raise WeightsError(f"--out {out} is inside the weights folder {manifest.root}: publish to a folder outside it")
    if flat and base_url and FLAT not in base_url:
        raise WeightsError(f"--flat needs a --base-url holding {FLAT} (e.g. "
                           f"https://github.com/ORG/REPO/releases/download/TAG/{FLAT}); got {base_url}")
    present, skipped = present_models(manifest, names)
    for name, why in skipped.items():
        logger.info("%s: left out, %s", name, why)
    if not present:
        raise WeightsError(f"no model of {manifest_path} is present locally: nothing to publish")
    by_name = {item["name"]: item for item in raw["models"]}
    targets: dict[str, str] = {}
    for name in present:
        for f in manifest.entry(name).files:
            url = f.url if "://" not in f.url else f"{manifest.entry(name).path}/{f.file}"
            where = _published_path(url, flat)
            if where in targets.values() or where in ("manifest.json", SUMS):
                raise WeightsError(f"{name}/{f.file} would be published as {where}, a name already taken")
            targets[f"{name}/{f.file}"] = where
    published = {key: value for key, value in raw.items() if key != "models"}
    published.update(format=FORMAT, base_url=base_url, layout="flat" if flat else "tree",
                     hosting=("the files of this folder, uploaded as they are; "
                              + (f"flat names: the base url ends in /{FLAT}" if flat else "a tree: <base>/<url>")))
    published["models"] = []
    sums = []
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for name in present:
            entry, folder = manifest.entry(name), manifest.local_dir(name)
            item = json.loads(json.dumps(by_name[name]))
            for f, record in zip(entry.files, item["files"], strict=True):
                where = targets[f"{name}/{f.file}"]
                copy_verified(folder / f.file, tmp / where, f.sha256, f.bytes)
                if "://" in record["url"]:  # hosted elsewhere until now: from here on, beside the others
                    record["url"] = f"{entry.path}/{f.file}"
                sums.append(f"{f.sha256}  {where}")
            published["models"].append(item)
            logger.info("%s: %d files published", name, len(entry.files))
        (tmp / "manifest.json").write_text(json.dumps(published, indent=2) + "\n")
        (tmp / SUMS).write_text("\n".join(sums) + "\n")
    return published


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m weights.publish", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="models to publish (default: all present locally)")
    parser.add_argument("--out", required=True, help="the folder to write (must not exist, or be empty)")
    parser.add_argument("--flat", action="store_true",
                        help=f"flat file names for hosts without folders (a base url holding {FLAT})")
    parser.add_argument("--base-url", default=None, help="the address the folder will have, for its manifest.json")
    parser.add_argument("--manifest", default=str(MANIFEST), help="manifest file (default: weights/manifest.json)")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    published = publish(args.out, args.names, args.manifest, args.flat, args.base_url, args.force)
    total = sum(f["bytes"] for m in published["models"] for f in m["files"])
    base = f"<its address>/{FLAT}" if args.flat else "<its address>"
    logger.info("wrote %s: %d models, %.1f MB. Upload its files as they are, then set base_url in %s (or "
                "$CLUE_WEIGHTS_URL) to %s; see weights/README.md", args.out, len(published["models"]), total / 1e6,
                args.manifest, args.base_url or base)
    return 0


if __name__ == "__main__":
    from common.cli import run

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(main)
