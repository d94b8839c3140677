"""Where each raw file comes from, its sha256, and how it is found or fetched.

Lookup (DESIGN.md): ``data_dir``, ``$CLUE_DATA_DIR``, then the cache ``$CLUE_CACHE_DIR`` (``data/raw/`` in a checkout,
``~/.cache/clue-tf/`` installed), as ``<dir>/<dataset>/<file>`` or ``<dir>/<file>``. A missing file is downloaded to a
temporary file, checked against its sha256 and renamed; a mismatching file is never used."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError
from common.io import DownloadError, cached_sha256, download_file, sha256_of  # noqa: F401 (sha256_of: public here too)
from common.version import checkout_root, user_cache_dir

logger = logging.getLogger(__name__)

# The download cache when $CLUE_CACHE_DIR is unset: data/raw/ in a git checkout (git-ignored); an installed package
# never writes into its own folder, it uses the user's cache folder (~/.cache/clue-tf, or $XDG_CACHE_HOME/clue-tf).
DEFAULT_CACHE = Path(__file__).resolve().parent / "raw" if checkout_root() is not None else user_cache_dir()
_LSAT_URL = "https://raw.githubusercontent.com/throwaway20190523/MonotonicFairness/master/data/"
_MNIST_MIRRORS = ("https://storage.googleapis.com/cvdf-datasets/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/")


@dataclass(frozen=True)
class Source:
    """One raw upstream file.

    Attributes:
      sha256: expected checksum, or None (then the loader checks the contents); md5: where upstream publishes only that.
      urls: upstream addresses, tried in order; size: in bytes, informational.
      content_sha256: for a .gz, the checksum of its content (accepts another gzip's compression of the same data)."""

    folder: str
    filename: str
    sha256: str | None
    urls: tuple[str, ...]
    size: int | None = None
    md5: str | None = None
    content_sha256: str | None = None

    @property
    def key(self) -> str:
        return f"{self.folder}/{self.filename}"


def _mnist(filename: str, sha256: str | None, size: int | None, md5: str | None = None,
           content_sha256: str | None = None) -> Source:
    return Source("mnist", filename, sha256, tuple(m + filename for m in _MNIST_MIRRORS), size, md5, content_sha256)


# One table for every raw file the project reads (checksums from the shared data README).
SOURCES: dict[str, Source] = {
    s.key: s
    for s in (
        Source("lsat", "law_school_cf_train.csv",
               "5de46ad1ee149ba8a5df501851a2301b98966534f752fe020ceb1979f843e99e",
               (_LSAT_URL + "law_school_cf_train.csv",),
               578137),
        Source("lsat", "law_school_cf_test.csv",
               "9500bf46a3b569dee3c9adef9688113ab8dfd61c960f545b368cc12d0c7ac0a0",
               (_LSAT_URL + "law_school_cf_test.csv",),
               144554),
        Source("compas", "compas-scores-two-years.csv",
               "c451db85908b2f7fef1d83203bedf6b71ecda0d5af468d82ae62178f91d0cc7d",
               ("https://raw.githubusercontent.com/propublica/compas-analysis/master/compas-scores-two-years.csv",),
               2546489),
        Source("wine", "winequality-red.csv",
               "4a402cf041b025d4566d954c3b9ba8635a3a8a01e039005d97d6a710278cf05e",
               ("https://archive.ics.uci.edu/ml/machine-learning-databases/wine-quality/winequality-red.csv",),
               84199),
        # The 30,000-row CSV export (ID, X1..X23, Y) has no stable upstream address; the UCI .xls below is the original.
        Source("credit", "UCI_Credit_Card.csv",
               "023eb2c3ad9efd15e7869616fa50a0143f25223105c7069ba632431530afdb61", (), 2905603),
        # No checksum is recorded for the .xls: the credit loader checks its shape and header instead.
        Source("credit", "default of credit card clients.xls", None,
               ("https://archive.ics.uci.edu/ml/machine-learning-databases/00350/default%20of%20credit%20card%20clients.xls",)),
        # Upstream publishes only the md5 of the 60k training-image archive; a re-compressed copy (another gzip) is
        # accepted by the sha256 of its uncompressed content (the official idx file, 47,040,016 bytes).
        _mnist("train-images-idx3-ubyte.gz", None, 9912422, md5="f68b3c2dcbeaaa9fbdd348bbdeb94873",
               content_sha256="ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        _mnist("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
        _mnist("t10k-images-idx3-ubyte.gz",
               "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
        _mnist("t10k-labels-idx1-ubyte.gz",
               "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
    )
}


class DataFileError(UserError, RuntimeError):
    """A raw data file is missing and could not be downloaded, or fails its checksum (a ``UserError`` and a
    ``RuntimeError``)."""


def cache_dir() -> Path:
    return Path(os.environ.get("CLUE_CACHE_DIR") or DEFAULT_CACHE)


def search_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for raw files, in lookup order."""
    dirs = []
    if data_dir is not None:
        dirs.append(Path(data_dir))
    if os.environ.get("CLUE_DATA_DIR"):
        dirs.append(Path(os.environ["CLUE_DATA_DIR"]))
    dirs.append(cache_dir())
    return dirs


def _expected(source: Source) -> tuple[str, str] | None:
    """(algorithm, hex digest) recorded for ``source``, or None."""
    if source.sha256:
        return "sha256", source.sha256
    if source.md5:
        return "md5", source.md5
    return None


def _how_to_provide(source: Source) -> str:
    url = source.urls[0] if source.urls else "(no public download address; see data/README.md)"
    algorithm, expected = _expected(source) or ("sha256", "(not recorded; contents are checked instead)")
    return (
        f"  file:     {source.key}\n"
        f"  url:      {url}\n"
        f"  {algorithm + ':':9} {expected}\n"
        f"Provide it in one of two ways:\n"
        f"  1. put the file at <DIR>/{source.key} and set CLUE_DATA_DIR=<DIR> (or pass data_dir=<DIR>);\n"
        f"  2. download it yourself into the cache: {cache_dir() / source.key}"
    )


def _find_local(source: Source, dirs: Sequence[Path]) -> Path | None:
    for folder in dirs:
        for candidate in (folder / source.folder / source.filename, folder / source.filename):
            if candidate.is_file():
                expected = _expected(source)
                if expected is not None and (got := cached_sha256(candidate, expected[0])) != expected[1]:
                    if source.content_sha256 and _content_sha256(candidate) == source.content_sha256:
                        return candidate
                    content = (f" and its uncompressed content is not the official one (sha256 {source.content_sha256})"
                               if source.content_sha256 else "")
                    raise DataFileError(
                        f"checksum mismatch for {candidate} (got {expected[0]} {got}){content}; "
                        f"refusing to use it. Replace it with the upstream file.\n" + _how_to_provide(source))
                return candidate
    return None


_content_digests: dict[tuple, str | None] = {}


def _content_sha256(path: Path) -> str | None:
    """The sha256 of a .gz file's uncompressed content (None if it is not a readable gzip), once per file version."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _content_digests:
        digest = hashlib.sha256()
        try:
            with gzip.open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            _content_digests[key] = digest.hexdigest()
        except (OSError, EOFError, zlib.error):
            _content_digests[key] = None
    return _content_digests[key]


def _download(source: Source, target: Path, timeout: float = 30.0) -> None:
    """Downloads ``source`` to ``target`` atomically, trying each mirror; raises DataFileError, leaving nothing."""
    algorithm, checksum = _expected(source) or ("sha256", None)
    errors = []
    for url in source.urls:
        logger.info("downloading %s from %s", source.key, url)
        try:
            download_file(url, target, checksum, algorithm=algorithm, timeout=timeout, name=source.filename)
            return
        except DownloadError as err:  # try the next mirror
            errors.append(f"{url}: {err.reason}")
        except OSError as err:  # the cache folder cannot be written
            errors.append(f"{url}: {err}")
    tried = "\n".join(f"    {e}" for e in errors) or "    (no download address)"
    raise DataFileError(f"could not obtain {source.key}; tried:\n{tried}\n" + _how_to_provide(source))


def fetch(key: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The local path of raw file ``key`` (``folder/filename``), downloaded if needed (else ``DataFileError``)."""
    source = SOURCES[key]
    found = _find_local(source, search_dirs(data_dir))
    if found is not None:
        return found
    if not download or not source.urls:
        raise DataFileError(f"raw data file {source.key} not found in {', '.join(map(str, search_dirs(data_dir)))}\n"
                            + _how_to_provide(source))
    target = cache_dir() / source.folder / source.filename
    _download(source, target)
    return target


def find_first(keys: Sequence[str], data_dir: str | os.PathLike | None = None) -> Path:
    """The first of several alternative files that exists locally, else the first downloadable one, fetched."""
    for key in keys:
        found = _find_local(SOURCES[key], search_dirs(data_dir))
        if found is not None:
            return found
    downloadable = [k for k in keys if SOURCES[k].urls]
    if not downloadable:
        raise DataFileError("none of " + ", ".join(keys) + " found")
    return fetch(downloadable[0], data_dir)
