"""RAdam and torch-form Adam against hand-written numpy versions of the original's update rules (spec 4.10)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from common.radam import RAdam, TorchAdam


def numpy_radam(theta, grads, lr, wd=0.0, b1=0.9, b2=0.999, eps=1e-8):
    """The original src/radam.py, written out in float64 numpy."""
    theta = theta.astype(np.float64).copy()
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    rho_inf = 2 / (1 - b2) - 1
    out = []
    for t, g in enumerate(grads, start=1):
        v = b2 * v + (1 - b2) * g * g
        m = b1 * m + (1 - b1) * g
        rho_t = rho_inf - 2 * t * b2**t / (1 - b2**t)
        theta = theta - wd * lr * theta
        if rho_t >= 5:
            step = np.sqrt((1 - b2**t) * (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            theta = theta - lr * step / (1 - b1**t) * m / (np.sqrt(v) + eps)
        else:
            theta = theta - lr / (1 - b1**t) * m
        out.append(theta.copy())
    return out


def numpy_torch_adam(theta, grads, lr, b1=0.9, b2=0.999, eps=1e-8):
    theta = theta.astype(np.float64).copy()
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    out = []
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        theta = theta - lr / (1 - b1**t) * m / (np.sqrt(v) / np.sqrt(1 - b2**t) + eps)
        out.append(theta.copy())
    return out


def _run(opt, theta0, grads):
    var = tf.Variable(theta0)
    traj = []
    for g in grads:
        opt.apply_gradients([(tf.constant(g), var)])
        traj.append(var.numpy().copy())
    return traj


@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_radam_matches_numpy_through_the_rectification_switch(wd):
    rng = np.random.default_rng(0)
    theta0 = rng.normal(size=(3, 4)).astype(np.float32)
    grads = [rng.normal(size=(3, 4)).astype(np.float32) for _ in range(12)]  # steps 1-5 SGD, 6-12 rectified
    lr = 0.05
    ours = _run(RAdam(learning_rate=lr, weight_decay=wd or None), theta0, grads)
    ref = numpy_radam(theta0, [g.astype(np.float64) for g in grads], lr, wd)
    for t, (a, b) in enumerate(zip(ours, ref, strict=True), start=1):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"step {t}")
    # steps 1-5 are bias-corrected momentum SGD; from step 6 on the rectified Adam step takes over
    sgd_only = numpy_radam(theta0, grads, lr, wd, b2=0.0)  # b2 = 0 keeps rho_t < 5 forever
    np.testing.assert_allclose(ours[4], sgd_only[4], rtol=1e-5, atol=1e-6)
    assert np.abs(ours[5] - sgd_only[5]).max() > 1e-3


def test_torch_adam_matches_numpy():
    rng = np.random.default_rng(1)
    theta0 = rng.normal(size=(5,)).astype(np.float32)
    grads = [rng.normal(size=(5,)).astype(np.float32) * 1e-3 for _ in range(8)]  # small g: eps placement matters
    ours = _run(TorchAdam(learning_rate=0.1, epsilon=1e-4), theta0, grads)
    ref = numpy_torch_adam(theta0, grads, 0.1, eps=1e-4)
    for a, b in zip(ours, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    keras_like = _run(tf.keras.optimizers.Adam(learning_rate=0.1, epsilon=1e-4), theta0, grads)
    assert np.abs(keras_like[-1] - ref[-1]).max() > 1e-3  # Keras's epsilon form is measurably different


def test_radam_state_survives_checkpoint(tmp_path):
    rng = np.random.default_rng(2)
    theta0 = rng.normal(size=(4,)).astype(np.float32)
    grads = [rng.normal(size=(4,)).astype(np.float32) for _ in range(9)]
    full = _run(RAdam(learning_rate=0.05), theta0, grads)

    var, opt = tf.Variable(theta0), RAdam(learning_rate=0.05)
    for g in grads[:6]:
        opt.apply_gradients([(tf.constant(g), var)])
    path = tf.train.Checkpoint(var=var, opt=opt).save(str(tmp_path / "ckpt"))
    var2, opt2 = tf.Variable(np.zeros(4, np.float32)), RAdam(learning_rate=0.05)
    opt2.build([var2])
    tf.train.Checkpoint(var=var2, opt=opt2).restore(path).assert_consumed()
    assert int(opt2.iterations) == 6
    for g in grads[6:]:
        opt2.apply_gradients([(tf.constant(g), var2)])
    np.testing.assert_allclose(var2.numpy(), full[-1], rtol=1e-6, atol=1e-7)
