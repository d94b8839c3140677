"""The project's version, where its code lives (a git checkout or an installed wheel), and what a run records of it.

``__version__`` is the single source of the version: ``pyproject.toml`` reads it (``[tool.setuptools.dynamic]``) and
``CLUE.__version__`` re-exports it. :func:`checkout_root` tells a source checkout (downloads are cached inside it, as
they always were) from an installed package (downloads go to :func:`user_cache_dir`). :func:`provenance` is what every
run's ``run.json`` records: the code's commit, the library versions and the CPU, computed once per process.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__version__ = "0.9.0"

logger = logging.getLogger(__name__)

DISTRIBUTION = "clue-tf"  # the name pyproject.toml gives the package
SOURCE_ROOT = Path(__file__).resolve().parent.parent  # the folder holding common/, data/, weights/, CLUE/, ...
# Library -> (its module, the distributions that may provide it), for run.json.
LIBRARIES = {
    "tensorflow": ("tensorflow", ("tensorflow", "tensorflow-cpu", "tensorflow-macos", "tf-nightly")),
    "keras": ("keras", ("keras", "keras-nightly")),
    "tensorflow_probability": ("tensorflow_probability", ("tensorflow-probability", "tfp-nightly")),
    "numpy": ("numpy", ("numpy",)),
}


@functools.cache
def checkout_root() -> Path | None:
    """The git work tree that holds this source tree, or None when the code is installed (a wheel, ``--target``).

    The code counts as a checkout when :data:`SOURCE_ROOT` holds this project's ``pyproject.toml`` (an installed
    package never does) and it or a folder above it holds ``.git``. An editable install (``pip install -e .``) runs
    the checkout's files, so it is a checkout. No git executable is needed.
    """
    try:
        if f'name = "{DISTRIBUTION}"' not in (SOURCE_ROOT / "pyproject.toml").read_text(errors="replace"):
            return None
    except OSError:
        return None
    for folder in (SOURCE_ROOT, *SOURCE_ROOT.parents):
        if (folder / ".git").exists():  # a folder, or a file in a worktree / submodule
            return folder
    return None


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/clue-tf`` (``~/.cache/clue-tf`` when unset or relative): where an installed package caches
    downloads unless ``$CLUE_CACHE_DIR`` is set (raw data files directly in it, pretrained weights in ``weights/``)."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base and os.path.isabs(base) else Path.home() / ".cache") / DISTRIBUTION


def _git(*args: str) -> str | None:
    root = checkout_root()
    if root is None:
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                              env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError):  # no git, or it hangs
        return None
    return done.stdout if done.returncode == 0 else None


@functools.cache
def code_commit() -> dict[str, Any]:
    """``{"commit": <git rev-parse HEAD>, "dirty": <tracked files modified>}`` of the checkout this code runs from;
    both None when installed, when git is missing, or when it fails (e.g. a repository of another owner)."""
    head = _git("rev-parse", "HEAD")
    if head is None:
        return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": head.strip() or None, "dirty": None if status is None else bool(status.strip())}


def library_version(library: str) -> str | None:
    """The version of ``library`` (a key of :data:`LIBRARIES`): the imported module's when it is imported, else its
    installed distribution's (nothing is imported); None when it is not installed."""
    module, distributions = LIBRARIES[library]
    version = getattr(sys.modules.get(module), "__version__", None)
    if isinstance(version, str):
        return version
    for distribution in distributions:
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


@functools.cache
def _static_provenance() -> dict[str, Any]:
    from common.utils import cpu_info  # here: common.utils imports this module

    return {"version": __version__, "code": {**code_commit(), "source": str(SOURCE_ROOT)},
            "python": platform.python_version(), "platform": platform.platform(), **cpu_info()}


def provenance() -> dict[str, Any]:
    """What produced a run: this project's version, the code's commit (``code.commit``, ``code.dirty``; None outside
    a git checkout), the Python, TensorFlow, Keras, TensorFlow Probability and numpy versions, the platform and the
    CPU (``cpu_model``, ``simd``). Git runs once per process; this never raises (a record never stops a run)."""
    try:
        static = _static_provenance()
        libraries = {name: library_version(name) for name in LIBRARIES}
    except Exception as err:  # whatever goes wrong here, the run goes on
        logger.warning("could not record the run's provenance: %s", err)
        return {"version": __version__, "code": {"commit": None, "dirty": None, "source": str(SOURCE_ROOT)}}
    return {**static, "code": dict(static["code"]), "simd": list(static["simd"]), "libraries": libraries}
