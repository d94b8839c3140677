"""The MNIST convolutional ResNet encoder and decoder of the original's MNIST VAE (spec 4.4), NHWC, on flat images.

PyTorch's ``Conv2d(k, s=2, padding=1)`` is a 1-pixel zero pad plus a 'valid' conv;
``ConvTranspose2d(k, s=2, padding=1)`` a 'valid' transposed conv cropped by one pixel per side (trap 4). References:
[1] Antorán et al. Getting a CLUE. ICLR 2021. [2] He et al. Identity Mappings in Deep Residual Networks. ECCV 2016."""

from __future__ import annotations

import keras

from common.layers import (
    LeakyResidualBlock,
    Residual,
    batch_norm,
    conv2d,
    conv_res_block,
    dense,
    leaky_relu,
    torch_uniform,
)

WIDTH_MUL = 3  # inner ResBlock widths 8 * WIDTH_MUL * {1, 2, 4} = 24, 48, 96
IMAGE_SHAPE = (28, 28, 1)


def _down(filters: int, kernel: int, in_channels: int) -> list[keras.layers.Layer]:
    return [keras.layers.ZeroPadding2D(1), conv2d(filters, kernel, in_channels, stride=2)]


def _up(filters: int, kernel: int, in_channels: int) -> list[keras.layers.Layer]:
    # torch ConvTranspose2d fan_in is computed from weight dim 1 = out_channels
    init = torch_uniform(filters * kernel * kernel)
    return [keras.layers.Conv2DTranspose(filters, kernel, strides=2, padding="valid", kernel_initializer=init,
                                         bias_initializer=init),
            keras.layers.Cropping2D(1)]


def mnist_recognition_resnet(latent_dim: int, name: str = "encoder") -> keras.Sequential:
    """``MNIST_recognition_resnet(L)``: flat ``[B, 784]`` -> ``[B, 2L]`` Normal parameters.

    Conv1x1(1->32), RB(32,24)x2, Conv k4s2p1 (->64), RB(64,48)x2, Conv k4s2p1 (->128), RB(128,96)x2, Conv k3s2p1 (7->4),
    LeakyReLU, flatten, BN, Dense(2048, 2L), Skip(LeakyReLU, BN, Dense(2L, 2L))."""
    m = 8 * WIDTH_MUL
    two_l = 2 * latent_dim
    layers = [keras.Input((IMAGE_SHAPE[0] * IMAGE_SHAPE[1],)), keras.layers.Reshape(IMAGE_SHAPE),
              conv2d(32, 1, 1), conv_res_block(32, m), conv_res_block(32, m),
              *_down(64, 4, 32), conv_res_block(64, 2 * m), conv_res_block(64, 2 * m),
              *_down(128, 4, 64), conv_res_block(128, 4 * m), conv_res_block(128, 4 * m),
              *_down(128, 3, 128),  # [B, 4, 4, 128]
              leaky_relu(), keras.layers.Flatten(), batch_norm(), dense(two_l, 2048),
              Residual(keras.Sequential([leaky_relu(), batch_norm(), dense(two_l, two_l)]))]
    return keras.Sequential(layers, name=name)


def mnist_generator_resnet(latent_dim: int, name: str = "decoder") -> keras.Sequential:
    """``MNIST_generator_resnet(L)``: ``[B, L]`` -> flat Bernoulli logits ``[B, 784]``.

    leaky_MLPBlock(L), Dense(L, 2048), LeakyReLU, BN, (4, 4, 128), ConvT k3s2p1 (4->7), RB(128,96)x2, ConvT k4s2p1
    (->64), RB(64,48)x2, ConvT k4s2p1 (->32), RB(32,24)x2, Conv1x1(32->1)."""
    m = 8 * WIDTH_MUL
    layers = [keras.Input((latent_dim,)), LeakyResidualBlock(latent_dim), dense(2048, latent_dim), leaky_relu(),
              batch_norm(), keras.layers.Reshape((4, 4, 128)),
              *_up(128, 3, 128), conv_res_block(128, 4 * m), conv_res_block(128, 4 * m),
              *_up(64, 4, 128), conv_res_block(64, 2 * m), conv_res_block(64, 2 * m),
              *_up(32, 4, 64), conv_res_block(32, m), conv_res_block(32, m),
              conv2d(1, 1, 32), keras.layers.Flatten()]
    return keras.Sequential(layers, name=name)
