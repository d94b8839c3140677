"""PNG grid of a trained image VAE: test images, their reconstructions (z = posterior mean) and prior samples.

Usage::

    python experiments/vae_image_grid.py --vae runs/paper/vae_mnist_t10k_s0 --dataset mnist_t10k \
        --out experiments/figures/vae_mnist_t10k_grid.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import tensorflow as tf

import data
from common.io import atomic_path
from VAE.model import load_vae


def image_grid(vae, ds: data.Dataset, n: int = 12, seed: int = 0):
    """A matplotlib figure with rows: originals, reconstructions, prior samples (pixel probabilities)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w, _ = ds.image_shape
    x = ds.x_test[np.random.RandomState(seed).choice(len(ds.x_test), n, replace=False)]
    recon = vae.reconstruct(x)
    samples = vae.regenerate(tf.random.stateless_normal([n, vae.latent_dim], [seed, 1]), False).numpy()
    n_eval = min(1000, len(ds.x_test))
    elbo = float(np.mean(vae.elbo(tf.constant(ds.x_test[:n_eval])).numpy()))
    fig, axes = plt.subplots(3, n, figsize=(1.1 * n, 3.6))
    for row, (images, label) in enumerate([(x, "test"), (recon, "reconstruction"), (samples, "prior sample")]):
        for j in range(n):
            axes[row, j].imshow(images[j].reshape(h, w), cmap="gray", vmin=0, vmax=1)
            axes[row, j].axis("off")
        axes[row, 0].set_title(label, fontsize=8, loc="left")
    fig.suptitle(f"{ds.name} VAE (L = {vae.latent_dim}): test ELBO {elbo:.1f} nats/image on {n_eval} test images",
                 fontsize=9)
    fig.tight_layout()
    return fig


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vae", required=True, help="VAE.train run folder (or its best/ folder)")
    parser.add_argument("--dataset", default="mnist_t10k")
    parser.add_argument("--out", default="experiments/figures/vae_mnist_t10k_grid.png")
    parser.add_argument("--n", type=int, default=12)
    args = parser.parse_args(argv)
    folder = Path(args.vae)
    vae = load_vae(folder / "best" if (folder / "best").is_dir() else folder)
    fig = image_grid(vae, data.load(args.dataset), args.n)
    with atomic_path(args.out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return Path(args.out)


if __name__ == "__main__":
    main()
