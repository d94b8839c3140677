"""A VAE with a ResNet-18 encoder [1] for anomaly localization on MVTec AD and UCSD Ped1 (Liu et al. [2]), and its
Grad-CAM attention maps from the latent mean on a chosen encoder layer.

Encoder (NHWC, torchvision's ``resnet18`` layer names, e.g. ``layer2.1.conv1``): a stem (``"resnet"``: 7x7 stride-2
conv, BN, ReLU, 3x3 stride-2 max-pool, total stride 32; ``"light"``, after [3]: 3x3 stride-2 conv, BN, ReLU, total
stride 16), four stages of two BasicBlocks ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` with
``width x (1, 2, 4, 8)`` channels, global average pooling, dense heads ``mu``, ``logvar`` ``[B, L]``. A mirrored decoder
gives logits ``h`` ``[B, S, S, C]``. Loss per image [5]: ``rec + KL(N(mu, diag exp logvar) || N(0, I))``,
``rec = sum_p BCE(sigmoid(h_p), x_p)`` (``"bernoulli"``) or ``1/2 sum_p (x_p - sigmoid(h_p))^2`` (``"gaussian"``);
evaluation uses ``z = mu``.

Attention (Grad-CAM [4]), ``A`` ``[h, w, K]`` the target layer's output, ``G = d(sum_i mu_i) / dA``, ``Up`` bilinear:
``"code"``: ``M = |Up(sum_k alpha_k A_k)|``, ``alpha_k = mean_pq G_kpq``; ``"paper"``:
``M = Up(mean_i ReLU(sum_k alpha^i_k A_k))``, ``alpha^i_k = mean_pq d mu_i / dA_kpq``; ``"channel_abs"`` (the
reproduction's, reference-spec-expvae.md P2.6): ``M = Up(mean_k |alpha_k A_k|)``.

References: [1] He et al. Deep Residual Learning. CVPR 2016. [2] Liu et al. Towards Visually Explaining VAEs. CVPR 2020.
[3] Brongers et al., Reproducing_expVAE (after julianstastny/VAE-ResNet18-PyTorch). [4] Selvaraju et al. Grad-CAM. ICCV
2017. [5] Kingma & Welling. Auto-Encoding Variational Bayes. ICLR 2014."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from common.errors import UserError
from common.export import load_keras_model, save_keras_model
from common.layers import batch_norm
from VAE.attention import minmax

STEMS = {"resnet": 32, "light": 16}  # stem -> total stride of the encoder
LIKELIHOODS = ("bernoulli", "gaussian")
WIDTH = 64  # channels of the first stage; the stages have WIDTH x STAGE_MULTIPLIERS
STAGE_MULTIPLIERS = (1, 2, 4, 8)
BLOCKS = (2, 2, 2, 2)
DEFAULT_TARGET = "layer2.1.conv1"  # the reproduction's target (reference-spec-expvae.md P2.5)
METHODS = ("code", "paper", "channel_abs")
RECTIFIERS = ("abs", "relu")


# --------------------------------------------------------------------------------------------------- building blocks
def _conv(filters: int, kernel: int, stride: int, name: str, bias: bool = False) -> keras.layers.Conv2D:
    """A 'same' conv, Kaiming-normal fan-out initialized (torchvision's ResNet)."""
    init = keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=bias,
                               kernel_initializer=init, name=name)


def _basic_block(x, filters: int, stride: int, name: str):
    """He et al.'s BasicBlock ``name`` on ``x`` ``[B, H, W, Cin]`` -> ``[B, H/stride, W/stride, filters]``."""
    out = _conv(filters, 3, stride, f"{name}.conv1")(x)
    out = keras.layers.ReLU(name=f"{name}.relu1")(batch_norm(f"{name}.bn1")(out))
    out = batch_norm(f"{name}.bn2")(_conv(filters, 3, 1, f"{name}.conv2")(out))
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = batch_norm(f"{name}.downsample.1")(_conv(filters, 1, stride, f"{name}.downsample.0")(x))
    return keras.layers.ReLU(name=name)(keras.layers.Add(name=f"{name}.add")([out, shortcut]))


def _up_block(x, filters: int, name: str):
    """Mirror of a stride-2 BasicBlock: ``[B, H, W, Cin]`` -> ``[B, 2H, 2W, filters]``."""
    out = _conv(x.shape[-1], 3, 1, f"{name}.conv1")(x)
    out = keras.layers.ReLU(name=f"{name}.relu1")(batch_norm(f"{name}.bn1")(out))
    out = keras.layers.UpSampling2D(2, name=f"{name}.up")(out)
    out = batch_norm(f"{name}.bn2")(_conv(filters, 3, 1, f"{name}.conv2")(out))
    shortcut = keras.layers.UpSampling2D(2, name=f"{name}.shortcut_up")(x)
    shortcut = batch_norm(f"{name}.shortcut.1")(_conv(filters, 3, 1, f"{name}.shortcut.0")(shortcut))
    return keras.layers.ReLU(name=name)(keras.layers.Add(name=f"{name}.add")([out, shortcut]))


