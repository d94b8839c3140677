"""Every run's ``run.json`` records what produced it: the code's commit, the library versions and the CPU."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from common import version
from common.runs import RUN_FILE, make_run_dir
from common.version import cpu_info

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fresh_cache():
    """Forgets the per-process provenance before and after the test (it is computed once per process)."""
    version.code_commit.cache_clear()
    version._static_provenance.cache_clear()
    yield
    version.code_commit.cache_clear()
    version._static_provenance.cache_clear()


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout


def test_run_json_records_the_commit_versions_and_cpu(tmp_path, fresh_cache):
    if shutil.which("git") is None:
        pytest.skip("no git executable")
    run = make_run_dir(tmp_path / "run", {"out": str(tmp_path / "run"), "seed": 0}, kind="BNN.train")
    record = json.loads((run / RUN_FILE).read_text())
    assert record["kind"] == "BNN.train" and record["version"] == version.__version__
    assert record["code"]["commit"] == _git("rev-parse", "HEAD").strip()
    assert len(record["code"]["commit"]) in (40, 64)
    assert record["code"]["dirty"] == bool(_git("status", "--porcelain", "--untracked-files=no").strip())
    assert record["code"]["source"] == str(ROOT)
    assert record["python"] == platform.python_version()
    libraries = record["libraries"]
    assert libraries["numpy"] == np.__version__
    assert libraries["tensorflow"] == metadata.version("tensorflow")
    assert libraries["keras"] == metadata.version("keras")
    assert libraries["tensorflow_probability"] == metadata.version("tensorflow-probability")
    assert record["cpu_model"] == cpu_info()["cpu_model"] and record["cpu_model"]
    assert isinstance(record["simd"], list)
    # a run folder with the record is still recognised as this kind of run (the same command resumes it)
    assert make_run_dir(run, {"out": str(tmp_path / "run"), "seed": 0}, kind="BNN.train") == run


def test_imported_modules_report_their_own_version(monkeypatch):
    class Fake:
        __version__ = "9.9.9"

    monkeypatch.setitem(sys.modules, "tensorflow", Fake())
    assert version.library_version("tensorflow") == "9.9.9"
    assert version.provenance()["libraries"]["tensorflow"] == "9.9.9"


def test_git_runs_once_per_process(monkeypatch, fresh_cache):
    calls = []
    run = subprocess.run
    monkeypatch.setattr(version.subprocess, "run", lambda *a, **k: calls.append(a[0]) or run(*a, **k))
    for _ in range(3):
        version.provenance()
    assert len(calls) <= 2  # rev-parse HEAD, status: once


def test_no_git_never_fails_a_run(monkeypatch, tmp_path, fresh_cache):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # git cannot be found
    run = make_run_dir(tmp_path / "run", {"out": "x", "seed": 0}, kind="VAE.train")
    record = json.loads((run / RUN_FILE).read_text())
    assert record["code"]["commit"] is None and record["code"]["dirty"] is None
    assert record["kind"] == "VAE.train" and record["python"] == platform.python_version()


def test_git_failing_or_hanging_gives_none(monkeypatch, fresh_cache):
    def hang(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], 10)

    monkeypatch.setattr(version.subprocess, "run", hang)
    assert version.code_commit() == {"commit": None, "dirty": None}


def test_outside_a_checkout_the_commit_is_none(monkeypatch, fresh_cache):
    monkeypatch.setattr(version, "checkout_root", lambda: None)
    assert version.provenance()["code"]["commit"] is None
    assert version.provenance()["code"]["dirty"] is None


def test_the_checkout_is_found_and_an_installed_copy_is_not(tmp_path, monkeypatch):
    assert version.checkout_root() == ROOT or ROOT.is_relative_to(version.checkout_root())
    # an installed copy: the packages without the project's pyproject.toml beside them, even inside someone's repo
    (tmp_path / ".git").mkdir()
    site = tmp_path / "venv" / "lib" / "site-packages"
    site.mkdir(parents=True)
    version.checkout_root.cache_clear()
    try:
        monkeypatch.setattr(version, "SOURCE_ROOT", site)
        assert version.checkout_root() is None
        (site / "pyproject.toml").write_text('[project]\nname = "something-else"\n')
        version.checkout_root.cache_clear()
        assert version.checkout_root() is None
    finally:
        monkeypatch.undo()
        version.checkout_root.cache_clear()
    assert version.checkout_root() is not None


def test_a_broken_record_does_not_stop_the_run(monkeypatch, tmp_path, fresh_cache):
    def broken():
        raise RuntimeError("no cpu")

    monkeypatch.setattr("common.version.cpu_info", broken)
    run = make_run_dir(tmp_path / "run", {"out": "x", "seed": 0}, kind="VAE.train")
    record = json.loads((run / RUN_FILE).read_text())
    assert record["kind"] == "VAE.train" and record["version"] == version.__version__
