"""Shared fixtures: where the upstream data files and the PyTorch parity kit live (skip when absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED = PROJECT_ROOT.parent / "shared"


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``make test`` runs ``-n 2 --dist loadgroup``) the notebook runs share one worker: two of
    them execute the same notebook into the same ``runs/notebooks/`` folder, and one checks that folder's files."""
    for item in items:
        if "run_notebook" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("notebooks"))


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
    """The PyTorch-original parity kits (format in their SCHEMA.md): ``$CLUE_PARITY_DIR`` when set, else
    ``../shared/reference/parity``, else where ``python -m weights.download --parity`` puts them
    (``weights/cache/parity``). Skips, naming that command, when none holds a kit."""
    from weights.download import ENV_PARITY, PARITY_FETCH, parity_root

    env = os.environ.get(ENV_PARITY)
    places = [Path(env).expanduser()] if env else [SHARED / "reference" / "parity", parity_root()]
    for path in places:
        if (path / "lsat" / "io.npz").exists():  # tests of the other kits skip per kit when theirs is missing
            return path
    pytest.skip(f"PyTorch parity kits not found in {' or '.join(map(str, places))}: fetch them with `{PARITY_FETCH}`"
                + ("" if env else f" (or set {ENV_PARITY} to where they are)"))


@pytest.fixture
def run_notebook(tmp_path):
    """``run_notebook(name, **parameters)`` executes ``experiments/<name>`` with papermill (``smoke=True`` plus
    ``parameters``) into ``tmp_path`` and returns the executed notebook's JSON. Skips without papermill or without a
    ``python3`` Jupyter kernel."""
    papermill = pytest.importorskip("papermill")
    kernelspec = pytest.importorskip("jupyter_client.kernelspec")
    if "python3" not in kernelspec.find_kernel_specs():
        pytest.skip("no 'python3' Jupyter kernel: run `python -m ipykernel install --sys-prefix --name python3`")

    def run(name: str, **parameters) -> dict:
        out = tmp_path / name
        papermill.execute_notebook(str(PROJECT_ROOT / "experiments" / name), str(out), kernel_name="python3",
                                   progress_bar=False, cwd=str(PROJECT_ROOT), parameters={"smoke": True, **parameters})
        return json.loads(out.read_text())

    return run
