"""The wheel works outside this checkout: it holds every package and the shipped weights, imports from where it was
installed, caches downloads in the user's cache folder, and runs the README's example to the README's numbers.

The wheel is built offline (``pip wheel --no-deps --no-build-isolation``, with the setuptools of the venv) from a
copy of the files git knows (tracked, or new and not ignored), so that neither a stale ``build/`` nor a cache folder
(``weights/cache/``, ``data/raw/``) of the checkout gets in. It is installed with ``pip install --no-deps --target``
and exercised by a fresh interpreter whose only path to the project is that target folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import CLUE
import data.sources
import weights
from common import version

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "data", "BNN", "VAE", "VAEAC", "CLUE", "weights")
TOP_FILES = ("pyproject.toml", "README.md", "LICENSE", "CITATION.cff", "MANIFEST.in", "requirements.txt",
             "DEVIATIONS.md")


# --- cheap checks (no build) -------------------------------------------------------------------------------------

def test_one_version_everywhere():
    assert CLUE.__version__ == version.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", version.__version__)
    cff = re.search(r"^version:\s*['\"]?([^'\"\s]+)", (ROOT / "CITATION.cff").read_text(), re.M)
    assert cff and cff.group(1) == version.__version__, "CITATION.cff's version differs from common/version.py"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'attr = "common.version.__version__"' in pyproject


def test_a_checkout_keeps_its_caches_inside_it(monkeypatch):
    monkeypatch.delenv("CLUE_CACHE_DIR", raising=False)
    assert version.checkout_root() is not None
    assert data.sources.cache_dir() == ROOT / "data" / "raw"
    manifest = weights.read_manifest()
    assert manifest.cache is None
    name = next(n for n, e in manifest.entries.items() if not e.committed)
    assert manifest.local_dir(name) == ROOT / "weights" / weights.CACHE / manifest.entry(name).path


def test_installed_caches_go_to_the_user_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(version, "checkout_root", lambda: None)  # what an installed copy sees
    monkeypatch.setattr(weights, "checkout_root", lambda: None)
    monkeypatch.delenv("CLUE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert version.user_cache_dir() == tmp_path / "xdg" / "clue-tf"
    assert weights.default_cache() == tmp_path / "xdg" / "clue-tf" / "weights"
    manifest = weights.read_manifest()
    name = next(n for n, e in manifest.entries.items() if not e.committed)
    assert manifest.local_dir(name) == tmp_path / "xdg" / "clue-tf" / "weights" / manifest.entry(name).path
    committed = next(n for n, e in manifest.entries.items() if e.committed)
    assert manifest.local_dir(committed) == weights.ROOT / manifest.entry(committed).path  # shipped in the package
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # not absolute: ignored, as the XDG spec says
    assert version.user_cache_dir() == Path.home() / ".cache" / "clue-tf"
    monkeypatch.setenv("CLUE_CACHE_DIR", str(tmp_path / "mine"))  # still wins
    assert weights.default_cache() == tmp_path / "mine" / "weights"
    assert data.sources.cache_dir() == tmp_path / "mine"
    other = tmp_path / "other" / "manifest.json"  # any other manifest keeps its cache/ beside it
    other.parent.mkdir()
    shutil.copy(weights.MANIFEST, other)
    assert weights.read_manifest(other).local_dir(name) == other.parent / weights.CACHE / manifest.entry(name).path


# --- the wheel -----------------------------------------------------------------------------------------------------

def _project_files() -> list[str]:
    """The files of the packages and the top-level files an sdist holds: what git tracks, or new and not ignored."""
    try:
        listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                                 "--exclude-standard"], capture_output=True, text=True, check=True,
                                timeout=60).stdout.split("\0")
    except (OSError, subprocess.SubprocessError):
        pytest.skip("git is needed to tell the checkout's files from its caches")
    keep = [f for f in listed if f and (f in TOP_FILES or f.split("/")[0] in PACKAGES)]
    return [f for f in keep if (ROOT / f).is_file() and "__pycache__" not in f]


def _expected_modules(files: list[str]) -> list[str]:
    """Every module of every package: each .py file in a folder that is a package all the way up."""
    modules = []
    for f in files:
        path = Path(f)
        if path.suffix != ".py" or path.parts[0] not in PACKAGES:
            continue
        folders = [Path(*path.parts[:i]) for i in range(1, len(path.parts))]
        if all((ROOT / d / "__init__.py").is_file() for d in folders):
            parts = path.with_suffix("").parts
            modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(modules)


def _readme_example() -> tuple[str, tuple[str, str]]:
    """The first python block of README.md's ``## Use`` section, and the two numbers its ``print`` line promises."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Use\n", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    promised = re.search(r"print\(.*#\s*([0-9.]+)\s*->\s*([0-9.]+)", code)
    assert promised, "the README's example no longer prints 'before -> after'"
    return code, (promised.group(1), promised.group(2))