def stage_widths(width: int = WIDTH) -> tuple[int, ...]:
    """Channels of the four stages: ``(64, 128, 256, 512)`` for ResNet-18's ``width`` 64."""
    return tuple(width * m for m in STAGE_MULTIPLIERS)


def build_encoder(image_shape: Sequence[int], latent_dim: int, stem: str, width: int = WIDTH) -> keras.Model:
    """The ResNet-18 encoder ``x [B, S, S, C] -> (mu, logvar)``, each ``[B, L]`` (module docstring)."""
    widths = stage_widths(width)
    x = keras.Input(tuple(image_shape), name="x")
    if stem == "resnet":
        h = keras.layers.ReLU(name="relu")(batch_norm("bn1")(_conv(widths[0], 7, 2, "conv1")(x)))
        h = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="maxpool")(h)
    else:
        h = keras.layers.ReLU(name="relu")(batch_norm("bn1")(_conv(widths[0], 3, 2, "conv1")(x)))
    for stage, (filters, blocks) in enumerate(zip(widths, BLOCKS), start=1):
        for block in range(blocks):
            stride = 2 if stage > 1 and block == 0 else 1
            h = _basic_block(h, filters, stride, f"layer{stage}.{block}")
    h = keras.layers.GlobalAveragePooling2D(name="avgpool")(h)
    mu = keras.layers.Dense(latent_dim, name="fc_mu")(h)
    logvar = keras.layers.Dense(latent_dim, name="fc_logvar")(h)
    return keras.Model(x, [mu, logvar], name="encoder")


def build_decoder(image_shape: Sequence[int], latent_dim: int, stem: str, width: int = WIDTH) -> keras.Model:
    """The mirrored decoder ``z [B, L] -> h [B, S, S, C]`` (pre-activation; module docstring)."""
    widths = stage_widths(width)
    side, _, channels = image_shape
    grid = side // STEMS[stem]
    z = keras.Input((latent_dim,), name="z")
    h = keras.layers.Dense(grid * grid * widths[-1], name="fc")(z)
    h = keras.layers.ReLU(name="fc_relu")(keras.layers.Reshape((grid, grid, widths[-1]), name="unflatten")(h))
    for stage in (4, 3, 2):
        h = _basic_block(h, widths[stage - 1], 1, f"layer{stage}.1")
        h = _up_block(h, widths[stage - 2], f"layer{stage}.0")
    for block in (1, 0):
        h = _basic_block(h, widths[0], 1, f"layer1.{block}")
    h = keras.layers.UpSampling2D(2, name="unpool" if stem == "resnet" else "up1")(h)
    if stem == "resnet":
        h = keras.layers.ReLU(name="relu")(batch_norm("bn1")(_conv(widths[0], 3, 1, "conv1")(h)))
        h = keras.layers.UpSampling2D(2, name="up1")(h)
    return keras.Model(z, _conv(channels, 3, 1, "out", bias=True)(h), name="decoder")


def check_config(image_shape: Sequence[int], latent_dim: int, stem: str, likelihood: str,
                 width: int = WIDTH) -> tuple[int, int, int]:
    """Validates a configuration (raises ``UserError``); returns ``image_shape`` as ``(S, S, C)``."""
    if stem not in STEMS:
        raise UserError(f"unknown stem {stem!r}; choose one of {', '.join(STEMS)}")
    if likelihood not in LIKELIHOODS:
        raise UserError(f"unknown likelihood {likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")
    shape = tuple(int(d) for d in image_shape)
    if len(shape) != 3 or shape[0] != shape[1] or shape[2] not in (1, 3):
        raise UserError(f"the ResNet-18 VAE takes square grey or RGB images (S, S, 1 or 3), got {shape}")
    if shape[0] % STEMS[stem] or shape[0] < STEMS[stem]:
        raise UserError(f"image side {shape[0]} must be a multiple of {STEMS[stem]} (the total stride of the "
                        f"{stem!r} stem), e.g. 64, 128 or 256")
    if int(latent_dim) < 1 or int(width) < 1:
        raise UserError(f"latent_dim and width must be >= 1, got {latent_dim} and {width}")
    return shape


