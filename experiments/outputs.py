"""Where the experiment notebooks write their figures and results.

Every notebook in ``experiments/`` has a papermill parameter ``publish = False``. Unpublished runs (the default,
what a researcher trying a notebook gets) write ``figures/`` and ``results/`` under ``runs/notebooks/<notebook>/``,
which git ignores, so running a notebook never changes a tracked file. ``publish=True`` writes them into the tracked
``experiments/figures/`` and ``experiments/results/``: that is how the committed artefacts are regenerated. An
explicit ``out_dir`` (the tests' temporary folders) overrides both.
"""

from __future__ import annotations

from pathlib import Path

from common.io import PROJECT_ROOT

PUBLISHED = PROJECT_ROOT / "experiments"
UNPUBLISHED = PROJECT_ROOT / "runs" / "notebooks"


def output_root(notebook: str, publish: bool = False, out_dir: str | Path | None = None) -> Path:
    """The folder that holds ``figures/`` and ``results/`` of ``notebook`` (its name without ``.ipynb``).

    ``out_dir`` when given (relative paths are taken from the project root), else ``experiments/`` when ``publish``,
    else ``runs/notebooks/<notebook>/``.
    """
    if out_dir is not None:
        path = Path(out_dir)
        return path if path.is_absolute() else PROJECT_ROOT / path
    return PUBLISHED if publish else UNPUBLISHED / Path(notebook).stem


def output_dirs(notebook: str, publish: bool = False, out_dir: str | Path | None = None) -> tuple[Path, Path]:
    """``(figures, results)`` folders of :func:`output_root`, created."""
    root = output_root(notebook, publish, out_dir)
    figures, results = root / "figures", root / "results"
    figures.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    return figures, results


def shown(path: str | Path) -> str:
    """``path`` relative to the project root when it lies inside it (tables and saved results carry no machine
    paths)."""
    path = Path(path).resolve()
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)
