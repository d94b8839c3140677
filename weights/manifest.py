"""Rebuilds the file list, sha256, byte counts and metrics of ``weights/manifest.json`` from the model folders.

``python -m weights.manifest`` rewrites them (hand-written fields stay; entries absent from the cache and the parity
kits keep their records); ``--check`` exits 1 when stale or over a size limit; ``--table`` prints the README table.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.errors import UserError
from common.io import save_json
from weights import CACHE, MANIFEST, sha256_of

logger = logging.getLogger(__name__)

MAX_FILE_BYTES = 25_000_000  # each committed file
MAX_COMMITTED_BYTES = 100_000_000  # all committed weights together


def describe_folder(folder: Path, rel_path: str) -> list[dict[str, Any]]:
    """One record (file, sha256, bytes, url) per file under ``folder``, sorted, hidden files skipped."""
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return [{"file": p.relative_to(folder).as_posix(), "sha256": sha256_of(p), "bytes": p.stat().st_size,
             "url": f"{rel_path}/{p.relative_to(folder).as_posix()}"} for p in files]


@contextlib.contextmanager
def lock(manifest_path: str | Path):
    """An exclusive lock (``.manifest.lock``) around a read-modify-write of the manifest by concurrent writers."""
    folder = Path(manifest_path).parent
    if not folder.is_dir():  # no manifest there to guard: reading it reports the missing file clearly
        yield
        return
    with open(folder / ".manifest.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def rebuild(raw: dict[str, Any], root: Path) -> tuple[dict[str, Any], list[str]]:
    """``raw`` with ``files`` and ``metrics`` recomputed from the folders under ``root``; returns (the new
    manifest, errors naming missing committed folders and broken size limits)."""
    errors, models = [], []
    for item in raw["models"]:
        item = dict(item)
        folder = root / item["path"] if item["committed"] else root / CACHE / item["path"]
        if item.get("kind") == "parity_kit":  # recorded from the parity folder by `python -m weights.publish`
            models.append(item)
            continue
        if folder.is_dir():
            item["files"] = describe_folder(folder, item["path"])
            if (folder / "metrics.json").is_file():
                item["metrics"] = json.loads((folder / "metrics.json").read_text())
        elif item["committed"]:
            errors.append(f"{item['name']}: committed folder {folder} is missing")
        else:
            logger.info("%s: %s absent; keeping the recorded files", item["name"], folder)
        if item["committed"]:
            errors += [f"{item['name']}/{f['file']}: {f['bytes']} bytes, over the {MAX_FILE_BYTES} limit per "
                       f"committed file (set \"committed\": false and host it)"
                       for f in item["files"] if f["bytes"] >= MAX_FILE_BYTES]
        models.append(item)
    committed = sum(f["bytes"] for m in models if m["committed"] for f in m["files"])
    if committed >= MAX_COMMITTED_BYTES:
        errors.append(f"committed weights total {committed} bytes, over the {MAX_COMMITTED_BYTES} limit")
    return {**raw, "models": models}, errors


HEADLINE = ("test/rmse", "test/accuracy", "test/elbo")  # the first of these a model has is its table metric


def table(raw: dict[str, Any]) -> str:
    """The Markdown table of ``weights/README.md``: name, size, where, sha256 prefix, command, seed, test metric."""
    rows = ["| name | size | where | sha256 (main file, prefix) | command | seed | test metric |",
            "|---|---:|---|---|---|---:|---|"]
    for m in raw["models"]:
        main_file = max(m["files"], key=lambda f: f["bytes"])
        key = next((k for k in HEADLINE if k in m["metrics"]), None)
        metric = f"{key.removeprefix('test/')} {m['metrics'][key]:.4f}" if key else "-"
        kit = m.get("kind") == "parity_kit"
        where = ("committed" if m["committed"] else "hosted" if raw.get("base_url") and m.get("hosted", True)
                 else "not hosted: parity kit" if kit else "not hosted: train")
        size = sum(f["bytes"] for f in m["files"]) / 1e6
        command = "exported from the PyTorch original" if kit else f"`{m['command']}`"
        rows.append(f"| `{m['name']}` | {size:.1f} MB | {where} | `{main_file['file']}` `{main_file['sha256'][:12]}` "
                    f"| {command} | {m['seed']} | {metric} |")
    return "\n".join(rows) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m weights.manifest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if the manifest is stale")
    parser.add_argument("--table", action="store_true", help="print the Markdown table of weights/README.md")
    parser.add_argument("--manifest", default=str(MANIFEST), help="manifest file (default: weights/manifest.json)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    path = Path(args.manifest)
    with lock(path):
        return _check_or_write(path, args)


def _check_or_write(path: Path, args: argparse.Namespace) -> int:
    try:
        raw = json.loads(path.read_text())
    except OSError as err:
        raise UserError(f"cannot read the manifest {path}: {err.strerror or err}; pass --manifest FILE") from err
    except ValueError as err:
        raise UserError(f"{path} is not valid JSON ({err}); restore it with `git checkout -- {path}`") from err
    if args.table:
        sys.stdout.write(table(raw))
        return 0
    new, errors = rebuild(raw, path.resolve().parent)
    for error in errors:
        logger.error("%s", error)
    if args.check:
        stale = [m["name"] for m, old in zip(new["models"], raw["models"]) if m != old]
        if stale:
            logger.error("manifest is stale for %s: run `python -m weights.manifest`", ", ".join(stale))
        return 1 if stale or errors else 0
    if errors:
        return 1
    if new != raw:
        save_json(path, new)
        logger.info("wrote %s", path)
    else:
        logger.info("%s is up to date", path)
    return 0


if __name__ == "__main__":
    from common.cli import run

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(main)
