"""BNN architectures and likelihoods, written once for one weight set or for S stacked weight samples.

Networks (spec 2.1) are functions of a parameter dict named as the parity kit (``dense_0/kernel`` ``[in, out]``, or
``[S, in, out]`` stacked): ``mlp`` (Linear, ReLU, (depth - 1) x [Linear, ReLU], Linear) and ``cnn``, the original's
``MNIST_small_cnn`` fixed (Conv(1->128, k5, s2, p2), ReLU, Conv(128->64, k5, s2, p2), ReLU, flatten in HWC order,
Linear(3136, 600), ReLU, Linear). PyTorch-default initialization (spec trap 3). Likelihoods (spec 2.3): ``categorical``
and ``gaussian`` (``sigma = softplus(pre_sigma)``, floored at 1e-3 in the loss only).

References: [1] Antorán et al. Getting a CLUE. ICLR 2021, appendix B."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import tensorflow as tf

from common import probability

KINDS = ("mlp", "cnn")


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What it takes to rebuild a BNN network (``output_dim``: classes or 2 * target_dim; ``image_shape`` for the
    CNN)."""

    kind: str = "mlp"
    input_dim: int = 12
    output_dim: int = 2
    width: int = 200
    depth: int = 2
    image_shape: tuple[int, int, int] | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown architecture kind {self.kind!r}; choose one of {KINDS}")
        if self.kind == "cnn" and (self.image_shape is None or math.prod(self.image_shape) != self.input_dim):
            raise ValueError(f"the cnn needs image_shape with H*W*C == input_dim, got {self.image_shape}")
        if self.image_shape is not None:
            object.__setattr__(self, "image_shape", tuple(int(v) for v in self.image_shape))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every parameter, in forward order."""
        if self.kind == "mlp":
            dims = [self.input_dim] + [self.width] * self.depth + [self.output_dim]
        else:
            h, w, c = self.image_shape
            flat = math.ceil(h / 4) * math.ceil(w / 4) * 64  # two stride-2, pad-2, k5 convolutions
            dims = [flat, 600, self.output_dim]
        shapes = {}
        if self.kind == "cnn":
            for i, (cin, cout) in enumerate([(self.image_shape[2], 128), (128, 64)]):
                shapes[f"conv_{i}/kernel"] = (5, 5, cin, cout)
                shapes[f"conv_{i}/bias"] = (cout,)
        for i, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
            shapes[f"dense_{i}/kernel"] = (fan_in, fan_out)
            shapes[f"dense_{i}/bias"] = (fan_out,)
        return shapes


def init_params(arch: Architecture, seed: int) -> dict[str, np.ndarray]:
    """PyTorch-default initial weights U(+-1/sqrt(fan_in)), name -> float32 array; stateless in ``seed``."""
    params = {}
    for i, (name, shape) in enumerate(arch.param_shapes().items()):
        layer = name.split("/")[0]
        kernel_shape = arch.param_shapes()[layer + "/kernel"]
        bound = 1.0 / math.sqrt(math.prod(kernel_shape[:-1]))  # fan_in = all kernel dims but the output one
        values = tf.random.stateless_uniform(shape, seed=[seed, i], minval=-bound, maxval=bound)
        params[name] = values.numpy()
    return params


def _dense(h: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
    """``h @ kernel + bias`` for h ``[(S,) B, I]``, kernel ``[(S,) I, O]``, bias ``[(S,) O]``."""
    if kernel.shape.rank == 2:
        return tf.matmul(h, kernel) + bias
    if h.shape.rank == 2:
        out = tf.einsum("bi,sio->sbo", h, kernel)  # shared input, S weight samples -> [S, B, O]
    else:
        out = tf.matmul(h, kernel)  # batched over samples: [S, B, I] x [S, I, O] -> [S, B, O]
    return out + bias[:, None, :]


def _conv(h: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
    """Conv(k5, stride 2, padding 2) of h ``[(S,) B, H, W, C]`` with kernel ``[(S,) 5, 5, C, O]``."""
    pad = [[0, 0], [2, 2], [2, 2], [0, 0]]
    if kernel.shape.rank == 4:
        return tf.nn.conv2d(h, kernel, strides=2, padding=pad) + bias
    n_samples, kh, kw, cin, cout = kernel.shape
    if h.shape.rank == 4:  # shared input: one convolution with the S kernels side by side on the channel axis
        k = tf.reshape(tf.transpose(kernel, [1, 2, 3, 0, 4]), [kh, kw, cin, n_samples * cout])
        out = tf.nn.conv2d(h, k, strides=2, padding=pad)  # [B, H', W', S * O]
        b, ho, wo = tf.shape(out)[0], tf.shape(out)[1], tf.shape(out)[2]
        out = tf.transpose(tf.reshape(out, [b, ho, wo, n_samples, cout]), [3, 0, 1, 2, 4])
        return out + bias[:, None, None, None, :]
    # Per-sample inputs: im2col, then one batched matmul over samples.
    s, b, hh, ww, c = (tf.shape(h)[i] for i in range(5))
    x = tf.pad(tf.reshape(h, [s * b, hh, ww, c]), pad)
    patches = tf.image.extract_patches(x, [1, kh, kw, 1], [1, 2, 2, 1], [1, 1, 1, 1], "VALID")  # [S*B, H', W', k*k*C]
    ho, wo = tf.shape(patches)[1], tf.shape(patches)[2]
    patches = tf.reshape(patches, [s, b * ho * wo, kh * kw * cin])
    out = tf.matmul(patches, tf.reshape(kernel, [n_samples, kh * kw * cin, cout]))  # [S, B*H'*W', O]
    return tf.reshape(out, [s, b, ho, wo, cout]) + bias[:, None, None, None, :]


def forward(arch: Architecture, params: dict[str, tf.Tensor], x: tf.Tensor) -> tf.Tensor:
    """Raw outputs ``[(S,) B, output_dim]`` of normalized ``x`` ``[(S,) B, input_dim]``; ``params`` all stacked (leading
    S) or none."""
    params = {k: tf.convert_to_tensor(v, tf.float32) for k, v in params.items()}  # also reads variables once
    h = tf.convert_to_tensor(x, tf.float32)
    if arch.kind == "cnn":
        h = tf.reshape(h, tf.concat([tf.shape(h)[:-1], arch.image_shape], 0))  # [(S,) B, H, W, C]
        for i in range(2):
            h = tf.nn.relu(_conv(h, params[f"conv_{i}/kernel"], params[f"conv_{i}/bias"]))
        stacked = h.shape.rank == 5
        h = tf.reshape(h, [tf.shape(h)[0], tf.shape(h)[1], -1] if stacked else [tf.shape(h)[0], -1])
    n_dense = sum(1 for name in params if name.startswith("dense_") and name.endswith("/kernel"))
    for i in range(n_dense):
        h = _dense(h, params[f"dense_{i}/kernel"], params[f"dense_{i}/bias"])
        if i < n_dense - 1:
            h = tf.nn.relu(h)
    return h


def forward_unrolled(arch: Architecture, params: dict[str, tf.Tensor], x: tf.Tensor,
                     layers: list[list[tf.Tensor]] | None = None) -> tf.Tensor:
    """``forward`` of a stacked MLP on a shared ``x`` as S fused graph branches -> ``[S, B, output_dim]``; ``layers``:
    run transposed."""
    x = tf.convert_to_tensor(x, tf.float32)
    if layers is not None:
        return _transposed_branches(arch, layers, x)
    kernels, biases = _stacked_dense(arch, params)
    outs = []
    for s in range(kernels[0].shape[0]):
        h = x
        for i, (kernel, bias) in enumerate(zip(kernels, biases)):
            h = tf.nn.bias_add(tf.matmul(h, kernel[s]), bias[s])  # the MatMul + BiasAdd (+ Relu) fusion pattern
            if i < arch.depth:
                h = tf.nn.relu(h)
        outs.append(h)
    return tf.stack(outs)


def _transposed_branches(arch: Architecture, layers: list[list[tf.Tensor]], x: tf.Tensor) -> tf.Tensor:
    n_rows = tf.shape(x)[0]
    h0 = tf.concat([tf.transpose(x), tf.ones([1, n_rows])], 0)  # [input_dim + 1, B]
    zeros = tf.zeros([n_rows])
    outs = []
    for sample in layers:
        h = h0
        for i, rows in enumerate(sample):
            h = tf.matmul(rows, h)
            if i < arch.depth:
                h = tf.nn.relu(tf.nn.bias_add(h, zeros))  # the MatMul + BiasAdd + Relu fusion pattern
        outs.append(h)
    return tf.transpose(tf.stack(outs), [0, 2, 1])


def _stacked_dense(arch: Architecture, params: dict[str, tf.Tensor]) -> tuple[list[tf.Tensor], list[tf.Tensor]]:
    if arch.kind != "mlp":
        raise ValueError(f"forward_unrolled handles MLPs only, got a {arch.kind!r} architecture")
    kernels = [tf.convert_to_tensor(params[f"dense_{i}/kernel"], tf.float32) for i in range(arch.depth + 1)]
    biases = [tf.convert_to_tensor(params[f"dense_{i}/bias"], tf.float32) for i in range(arch.depth + 1)]
    if kernels[0].shape.rank != 3:
        raise ValueError("forward_unrolled needs stacked parameters with a leading sample axis")
    return kernels, biases


def unrolled_layers(arch: Architecture, params: dict[str, tf.Tensor]) -> list[list[tf.Tensor]]:
    """Per sample and layer, the transposed ``[out (+ 1), in + 1]`` matrix of ``forward_unrolled`` (bias column, ones
    row)."""
    kernels, biases = _stacked_dense(arch, params)
    layers = []
    for kernel, bias in zip(kernels, biases):
        n_in = kernel.shape[1]
        rows = tf.concat([tf.transpose(kernel, [0, 2, 1]), bias[:, :, None]], 2)  # [S, out, in + 1]
        if len(layers) < arch.depth:
            ones_row = tf.one_hot(tf.fill([kernel.shape[0], 1], n_in), n_in + 1)  # [S, 1, in + 1]
            rows = tf.concat([rows, ones_row], 1)
        layers.append(tf.unstack(rows))
    return [list(sample) for sample in zip(*layers)]


class Categorical:
    """Categorical likelihood over ``n_outputs`` classes; the network outputs logits."""

    name = "categorical"

    @staticmethod
    def n_outputs(target_dim: int) -> int:
        return target_dim

    @staticmethod
    def nll(out: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """Per-row negative log-likelihood: logits ``[..., B, C]``, classes ``[B]`` -> ``[..., B]``."""
        labels = tf.broadcast_to(tf.cast(tf.reshape(y, [-1]), tf.int32), tf.shape(out)[:-1])
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=out)

    @staticmethod
    def error(out: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """Per-row misclassification (0. or 1.) `[B]` of logits `[B, C]`."""
        return tf.cast(tf.argmax(out, -1, output_type=tf.int32) != tf.cast(tf.reshape(y, [-1]), tf.int32), tf.float32)

    @staticmethod
    def predict(out: tf.Tensor) -> tf.Tensor:
        """Class probabilities `[..., B, C]`."""
        return tf.nn.softmax(out, axis=-1)


class Gaussian:
    """Diagonal Gaussian likelihood on ``[mu, pre_sigma]``; sigma floored at ``min_sigma`` in the loss only."""

    name = "gaussian"

    def __init__(self, min_sigma: float = 1e-3):
        self.min_sigma = min_sigma

    @staticmethod
    def n_outputs(target_dim: int) -> int:
        return 2 * target_dim

    @staticmethod
    def params(out: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(mu, sigma), each `[..., B, D]`, from out `[..., B, 2D]`."""
        mu, pre_sigma = tf.split(out, 2, axis=-1)
        return mu, tf.nn.softplus(pre_sigma)

    def nll(self, out: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """Per-row -sum_d log N(y_d; mu_d, sigma_d^2) with sigma >= min_sigma; y `[B, D]` -> `[..., B]`."""
        mu, sigma = self.params(out)
        y = tf.reshape(tf.cast(y, tf.float32), tf.shape(mu)[-2:])
        return -tf.reduce_sum(probability.gaussian_log_prob(y, mu, tf.maximum(sigma, self.min_sigma)), axis=-1)

    def error(self, out: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """Per-row squared error of the mean, summed over D, `[B]`."""
        mu, _ = self.params(out)
        return tf.reduce_sum(tf.square(mu - tf.reshape(tf.cast(y, tf.float32), tf.shape(mu))), axis=-1)

    def predict(self, out: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(mu, sigma), each `[..., B]` for a single target (D = 1), else `[..., B, D]`; sigma is not floored."""
        mu, sigma = self.params(out)
        if mu.shape[-1] == 1:
            return mu[..., 0], sigma[..., 0]
        return mu, sigma


LIKELIHOODS = {"categorical": Categorical(), "gaussian": Gaussian()}


def get_likelihood(name: str):
    """The likelihood object for ``"categorical"`` or ``"gaussian"``."""
    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}; choose one of {sorted(LIKELIHOODS)}")
    return LIKELIHOODS[name]

