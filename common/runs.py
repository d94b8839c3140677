"""Run folders: creation, resumption and overwrite rules, the per-epoch ``metrics.csv``, and script logging."""

from __future__ import annotations

import contextlib
import contextvars
import csv
import logging
import os
import shutil
import sys
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserError
from common.io import atomic_path, jsonable, load_json, save_json
from common.version import provenance

logger = logging.getLogger(__name__)


class MetricsCSV:
    """Appends one row per epoch to ``metrics.csv``; on resume, rows past the resumed epoch are dropped.

    The header is fixed by the first row written; later rows may not add columns.
    """

    def __init__(self, path: str | os.PathLike, resume_epoch: int = 0):
        self.path = Path(path)
        self.fieldnames: list[str] | None = None
        rows: list[dict[str, str]] = []
        if self.path.exists():
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                self.fieldnames = list(reader.fieldnames or [])
                rows = [r for r in reader if int(float(r.get("epoch", 0))) < resume_epoch]
            with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.fieldnames)
                writer.writeheader()
                writer.writerows(rows)

    def append(self, row: Mapping[str, Any]) -> None:
        new_file = self.fieldnames is None
        if new_file:
            self.fieldnames = list(row)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fieldnames)
            if new_file:
                writer.writeheader()
            writer.writerow({k: (float(v) if isinstance(v, np.generic) else v) for k, v in row.items()})


# Settings a resumed training run may change: where things are, how much is shown, and how long it runs.
RESUME_SAFE = frozenset({"out", "data_dir", "progress", "eval_batch_size", "deterministic", "xla"})


RUN_FILE = "run.json"  # {"kind": "BNN.train", ...}: which script wrote the run folder, and with what code


# What a run folder holds before its run has produced anything: a run that failed at its start.
_START_FILES = frozenset({"config.json", "argv.txt", RUN_FILE})


_OVERWRITE: contextvars.ContextVar[bool] = contextvars.ContextVar("clue_overwrite", default=False)


@contextlib.contextmanager
def overwriting(enabled: bool = True) -> Iterator[None]:
    """Within the block, :func:`make_run_dir` replaces conflicting run folders (what ``--overwrite`` does)."""
    token = _OVERWRITE.set(enabled)
    try:
        yield
    finally:
        _OVERWRITE.reset(token)


