"""Shared fixtures: where the upstream data files and the PyTorch parity kit live (skip when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED = PROJECT_ROOT.parent / "shared"


def _data_dir() -> Path | None:
    env = os.environ.get("CLUE_DATA_DIR")
    if env and Path(env).is_dir():
        return Path(env)
    if (SHARED / "data").is_dir():
        return SHARED / "data"
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder of upstream dataset files (``$CLUE_DATA_DIR`` or ``../shared/data``)."""
    found = _data_dir()
    if found is None:
        pytest.skip("upstream data files not available: set CLUE_DATA_DIR (see data/README.md)")
    return found


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    """The PyTorch-original parity kit (``../shared/reference/parity``, format in its SCHEMA.md)."""
    path = SHARED / "reference" / "parity"
    if not (path / "lsat" / "io.npz").exists():
        pytest.skip("PyTorch parity kit not available at ../shared/reference/parity")
    return path