CHECK = textwrap.dedent('''
    import contextlib, importlib, io, json, os, sys, traceback
    from pathlib import Path

    target, modules, example = Path(sys.argv[1]).resolve(), json.loads(sys.argv[2]), sys.argv[3]
    report = {"outside": {}, "failed": {}}
    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception:
            report["failed"][name] = traceback.format_exc(limit=3)
            continue
        where = Path(module.__file__).resolve()
        if target not in where.parents:
            report["outside"][name] = str(where)
    import CLUE, data.sources, weights
    from common import version
    from common.runs import make_run_dir
    report["version"] = CLUE.__version__
    report["checkout_root"] = version.checkout_root()
    report["data_cache"] = str(data.sources.cache_dir())
    manifest = weights.read_manifest()
    report["weights_cache"] = str(manifest.cache)
    report["manifest"] = str(weights.MANIFEST.resolve())
    run = make_run_dir(Path(os.environ["CHECK_RUN_DIR"]), {"out": "x", "seed": 0}, kind="packaging-test")
    report["run"] = json.loads((run / "run.json").read_text())
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(example, "README.md", "exec"), {"__name__": "__readme__"})
    report["printed"] = out.getvalue()
    print("REPORT " + json.dumps(report, default=str))
''')


@pytest.mark.slow
def test_the_wheel_installs_imports_and_runs_the_readme_example(tmp_path, data_dir):
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools in this environment")
    files = _project_files()
    src, dist, target, work = (tmp_path / p for p in ("src", "dist", "target", "work"))
    for f in files:
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    built = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)],
                           capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = dist.glob("clue_tf-*.whl")
    assert wheel.name.startswith(f"clue_tf-{version.__version__}-py3-none-any")

    # The wheel holds every package (CLUE.evaluation too), the manifest and every committed weight file, the
    # license, and no cache or raw data.
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = _expected_modules(files)
    as_files = {m.replace(".", "/") + ("/__init__.py" if (ROOT / m.replace(".", "/")).is_dir() else ".py")
                for m in modules}
    assert not as_files - names, f"modules missing from the wheel: {sorted(as_files - names)}"
    assert "CLUE/evaluation/__init__.py" in names and "weights/manifest.json" in names
    manifest = weights.read_manifest()
    shipped = {f"weights/{e.path}/{f.file}" for e in manifest.entries.values() if e.committed for f in e.files}
    assert shipped and not shipped - names, f"committed weights missing: {sorted(shipped - names)[:5]}"
    assert not [n for n in names if n.startswith(("weights/cache/", "data/raw/")) or "__pycache__" in n]
    assert any(n.endswith(".dist-info/LICENSE") or "/licenses/LICENSE" in n for n in names)

    installed = subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
                               capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    before = sorted(str(p.relative_to(target)) for p in target.rglob("*"))

    # A fresh interpreter, from a folder outside the checkout, whose only way to the project is the target folder.
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CLUE_CACHE_DIR", "PYTHONPATH", "PYTHONHOME")}
    env.update(PYTHONPATH=str(target), PYTHONDONTWRITEBYTECODE="1", PYTHONNOUSERSITE="1",
               XDG_CACHE_HOME=str(tmp_path / "xdg"), CLUE_DATA_DIR=str(data_dir), CHECK_RUN_DIR=str(work / "run"))
    example, (before_number, after_number) = _readme_example()
    done = subprocess.run([sys.executable, "-c", CHECK, str(target), json.dumps(modules), example],
                          capture_output=True, text=True, cwd=work, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    report = json.loads(done.stdout.rsplit("REPORT ", 1)[1])

    assert not report["failed"], report["failed"]
    assert not report["outside"], f"imported from outside the installed wheel: {report['outside']}"
    assert report["version"] == version.__version__
    assert report["manifest"].startswith(str(target.resolve()))
    assert report["checkout_root"] is None
    assert report["data_cache"] == str(tmp_path / "xdg" / "clue-tf")
    assert report["weights_cache"] == str(tmp_path / "xdg" / "clue-tf" / "weights")
    assert report["run"]["kind"] == "packaging-test" and report["run"]["version"] == version.__version__
    assert report["run"]["code"]["commit"] is None and report["run"]["code"]["dirty"] is None

    printed = [float(x) for x in re.findall(r"[-+]?\d+\.\d+(?:e[-+]?\d+)?", report["printed"])]
    assert len(printed) >= 2, report["printed"]
    assert (f"{printed[0]:.3f}", f"{printed[1]:.3f}") == (before_number, after_number), report["printed"]
    # Nothing was written into the installed package (no cache, no downloads, no byte code).
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == before
