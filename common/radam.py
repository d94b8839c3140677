"""RAdam exactly as the original's ``src/radam.py`` (spec 4.10) [1], and Adam in PyTorch's epsilon form [2].

RAdam, step t = 1, 2, ... (``tfa.RectifiedAdam`` places eps differently, trap 6)::

    v <- b2 v + (1 - b2) g^2 ;  m <- b1 m + (1 - b1) g
    rho_inf = 2 / (1 - b2) - 1 ;  rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
    theta <- theta - wd lr theta                                   (decoupled decay, before the update)
    if rho_t >= 5:  r_t = sqrt((1 - b2^t)(rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
                    theta <- theta - lr r_t / (1 - b1^t) * m / (sqrt(v) + eps)
    else:           theta <- theta - lr / (1 - b1^t) * m             (bias-corrected momentum SGD: t <= 5 for b2=0.999)

[1] Liu et al. On the Variance of the Adaptive Learning Rate and Beyond. ICLR 2020.
[2] Kingma & Ba. Adam: A Method for Stochastic Optimization. ICLR 2015.
"""

from __future__ import annotations

import keras
import tensorflow as tf


class _MomentOptimizer(keras.optimizers.Optimizer):
    """Shared slot handling for the two optimizers below (first and second moments per variable)."""

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8, weight_decay=None, name="opt",
                 **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._m = [self.add_variable_from_reference(v, "m") for v in var_list]
        self._v = [self.add_variable_from_reference(v, "v") for v in var_list]

    def _moments(self, gradient, variable):
        i = self._get_variable_index(variable)
        m, v = self._m[i], self._v[i]
        g = tf.cast(gradient, variable.dtype)
        self.assign(v, self.beta_2 * v + (1.0 - self.beta_2) * tf.square(g))
        self.assign(m, self.beta_1 * m + (1.0 - self.beta_1) * g)
        return m, v

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


class RAdam(_MomentOptimizer):
    """Rectified Adam as in the original (update in the module docstring); ``weight_decay`` is ``wd``."""

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8, weight_decay=None, name="radam",
                 **kwargs):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, weight_decay, name, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        m, v = self._moments(gradient, variable)
        # scalar schedule in float64, as the original computes it in Python floats
        t = tf.cast(self.iterations + 1, tf.float64)
        b1, b2 = tf.constant(self.beta_1, tf.float64), tf.constant(self.beta_2, tf.float64)
        b2_t = tf.pow(b2, t)
        rho_inf = 2.0 / (1.0 - b2) - 1.0
        rho_t = rho_inf - 2.0 * t * b2_t / (1.0 - b2_t)
        bias1 = 1.0 - tf.pow(b1, t)
        rect = tf.sqrt(tf.maximum((1.0 - b2_t) * (rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                                  / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t), 0.0)) / bias1
        lr = tf.cast(learning_rate, variable.dtype)
        rectified = tf.cast(rect, variable.dtype) * m / (tf.sqrt(v) + self.epsilon)
        momentum = m / tf.cast(bias1, variable.dtype)
        self.assign_sub(variable, lr * tf.where(rho_t >= 5.0, rectified, momentum))


class TorchAdam(_MomentOptimizer):
    """``torch.optim.Adam`` (trap 5): ``theta <- theta - lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)`` [2]."""

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8, name="torch_adam", **kwargs):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, None, name, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        m, v = self._moments(gradient, variable)
        t = tf.cast(self.iterations + 1, variable.dtype)
        lr = tf.cast(learning_rate, variable.dtype)
        bias1, bias2 = 1.0 - tf.pow(self.beta_1, t), 1.0 - tf.pow(self.beta_2, t)
        self.assign_sub(variable, (lr / bias1) * m / (tf.sqrt(v) / tf.sqrt(bias2) + self.epsilon))
