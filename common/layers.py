"""Residual blocks and the tabular MLP networks of the VAE and VAEAC (spec 4.1, 4.3), with PyTorch's defaults
(traps 1-3): LeakyReLU slope 0.01; BatchNorm eps 1e-5, Keras momentum 0.9 (torch 0.1); Linear/Conv kernels and
biases U(+-1/sqrt(fan_in)). ``training=False`` (the default) uses BatchNorm's running statistics."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

LEAKY_SLOPE = 0.01
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


def torch_uniform(fan_in: int) -> keras.initializers.Initializer:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch's default for Linear/Conv kernels and biases. An unseeded Keras 3
    initializer repeats its draw on every call: give the kernel and the bias one each (:func:`dense` and
    :func:`conv2d` share one, so their bias is the kernel's first row: DEVIATIONS.md)."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


def dense(units: int, fan_in: int, name: str | None = None) -> keras.layers.Dense:
    """A Dense layer initialized like ``torch.nn.Linear(fan_in, units)``."""
    init = torch_uniform(fan_in)
    return keras.layers.Dense(units, kernel_initializer=init, bias_initializer=init, name=name)


def batch_norm(name: str | None = None, axis: int = -1) -> keras.layers.BatchNormalization:
    """BatchNorm with torch's eps and momentum."""
    return keras.layers.BatchNormalization(axis=axis, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def leaky_relu(name: str | None = None) -> keras.layers.LeakyReLU:
    return keras.layers.LeakyReLU(negative_slope=LEAKY_SLOPE, name=name)


class PreactResidualBlock(keras.layers.Layer):
    """``x + Dense(BN(LeakyReLU(x)))`` on ``[B, width]``: ``preact_leaky_MLPBlock`` (He et al., ECCV 2016)."""

    def __init__(self, width: int, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.act = leaky_relu()
        self.bn = batch_norm(name="bn")
        self.dense = dense(width, width, name="dense")

    def build(self, input_shape):
        self.bn.build(input_shape)
        self.dense.build(input_shape)

    def call(self, x, training=False):  # [B, w] -> [B, w]
        return x + self.dense(self.bn(self.act(x), training=training))

    def get_config(self):
        return {**super().get_config(), "width": self.width}


class LeakyResidualBlock(keras.layers.Layer):
    """``x + BN(LeakyReLU(Dense(x)))``: ``leaky_MLPBlock`` (used by the MNIST generator's first layer)."""

    def __init__(self, width: int, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.dense = dense(width, width, name="dense")
        self.act = leaky_relu()
        self.bn = batch_norm(name="bn")

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.bn.build(input_shape)

    def call(self, x, training=False):
        return x + self.bn(self.act(self.dense(x)), training=training)

    def get_config(self):
        return {**super().get_config(), "width": self.width}


def mlp_recognition_net(input_dim: int, width: int, depth: int, latent_dim: int, name: str = "encoder"
                        ) -> keras.Sequential:
    """``MLP_preact_recognition_net``, ``[B, input_dim] -> [B, 2L]``: Dense(D, w) -> (depth-1) x preact block ->
    LeakyReLU -> BN -> Dense(w, 2L). Also the VAEAC prior net (``input_dim = 2D``: x zeroed where missing, and mask)."""
    layers = [keras.Input((input_dim,)), dense(width, input_dim, name="dense_in")]
    layers += [PreactResidualBlock(width, name=f"block_{i}") for i in range(1, depth)]
    layers += [leaky_relu(), batch_norm(name="out_bn"), dense(2 * latent_dim, width, name="dense_out")]
    return keras.Sequential(layers, name=name)


def mlp_generator_net(output_dim: int, width: int, depth: int, latent_dim: int, variant: str = "vae",
                      name: str = "decoder") -> keras.Sequential:
    """``MLP_preact_generator_net``, ``[B, L] -> [B, output_dim]``; VAE and VAEAC differ (spec 4.3, trap 25):
    ``"vae"``: Dense(L, w) -> LeakyReLU -> BN -> (depth-1) x preact block -> Dense(w, out);
    ``"vaeac"``: Dense(L, w) -> (depth-1) x preact block -> LeakyReLU -> BN -> Dense(w, out)."""
    if variant not in ("vae", "vaeac"):
        raise ValueError(f"variant must be 'vae' or 'vaeac', got {variant!r}")
    act_bn = [leaky_relu(), batch_norm(name="in_bn" if variant == "vae" else "out_bn")]
    blocks = [PreactResidualBlock(width, name=f"block_{i}") for i in range(1, depth)]
    body = act_bn + blocks if variant == "vae" else blocks + act_bn
    layers = [keras.Input((latent_dim,)), dense(width, latent_dim, name="dense_in"), *body,
              dense(output_dim, width, name="dense_out")]
    return keras.Sequential(layers, name=name)


def assign_sequential_from_npz(net: keras.Sequential, arrays: dict, prefix: str) -> None:
    """Loads a tabular net from the parity kit's npz ``<prefix>/<layer>/<param>``; KeyError or ValueError if wrong."""
    def bn_weights(p):
        return [arrays[f"{p}/{k}"] for k in ("gamma", "beta", "moving_mean", "moving_variance")]

    def set_weights(layer, values, where):
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(v.shape) for v in values]
        if expected != got:
            raise ValueError(f"{where}: expected shapes {expected}, npz has {got}")
        layer.set_weights(values)

    used = 0
    for layer in net.layers:
        p = f"{prefix}/{layer.name}"
        if isinstance(layer, keras.layers.Dense):
            set_weights(layer, [arrays[f"{p}/kernel"], arrays[f"{p}/bias"]], p)
            used += 2
        elif isinstance(layer, keras.layers.BatchNormalization):
            set_weights(layer, bn_weights(p), p)
            used += 4
        elif isinstance(layer, PreactResidualBlock):
            set_weights(layer.bn, bn_weights(f"{p}/bn"), p)
            set_weights(layer.dense, [arrays[f"{p}/dense/kernel"], arrays[f"{p}/dense/bias"]], p)
            used += 6
    n_float = sum(1 for k, v in arrays.items()
                  if k.startswith(prefix + "/") and tf.as_dtype(v.dtype).is_floating)
    if used != n_float:
        raise ValueError(f"{prefix}: npz holds {n_float} float arrays but the network uses {used}")


class Residual(keras.layers.Layer):
    """``x + f(x)`` for any shape-preserving Keras model ``f`` (the original's ``SkipConnection``)."""

    def __init__(self, inner: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner

    def call(self, x, training=False):
        return x + self.inner(x, training=training)


def conv2d(filters: int, kernel: int, fan_in_channels: int, stride: int = 1, name: str | None = None
           ) -> keras.layers.Conv2D:
    """A 'valid' Conv2D (NHWC) initialized like ``torch.nn.Conv2d``; pad explicitly for torch's ``padding=p``."""
    init = torch_uniform(fan_in_channels * kernel * kernel)
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding="valid", kernel_initializer=init,
                               bias_initializer=init, name=name)


def conv_res_block(outer: int, inner: int, name: str | None = None) -> Residual:
    """``ResBlock(outer, inner)`` (spec 4.1): x + [BN, LReLU, Conv1x1(outer->inner), BN, LReLU, Conv3x3 pad 1,
    BN, LReLU, Conv1x1(inner->outer)](x), on NHWC feature maps."""
    body = keras.Sequential([
        batch_norm(), leaky_relu(), conv2d(inner, 1, outer),
        batch_norm(), leaky_relu(), keras.layers.ZeroPadding2D(1), conv2d(inner, 3, inner),
        batch_norm(), leaky_relu(), conv2d(outer, 1, inner),
    ])
    return Residual(body, name=name)
