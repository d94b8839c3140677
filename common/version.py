"""The project's version, where its code lives (git checkout or installed), and the provenance ``run.json`` records."""

from __future__ import annotations

import contextlib
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
    """The git work tree holding this source tree, or None when installed: :data:`SOURCE_ROOT` holds this project's
    ``pyproject.toml`` and it or a parent holds ``.git`` (an editable install counts; no git executable needed)."""
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
    """``$XDG_CACHE_HOME/clue-tf`` (``~/.cache/clue-tf`` if unset or relative): an installed package's cache."""
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
    """``{"commit", "dirty"}`` of the checkout this code runs from; both None when installed or git fails."""
    head = _git("rev-parse", "HEAD")
    if head is None:
        return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": head.strip() or None, "dirty": None if status is None else bool(status.strip())}


def library_version(library: str) -> str | None:
    """The version of ``library`` (a key of :data:`LIBRARIES`), imported or installed; None if absent."""
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

    return {"version": __version__, "code": {**code_commit(), "source": str(SOURCE_ROOT)},
            "python": platform.python_version(), "platform": platform.platform(), **cpu_info()}


def provenance() -> dict[str, Any]:
    """What produced a run: version, code commit (``code.commit``, ``code.dirty``; None outside a checkout), Python
    and library versions, platform and CPU (``cpu_model``, ``simd``). Computed once per process; never raises."""
    try:
        static = _static_provenance()
        libraries = {name: library_version(name) for name in LIBRARIES}
    except Exception as err:  # whatever goes wrong here, the run goes on
        logger.warning("could not record the run's provenance: %s", err)
        return {"version": __version__, "code": {"commit": None, "dirty": None, "source": str(SOURCE_ROOT)}}
    return {**static, "code": dict(static["code"]), "simd": list(static["simd"]), "libraries": libraries}


SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile")  # what changes float32 kernels


def cpu_info() -> dict[str, Any]:
    """This machine's CPU: ``cpu_model`` (``/proc/cpuinfo``'s model name, else ``platform.processor()``) and
    ``simd``, the :data:`SIMD_FLAGS` it has (empty where ``/proc/cpuinfo`` cannot be read). TensorFlow picks its
    float32 kernels by these, so timings and bit-for-bit retraining both depend on them."""
    cpu_model, flags = platform.processor() or None, set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu_model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    return {"cpu_model": cpu_model, "simd": [f for f in SIMD_FLAGS if f in flags]}
