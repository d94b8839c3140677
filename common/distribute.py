"""The ``tf.distribute`` strategies of ``--strategy``: ``default``, ``mirrored`` (every local GPU, else every
logical CPU device) and ``multiworker`` (``MultiWorkerMirroredStrategy`` over the ``TF_CONFIG`` cluster)."""

from __future__ import annotations

import functools

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multiworker")


@functools.cache
def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy ``name``, once per process (two mirrored strategies' collective keys would collide)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy([d.name for d in (gpus or tf.config.list_logical_devices("CPU"))])
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; choose one of {STRATEGIES}")


def replica_id() -> int:
    """The global replica id (a Python int) inside ``strategy.run``; 0 outside any strategy."""
    return int(tf.get_static_value(tf.distribute.get_replica_context().replica_id_in_sync_group))
