"""The benchmarks' machine record and reference matmul rate, and how a benchmark writes its JSON."""

from __future__ import annotations

import logging
import os
import platform
from typing import Any

from common.io import save_json
from common.version import cpu_info

logger = logging.getLogger(__name__)


def machine_info(**extra: Any) -> dict[str, Any]:
    """What a benchmark's timings depend on: CPU model and SIMD extensions, core count, TensorFlow, OpenMP policy.

    Timings are comparable only between records with the same CPU: ``benchmarks/clue_speed.py`` ran 1.3-1.4x faster
    on one 2-core machine of this project's kind than on another. ``extra`` entries (GPUs, ...) are added as given.
    """
    import tensorflow as tf

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
