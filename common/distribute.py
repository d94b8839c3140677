"""The ``tf.distribute`` strategies the scripts accept (``--strategy``), shared by ``BNN.train`` and ``CLUE.generate``.

* ``default``: TensorFlow's default strategy, one replica wherever TF places ops (a GPU when there is one);
* ``mirrored``: ``MirroredStrategy`` over every local GPU, or, without a GPU, every logical CPU device (configure
  several with ``tf.config.set_logical_device_configuration`` before TensorFlow starts; tests use two);
* ``multiworker``: ``MultiWorkerMirroredStrategy`` over the cluster described by ``TF_CONFIG`` (without it, one
  local worker).
"""

from __future__ import annotations

import functools

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multiworker")


@functools.cache
def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy named ``name`` (one of ``STRATEGIES``), created once per process.

    Two mirrored strategies in one process hand out the same collective instance keys, so a second one's gathers
    collide with the first's ("Shape mismatch in the collective instance"); a multi-worker strategy must be unique
    anyway. Hence one instance per name, reused.
    """
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