# ------------------------------------------------------------------------------------------------------------- model
class ResNetVAE(keras.Model):
    """VAE with a ResNet-18 encoder and a mirrored decoder (module docstring).

    ``image_shape`` ``(S, S, C)``: ``S`` a multiple of the stem's stride, ``C`` 1 or 3; ``width``: channels of the first
    stage (ResNet-18: 64)."""

    def __init__(self, image_shape: Sequence[int] = (256, 256, 3), latent_dim: int = 32, stem: str = "resnet",
                 likelihood: str = "bernoulli", width: int = WIDTH, **kwargs):
        super().__init__(**kwargs)
        self.image_shape = check_config(image_shape, latent_dim, stem, likelihood, width)
        self.latent_dim, self.stem, self.likelihood, self.width = int(latent_dim), stem, likelihood, int(width)
        self.encoder = build_encoder(self.image_shape, self.latent_dim, stem, self.width)
        self.decoder = build_decoder(self.image_shape, self.latent_dim, stem, self.width)
        self._probes: dict[str, keras.Model] = {}
        self.built = True

    def call(self, x, training=False):
        return self.reconstruct(x, training=training)

    def _check(self, x) -> tf.Tensor:
        x = tf.convert_to_tensor(x, tf.float32)
        if tuple(x.shape[1:]) != self.image_shape:
            raise UserError(f"this ResNet-18 VAE takes images of shape [B, {', '.join(map(str, self.image_shape))}]"
                            f", got {list(x.shape)}: resize the data to the model's image_size")
        return x

    def encode(self, x, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """``x`` float32 ``[B, S, S, C]`` in [0, 1] -> ``(mu, logvar)``, each ``[B, L]``."""
        return tuple(self.encoder(self._check(x), training=training))

    def decode(self, z, training: bool = False) -> tf.Tensor:
        """``z`` ``[B, L]`` -> pre-activation ``h`` ``[B, S, S, C]`` (Bernoulli logits; mean image ``sigmoid(h)``)."""
        return self.decoder(z, training=training)

    def reconstruct(self, x, training: bool = False) -> tf.Tensor:
        """Eval-mode reconstruction ``sigmoid(decode(mu(x)))`` ``[B, S, S, C]``."""
        return tf.sigmoid(self.decode(self.encode(x, training)[0], training))

    def loss_terms(self, x, eps: tf.Tensor | None = None, training: bool = False) -> dict[str, tf.Tensor]:
        """Per-image ``rec``, ``kl``, ``loss`` ``[B]``; ``z = mu + eps * exp(logvar / 2)`` (``eps=None``:
        ``z = mu``)."""
        x = self._check(x)
        mu, logvar = self.encode(x, training)
        z = mu if eps is None else mu + eps * tf.exp(0.5 * logvar)
        h = self.decode(z, training)
        if self.likelihood == "bernoulli":
            rec = tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=h), [1, 2, 3])
        else:
            rec = 0.5 * tf.reduce_sum(tf.square(x - tf.sigmoid(h)), [1, 2, 3])
        kl = -0.5 * tf.reduce_sum(1.0 + logvar - tf.square(mu) - tf.exp(logvar), -1)
        return {"rec": rec, "kl": kl, "loss": rec + kl}

    def training_loss(self, x, eps: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The batch-mean negative ELBO (BatchNorm in training mode) and the batch-mean ELBO."""
        loss = tf.reduce_mean(self.loss_terms(x, eps, training=True)["loss"])
        return loss, -loss

    def probe(self, layer: str = DEFAULT_TARGET) -> keras.Model:
        """``x -> (A, mu)``: the output of encoder layer ``layer`` (e.g. ``layer2.1.conv1``) and the latent mean."""
        name = f"{layer}.{BLOCKS[int(layer[5:]) - 1] - 1}" if layer in {f"layer{s}" for s in (1, 2, 3, 4)} else layer
        if name not in self._probes:
            try:
                target = self.encoder.get_layer(name).output
            except ValueError as err:
                blocks = [f"layer{s}.{b}" for s in (1, 2, 3, 4) for b in range(2)]
                raise UserError(f"no encoder layer {layer!r}; use conv1, maxpool, one of {', '.join(blocks)} or "
                                f"a conv inside one ({DEFAULT_TARGET})") from err
            self._probes[name] = keras.Model(self.encoder.input, [target, self.encoder.output[0]])
        return self._probes[name]

    def get_config(self) -> dict[str, Any]:
        return {"image_shape": list(self.image_shape), "latent_dim": self.latent_dim, "stem": self.stem,
                "likelihood": self.likelihood, "width": self.width}


# --------------------------------------------------------------------------------------------------------- attention
def target_and_gradient(model: ResNetVAE, x, layer: str = DEFAULT_TARGET) -> tuple[tf.Tensor, tf.Tensor]:
    """``A`` ``[B, h, w, K]`` at ``layer`` and ``G = d(sum_b sum_i mu_i(x_b)) / dA`` (eval mode)."""
    probe = model.probe(layer)
    x = model._check(x)
    with tf.GradientTape() as tape:
        a, mu = probe(x, training=False)
        tape.watch(a)
        score = tf.reduce_sum(mu)
    grad = tape.gradient(score, a)
    if grad is None:  # a layer the latent mean does not depend on
        raise UserError(f"the latent mean does not depend on encoder layer {layer!r}: pick an earlier layer")
    return a, grad


def dimension_weights(model: ResNetVAE, x, layer: str = DEFAULT_TARGET) -> tuple[tf.Tensor, tf.Tensor]:
    """``A`` ``[B, h, w, K]`` and ``alpha^i_k = mean_pq d mu_i / dA_kpq`` ``[B, L, K]``."""
    probe = model.probe(layer)
    x = model._check(x)
    with tf.GradientTape(persistent=True) as tape:
        a, mu = probe(x, training=False)
        tape.watch(a)
        scores = [tf.reduce_sum(mu[:, i]) for i in range(model.latent_dim)]
    alpha = tf.stack([tf.reduce_mean(tape.gradient(s, a), axis=[1, 2]) for s in scores], axis=1)
    del tape
    return a, alpha


def _upsample(maps: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Bilinear ``[B, h, w]`` -> ``[B, H, W]``, half-pixel centers (PyTorch's ``align_corners=False``)."""
    return tf.image.resize(maps[..., None], size, method="bilinear")[..., 0]


def attention_map(model: ResNetVAE, x, layer: str = DEFAULT_TARGET, method: str = "code", normalize: bool = False,
                  rectify: str = "abs", upsample_first: bool = True) -> tf.Tensor:
    """Raw attention maps ``[B, S, S]`` of ``x`` ``[B, S, S, C]``; ``rectify``, ``upsample_first``: ``"code"`` only."""
    if method not in METHODS:
        raise UserError(f"unknown attention method {method!r}; choose one of {', '.join(METHODS)}")
    if rectify not in RECTIFIERS:
        raise UserError(f"unknown rectifier {rectify!r}; choose one of {', '.join(RECTIFIERS)}")
    size = tuple(model.image_shape[:2])
    rect = tf.abs if rectify == "abs" else tf.nn.relu
    if method == "paper":
        a, alpha = dimension_weights(model, x, layer)
        per_dim = tf.nn.relu(tf.einsum("bhwk,bik->bihw", a, alpha))  # [B, L, h, w]
        maps = _upsample(tf.reduce_mean(per_dim, axis=1), size)
    else:
        a, grad = target_and_gradient(model, x, layer)
        alpha = tf.reduce_mean(grad, axis=[1, 2])  # [B, K]
        if method == "channel_abs":
            maps = _upsample(tf.reduce_mean(tf.abs(a * alpha[:, None, None, :]), axis=-1), size)
        else:
            coarse = tf.einsum("bhwk,bk->bhw", a, alpha)  # signed
            maps = rect(_upsample(coarse, size)) if upsample_first else _upsample(rect(coarse), size)
    return minmax(maps) if normalize else maps


def attention_maps(model: ResNetVAE, x: np.ndarray, batch_size: int = 16, **kwargs) -> np.ndarray:
    """:func:`attention_map` over ``x`` ``[N, S, S, C]`` in batches -> ``[N, S, S]``."""
    return np.concatenate([attention_map(model, x[i:i + batch_size], **kwargs).numpy()
                           for i in range(0, len(x), batch_size)]) if len(x) else np.zeros((0, *x.shape[1:3]))


# ------------------------------------------------------------------------------------------------------------ export
def save_resnet_vae(model: ResNetVAE, export_dir: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
    """Atomically writes ``export_dir/{model.weights.h5, model.json}`` (kind ``"resnet_vae"``)."""
    return save_keras_model(model, export_dir, "resnet_vae", extra)


def load_resnet_vae(export_dir: str | os.PathLike) -> ResNetVAE:
    """Rebuilds a :class:`ResNetVAE` written by :func:`save_resnet_vae`."""
    model, _ = load_keras_model(export_dir, ("resnet_vae",), lambda info: ResNetVAE(**info.config), "ResNet-18 VAE",
                                "VAE.resnet_vae.save_resnet_vae (`python -m VAE.localise`)",
                                "`python -m VAE.localise --dataset {dataset} --root PATH --out RUN_DIR`")
    return model


