"""Seeding, run directories, atomic file writes and the benchmarks' machine record, shared by every component.

Nothing half-written is ever left behind: every file this project writes goes to a temporary name in the same
folder first and is renamed into place only when complete (``os.replace`` is atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import platform
import random
import shutil
import sys
import tempfile
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seeds Python, NumPy and TensorFlow together from one integer.

    Args:
      seed: the run seed.
      deterministic: also ask TensorFlow for deterministic kernels (slower; bitwise-repeatable runs).
    """
    random.seed(seed)
    np.random.seed(seed)
    import tensorflow as tf  # imported lazily so that `data` stays importable without TF start-up cost

    tf.keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path beside ``path``; renames it onto ``path`` only if the block succeeds.

    Works for files and for folders (the block creates whatever it likes at the yielded path). On any exception
    the temporary is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp_name)  # the block decides whether it is a file or a folder
    tmp = Path(tmp_name)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def save_json(path: str | os.PathLike, obj: Mapping[str, Any] | list) -> None:
    """Writes ``obj`` as indented JSON, atomically; NumPy scalars and arrays are converted."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, paths strings)."""
    return json.loads(json.dumps(value, default=_json_default))


def load_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def save_npz(path: str | os.PathLike, compressed: bool = False, **arrays: np.ndarray) -> None:
    """Writes arrays to an ``.npz`` atomically (numpy appends nothing since we pass an open file)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        (np.savez_compressed if compressed else np.savez)(f, **arrays)


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


def make_run_dir(out: str | os.PathLike, config: Mapping[str, Any],
                 resume_safe: Collection[str] | None = None) -> Path:
    """Creates ``out`` (never deletes it: runs resume) and writes ``config.json`` and the command line.

    Args:
      out: the run folder.
      config: the run's settings.
      resume_safe: for resumable training runs, the settings that may differ from those of a run already in
        ``out`` (besides ``RESUME_SAFE``), e.g. the epoch cap; any other difference raises, since resuming a
        checkpoint under other settings would silently mix two runs. None: no check (outputs are recomputed).

    Raises:
      ValueError: ``out`` holds a run with other settings.
    """
    run_dir = Path(out)
    if resume_safe is not None and (run_dir / "config.json").exists():
        previous = load_json(run_dir / "config.json")
        allowed = RESUME_SAFE | set(resume_safe)
        changed = {k: (previous[k], config[k]) for k in set(previous) & set(config)
                   if k not in allowed and previous[k] != jsonable(config[k])}
        if changed:
            detail = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(changed.items()))
            raise ValueError(f"{run_dir} holds a run with other settings ({detail}); resuming it would mix two runs. "
                             f"Use another --out, or the same settings to resume it")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_json(run_dir / "config.json", dict(config))
    with atomic_path(run_dir / "argv.txt") as tmp:
        tmp.write_text(" ".join(sys.argv) + "\n")
    return run_dir


def setup_logging(level: int = logging.INFO) -> None:
    """Called by scripts only; library modules just use ``logging.getLogger(__name__)``."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile")  # what changes float32 kernels


def machine_info(**extra: Any) -> dict[str, Any]:
    """What a benchmark's timings depend on: CPU model and SIMD extensions, core count, TensorFlow, OpenMP policy.

    Timings are comparable only between records with the same CPU: ``benchmarks/clue_speed.py`` ran 1.3-1.4x faster
    on one 2-core machine of this project's kind than on another. ``extra`` entries (GPUs, ...) are added as given.
    """
    import tensorflow as tf  # the benchmarks import it anyway; kept local so that common.utils stays light

    cpu_model, flags = platform.processor() or None, set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu_model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    return {"cpus": os.cpu_count(), "cpu_model": cpu_model, "simd": [f for f in SIMD_FLAGS if f in flags],
            "platform": platform.platform(), "tensorflow": tf.__version__,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "load_average_start": list(os.getloadavg()),
            **extra}
