"""Files, safely: checksums, verified downloads, atomic placement, JSON and npz written atomically."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from common.errors import UserError

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent

CHUNK = 1 << 20  # bytes hashed per read
BLOCK = 1 << 16  # bytes read per network call


def sha256_of(path: str | os.PathLike, chunk: int = CHUNK, algorithm: str = "sha256") -> str:
    """Hex digest of a file (sha256, or another ``hashlib`` algorithm such as ``"md5"``), read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


_digests: dict[tuple[str, int, int, str], str] = {}


def cached_sha256(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """:func:`sha256_of`, computed once per (path, size, mtime, algorithm) in this process."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, algorithm)
    if key not in _digests:
        _digests[key] = sha256_of(path, algorithm=algorithm)
    return _digests[key]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path beside ``path`` (for a file or a folder) and renames it onto ``path`` if the block
    succeeds; on an exception it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp_name)  # the block decides whether it is a file or a folder
    tmp = Path(tmp_name)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


@contextlib.contextmanager
def making_parents(folder: str | os.PathLike) -> Iterator[Path]:
    """Creates ``folder`` and its parents; on leaving, removes those it created that are empty (after a failure)."""
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    finally:
        for p in created:
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()


class DownloadError(UserError, RuntimeError):
    """A download failed or did not match its size or checksum (nothing kept); has ``file``, ``url``, ``reason``."""

    def __init__(self, file: str, url: str, reason: str, checksum: str | None = None, algorithm: str = "sha256",
                 size: int | None = None):
        self.file, self.url, self.reason = file, url, reason
        expected = f"  expected {algorithm} {checksum or '(not recorded)'}" + (f" ({size} bytes)" if size else "")
        super().__init__(f"refusing {file} downloaded from {url}: {reason}\n{expected}")


def download_file(url: str, target: str | os.PathLike, checksum: str | None = None, *, algorithm: str = "sha256",
                  size: int | None = None, timeout: float = 60.0, progress: bool = True,
                  name: str | None = None) -> Path:
    """Downloads ``url`` (``http(s)://``, ``file://``) to ``target``, verified, atomically; returns ``target``.
    Checks ``checksum`` (of ``algorithm``) and ``size`` when given, the announced byte count always; raises
    DownloadError (naming file, url and expected checksum) and leaves ``target`` as it was."""
    target = Path(target)
    name = name or target.name

    def refuse(reason: str) -> DownloadError:
        return DownloadError(name, url, reason, checksum, algorithm, size)

    announced, received = None, 0
    with making_parents(target.parent), atomic_path(target, suffix=".part") as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                announced = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=announced or size, unit="B", unit_scale=True, desc=name, leave=False,
                          disable=not progress) as bar:
                    while block := response.read(BLOCK):
                        out.write(block)
                        received += len(block)
                        bar.update(len(block))
            if announced is not None and received != announced:  # urllib returns a short body without raising
                raise http.client.IncompleteRead(b"", announced - received)
        except http.client.IncompleteRead as err:
            raise refuse(f"transfer cut short: the connection closed after {received} of {announced} bytes") from err
        except (OSError, urllib.error.URLError, http.client.HTTPException) as err:
            raise refuse(f"transfer failed ({type(err).__name__}: {err})") from err
        if size is not None and (got_size := tmp.stat().st_size) != size:
            raise refuse(f"got {got_size} bytes (truncated or wrong file)")
        if checksum is not None and (got := sha256_of(tmp, algorithm=algorithm)) != checksum:
            raise refuse(f"{algorithm} mismatch: got {got}")
    logger.debug("downloaded %s from %s (%d bytes)", name, url, received)
    return target


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialize {type(obj).__name__} to JSON")


def save_json(path: str | os.PathLike, obj: Mapping[str, Any] | list) -> None:
    """Writes ``obj`` as indented JSON, atomically; NumPy scalars and arrays are converted."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, paths strings)."""
    return json.loads(json.dumps(value, default=_json_default))


def load_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def save_npz(path: str | os.PathLike, compressed: bool = False, **arrays: np.ndarray) -> None:
    """Writes arrays to an ``.npz`` atomically (numpy appends nothing since we pass an open file)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)