def _previous_run(run_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The settings and the kind of the run in ``run_dir`` (None, None: no run of this project there).

    A folder without ``run.json`` (written before kinds were recorded) counts as a run when its ``config.json`` is
    a dict with ``out`` and ``seed``, as every script writes; its kind is then unknown (None).
    """
    config, kind = None, None
    with contextlib.suppress(OSError, ValueError):
        config = load_json(run_dir / "config.json")
    if not isinstance(config, dict):
        config = None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        kind = load_json(run_dir / RUN_FILE).get("kind")
    if kind is None and config is not None and not {"out", "seed"} <= set(config):
        config = None  # somebody else's config.json
    return config, kind


def _same_kind(kind: str | None, previous_kind: str | None, previous: Mapping[str, Any] | None,
               config: Mapping[str, Any]) -> bool:
    if kind is None:
        return True  # the caller records no kind: nothing to compare
    if previous_kind is not None:
        return previous_kind == kind
    # An unmarked run: the same script wrote it if it has the same settings, give or take a few added since.
    return previous is not None and len(set(previous) ^ set(config)) <= 3


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def make_run_dir(out: str | os.PathLike, config: Mapping[str, Any], resume_safe: Collection[str] | None = None, *,
                 kind: str | None = None, resumable: bool = True, inputs: Collection[str | os.PathLike] = (),
                 overwrite: bool | None = None) -> Path:
    """Checks that ``out`` may take this run, then creates it and writes ``run.json``, ``config.json`` and the
    command line. Call it once the configuration and the inputs have been validated: nothing is written before.

    ``run.json`` records the run's ``kind`` and what produced it (``common.version.provenance``): the project's
    version, the code's git commit and whether the checkout was dirty (None outside a checkout), the Python,
    TensorFlow, Keras, TensorFlow Probability and numpy versions, the platform and the CPU model. A resumed run
    records the code of its latest start.

    ``out`` is accepted when it does not exist, is empty, holds a run of ``kind`` with the same settings (a
    training run resumes; other outputs are recomputed), or holds a run of ``kind`` that failed before producing
    anything (only its ``config.json``: replaced). It is refused, unless ``overwrite``, when it holds

    * a run of another kind (``run.json``; unmarked runs are told apart by their settings' names): with
      ``overwrite`` that run's files are deleted first;
    * a run of ``kind`` with other settings (checked only when ``resume_safe`` is given): deleted with ``overwrite``;
    * files that are no run of this project (no ``config.json`` of ours): with ``overwrite`` the run is written
      among them and nothing is deleted (refused even then if it would replace a ``config.json`` not of ours).

    Args:
      out: the run folder.
      config: the run's settings.
      resume_safe: settings that may differ from those of a run already in ``out`` (besides ``RESUME_SAFE``), e.g.
        the epoch cap of a training run; any other difference is refused, since resuming a checkpoint under other
        settings would silently mix two runs. None: settings are not compared.
      kind: the script writing the run, e.g. ``"BNN.train"``, recorded in ``run.json`` (None: not checked, and no
        ``run.json`` is written).
      resumable: whether rerunning resumes (training) rather than recomputes; only changes the messages.
      inputs: folders the run reads (``--bnn``, ``--vae``): never deleted by ``overwrite`` (refused instead).
      overwrite: replace a conflicting run (None: as set by :func:`overwriting`, i.e. ``--overwrite``).

    Raises:
      UserError: ``out`` is refused (the message says why and what to do).
    """
    run_dir = Path(out)
    overwrite = _OVERWRITE.get() if overwrite is None else overwrite
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is a file, not a folder: pass a folder for the run's outputs")
    entries = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    clear = False
    if entries:
        previous, previous_kind = _previous_run(run_dir)
        started = not set(entries) <= _START_FILES
        if previous is None:
            clash = sorted(_START_FILES & set(entries))
            if not overwrite or clash:
                shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
                hint = (f"; its {', '.join(clash)} would be overwritten" if clash else
                        ", or --overwrite to write into it (nothing there is deleted)")
                raise UserError(f"--out {run_dir} is not empty ({shown}) and holds no run of this project: use "
                                f"another (or an empty) --out{hint}")
        elif not _same_kind(kind, previous_kind, previous, config):
            what = f"a {previous_kind} run" if previous_kind else "a run of another script"
            if not overwrite:
                raise UserError(f"--out {run_dir} holds {what}, which this {kind} run would overwrite: use another "
                                f"--out, or --overwrite to delete that run first")
            clear = True
        elif resume_safe is not None and started:
            allowed = RESUME_SAFE | set(resume_safe)
            changed = {k: (previous[k], config[k]) for k in set(previous) & set(config)
                       if k not in allowed and previous[k] != jsonable(config[k])}
            if changed and not overwrite:
                detail = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(changed.items()))
                consequence = "resuming it would mix two runs" if resumable else "this run would replace its results"
                raise UserError(f"--out {run_dir} holds a run with other settings ({detail}); {consequence}. Use "
                                f"another --out, the same settings{' to resume it' if resumable else ''}, or "
                                f"--overwrite to delete it first")
            clear = bool(changed)
    if clear:
        for item in inputs:
            if item and Path(item).exists() and _inside(Path(item).resolve(), run_dir.resolve()):
                raise UserError(f"--out {run_dir} holds the input {item}, which --overwrite would delete: write the "
                                f"outputs to another folder")
        logger.warning("--overwrite: deleting the run in %s", run_dir)
        for entry in run_dir.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    if kind is not None:
        save_json(run_dir / RUN_FILE, {"kind": kind, **provenance()})
    save_json(run_dir / "config.json", dict(config))
    with atomic_path(run_dir / "argv.txt") as tmp:
        tmp.write_text(" ".join(sys.argv) + "\n")
    return run_dir


def setup_logging(level: int = logging.INFO) -> None:
    """Called by scripts only; library modules just use ``logging.getLogger(__name__)``."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
