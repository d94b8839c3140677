"""Running a notebook leaves the checkout clean: figures and results go under ``runs/notebooks/<notebook>/``
(git-ignored) unless the papermill parameter ``publish`` is True (then into the tracked ``experiments/figures/`` and
``experiments/results/``, as the committed runs were made)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import time

import pytest

from common.io import PROJECT_ROOT

EXPERIMENTS = PROJECT_ROOT / "experiments"
# loaded from its file, as the notebooks (run from the project root) import it: experiments/ is not an installed package
_spec = importlib.util.spec_from_file_location("experiments.outputs", EXPERIMENTS / "outputs.py")
outputs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(outputs)
PUBLISHED, UNPUBLISHED, output_dirs, output_root = (outputs.PUBLISHED, outputs.UNPUBLISHED, outputs.output_dirs,
                                                    outputs.output_root)
NOTEBOOKS = ("beyond_bnn", "clues_mnist", "clues_tabular", "compare_pytorch", "evaluation_framework", "train_models",
             "vae_attention")
TRACKED_OUTPUTS = (EXPERIMENTS / "figures", EXPERIMENTS / "results")


def _snapshot() -> dict:
    return {p: p.read_bytes() for folder in TRACKED_OUTPUTS for p in sorted(folder.rglob("*")) if p.is_file()}


def _git_status() -> str | None:
    """``git status --porcelain`` of the tracked output folders, or None outside a git checkout."""
    if shutil.which("git") is None or not (PROJECT_ROOT / ".git").exists():
        return None
    done = subprocess.run(["git", "status", "--porcelain", "--", *map(str, TRACKED_OUTPUTS)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


def test_output_root_unpublished_published_and_explicit(tmp_path):
    assert output_root("clues_tabular") == PROJECT_ROOT / "runs" / "notebooks" / "clues_tabular" == \
        UNPUBLISHED / "clues_tabular"
    assert output_root("clues_tabular.ipynb") == UNPUBLISHED / "clues_tabular"
    assert output_root("clues_tabular", publish=True) == PUBLISHED == EXPERIMENTS
    assert output_root("clues_tabular", True, tmp_path) == tmp_path  # an explicit folder wins
    assert output_root("clues_tabular", out_dir="runs/mine") == PROJECT_ROOT / "runs" / "mine"
    figures, results = output_dirs("clues_tabular", out_dir=tmp_path / "o")
    assert figures == tmp_path / "o" / "figures" and figures.is_dir() and results.is_dir()


def test_unpublished_outputs_are_git_ignored():
    if shutil.which("git") is None or not (PROJECT_ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    probe = (UNPUBLISHED / "clues_tabular" / "results" / "clues_tabular.json").relative_to(PROJECT_ROOT)
    assert subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=PROJECT_ROOT).returncode == 0


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_cell_defaults_to_unpublished(name):
    cells = json.loads((EXPERIMENTS / f"{name}.ipynb").read_text())["cells"]
    params = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    assert len(params) == 1
    values: dict = {}
    exec("".join(params[0]["source"]), values)  # the parameters cell holds plain assignments only
    assert values["publish"] is False
    for key in ("out_dir", "results_dir"):  # no output folder defaults to the tracked experiments/
        assert values.get(key) != "experiments", key
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert f'"{name}", publish, ' in code  # the output folder is chosen by experiments.outputs from publish


def test_unpublished_notebook_run_leaves_the_checkout_clean(data_dir, run_notebook):
    """clues_tabular.ipynb (smoke, COMPAS, committed weights) with its default parameters: nothing tracked changes,
    the figure and results appear under runs/notebooks/clues_tabular/."""
    target = UNPUBLISHED / "clues_tabular"
    existed, parent_existed = target.exists(), UNPUBLISHED.exists()
    before, status = _snapshot(), _git_status()
    start = time.time()
    try:
        run_notebook("clues_tabular.ipynb", dataset="compas")
        after = _snapshot()
        changed = sorted(str(p.relative_to(PROJECT_ROOT)) for p in before.keys() | after.keys()
                         if before.get(p) != after.get(p))
        assert not changed, f"an unpublished run rewrote tracked outputs: {changed}"
        assert _git_status() == status
        results_json = target / "results" / "clues_tabular.json"
        results = json.loads(results_json.read_text())
        assert results["settings"]["smoke"] is True and list(results["ours"]) == ["compas"]
        assert results_json.stat().st_mtime >= start - 1
        png = target / "figures" / "clues_tabular.png"
        assert png.stat().st_mtime >= start - 1 and png.stat().st_size > 5000
    finally:  # a failing run must not leave the checkout dirty either
        for path, data in before.items():
            if not path.exists() or path.read_bytes() != data:
                path.write_bytes(data)
        for path in _snapshot().keys() - before.keys():
            path.unlink()
        if not existed:
            shutil.rmtree(target, ignore_errors=True)
        if not parent_existed and UNPUBLISHED.is_dir() and not any(UNPUBLISHED.iterdir()):
            UNPUBLISHED.rmdir()


def test_committed_notebooks_write_nothing_tracked_when_run_without_parameters():
    """Run as the README says (no parameters), a committed notebook publishes nothing: its parameters cell says
    ``publish = False`` and no papermill-injected cell overrides it (experiments/publish_notebook.py strips it)."""
    import nbformat

    for path in sorted((PROJECT_ROOT / "experiments").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        tags = [c.metadata.get("tags", []) for c in nb.cells]
        assert not any("injected-parameters" in t for t in tags), f"{path.name} holds an injected parameters cell"
        (params,) = [c for c, t in zip(nb.cells, tags) if "parameters" in t]
        assert re.search(r"^publish = False\b", params.source, re.M), f"{path.name}: {params.source[:200]}"
