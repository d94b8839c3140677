"""Seeding, run directories, atomic file writes and the benchmarks' machine record, shared by every component.

Nothing half-written is ever left behind: every file this project writes goes to a temporary name in the same
folder first and is renamed into place only when complete (``os.replace`` is atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import contextvars
import csv
import json
import logging
import os
import platform
import random
import shutil
import sys
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import UserError
from common.io import atomic_path  # defined in common.io; also importable from here, as it always was
from common.version import provenance

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


def philox(seed: int, stream: int = 0):
    """A ``tf.random.Generator`` whose stream is independent for every ``(seed, stream)`` pair.

    ``tf.random.Generator.from_seed(s)`` puts ``s`` in the Philox *counter* and leaves the key at 0, so seeds
    ``s`` and ``s + 1`` give one stream shifted by one block (4 draws): chains, runs or stages seeded that way
    share their noise. Here the seed is the key and the stream is the counter's high word, so different seeds
    are different Philox permutations and different streams of one seed are 2^64 blocks apart.
    ``philox(0)`` equals ``from_seed(0)``; other seeds draw differently from ``from_seed``.

    Args:
      seed: a non-negative integer below 2^64 (the run seed).
      stream: a non-negative integer naming the purpose (e.g. 0 training, 1 under-VAEAC, 2 fixed masks).
    """
    import tensorflow as tf

    for name, value in (("seed", seed), ("stream", stream)):
        if not 0 <= int(value) < 2**64:
            raise UserError(f"{name} must be an integer in [0, 2^64), got {value}")
    as_int64 = lambda v: int(np.array(int(v), dtype=np.uint64).view(np.int64))  # noqa: E731 (bit pattern)
    return tf.random.Generator.from_key_counter(key=as_int64(seed), counter=[0, as_int64(stream)],
                                                alg="philox")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


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


def machine_info(**extra: Any) -> dict[str, Any]:
    """What a benchmark's timings depend on: CPU model and SIMD extensions, core count, TensorFlow, OpenMP policy.

    Timings are comparable only between records with the same CPU: ``benchmarks/clue_speed.py`` ran 1.3-1.4x faster
    on one 2-core machine of this project's kind than on another. ``extra`` entries (GPUs, ...) are added as given.
    """
    import tensorflow as tf  # the benchmarks import it anyway; kept local so that common.utils stays light

    return {"cpus": os.cpu_count(), **cpu_info(), "platform": platform.platform(), "tensorflow": tf.__version__,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "load_average_start": list(os.getloadavg()),
            **extra}


def matmul_gflops(n: int = 2048, repeats: int = 3, dtype: str = "float32") -> float:
    """GFLOP/s of an ``n x n x n`` matmul in ``dtype`` on this machine (2 FLOPs per multiply-add), the median of
    ``repeats`` timed runs after a warm-up: the reference rate the benchmarks compare their workloads with."""
    import statistics
    import time

    import tensorflow as tf

    a = tf.cast(tf.random.normal([n, n], seed=1), dtype)
    b = tf.cast(tf.random.normal([n, n], seed=2), dtype)
    mm = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32)))
    float(mm())  # warm-up: traces and picks the kernel
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        float(mm())
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def write_benchmark(path: str | os.PathLike, result: dict[str, Any]) -> dict[str, Any]:
    """Writes a benchmark's ``result`` (whose ``machine`` came from :func:`machine_info`) to ``path`` as JSON, with
    the load average at the end beside the one at the start, and logs where it went; returns ``result``."""
    result.setdefault("machine", {})["load_average_end"] = list(os.getloadavg())
    save_json(path, result)
    logger.info("wrote %s", path)
    return result
