"""Seeding: Python, NumPy and TensorFlow from one integer, and one independent Philox stream per (seed, stream)."""

from __future__ import annotations

import random

import numpy as np

from common.errors import UserError


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
