"""Runs BNN chains or CLUE on two logical CPU devices, for tests/test_distribute.py (a separate process: the
logical devices must be configured before TensorFlow starts, which the test process has already done).

Usage: ``python tests/two_devices.py chains OUT`` or ``python tests/two_devices.py clue OUT DATA_DIR``.
"""

import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from common.config import with_preset  # noqa: E402  (after the device configuration)


def chains(out: str) -> None:
    """Two chains mirrored over the two devices, then the same two chains one at a time (``--chain-offset``)."""
    from BNN import train

    tiny = dict(n_epochs=5, n_saves=3, progress=False)
    train.main(with_preset(train.Config, train.PRESETS, "tiny", chains=2, strategy="mirrored", out=f"{out}/mirrored",
                           **tiny))
    for k in range(2):
        train.main(with_preset(train.Config, train.PRESETS, "tiny", chain_offset=k, out=f"{out}/chain_{k}", **tiny))


def clue(out: str, data_dir: str) -> None:
    """CLUE.generate on LSAT with the committed models, on one device and sharded over the two."""
    from CLUE import generate

    for strategy in ("default", "mirrored"):
        generate.main(with_preset(generate.Config, generate.PRESETS, "tiny", dataset="lsat", data_dir=data_dir,
                                  bnn="weights/bnn/lsat", vae="weights/vae/lsat", n_explain=40, max_steps=30,
                                  batch_size=32, strategy=strategy, out=f"{out}/{strategy}"))


if __name__ == "__main__":
    assert len(tf.config.list_logical_devices("CPU")) == 2
    {"chains": chains, "clue": clue}[sys.argv[1]](*sys.argv[2:])
