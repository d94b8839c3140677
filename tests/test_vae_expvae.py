"""The one-class conv VAE of Liu et al. (VAE.expvae) and its training through ``VAE.train --model expvae``."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from common.config import parse_config, with_preset
from common.seeding import set_seed
from VAE import train
from VAE.expvae import ExpVAE, load_expvae, save_expvae


@pytest.fixture(scope="module")
def model():
    set_seed(0)
    return ExpVAE()


def _biases_tied_to_kernels(model) -> list[str]:
    """Layers whose bias repeats the first values of its kernel's draw (one unseeded Keras initializer for both)."""
    weights = {w.path: w.numpy() for w in model.weights}
    return [path for path, value in weights.items() if path.endswith("bias") and value.any()
            and np.array_equal(weights[path[:-len("bias")] + "kernel"].ravel()[:value.size], value.ravel())]


def test_kernels_and_biases_are_drawn_independently_as_torch(model):
    from VAE.factorvae import FactorVAE

    assert _biases_tied_to_kernels(model) == []
    assert _biases_tied_to_kernels(FactorVAE()) == []


def test_architecture_matches_the_original(model):
    assert model.count_params() == 13_216_193  # spec section 1
    x = np.random.RandomState(0).uniform(size=(4, 784)).astype(np.float32)
    a = model.enc_a(x).numpy()
    assert a.shape == (4, 7, 7, 128)
    assert (a < 0).any()  # the attention target is taken before the ReLU
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (4, 32)
    assert model.decode(mu).shape == (4, 784)
    recon = model.reconstruct(x).numpy()
    assert recon.min() >= 0 and recon.max() <= 1
    np.testing.assert_allclose(model.reconstruct(x).numpy(), recon)  # eval mode: z = mu, deterministic
    # each example's computation is independent of the batch (no batch norm)
    np.testing.assert_allclose(model.encode(x[1:2])[0].numpy()[0], mu.numpy()[1], rtol=1e-5, atol=1e-6)


def test_loss_is_summed_bce_plus_gaussian_kl(model):
    x = np.random.RandomState(1).uniform(size=(3, 784)).astype(np.float32)
    eps = np.random.RandomState(2).normal(size=(3, 32)).astype(np.float32)
    terms = model.loss_terms(x, eps)
    mu, logvar = (t.numpy().astype(np.float64) for t in model.encode(x))
    z = mu + eps * np.exp(0.5 * logvar)
    p = 1 / (1 + np.exp(-model.decode(z.astype(np.float32)).numpy().astype(np.float64)))
    bce = -(x * np.log(p) + (1 - x) * np.log(1 - p)).sum(1)  # summed over the 784 pixels
    kl = -0.5 * (1 + logvar - mu ** 2 - np.exp(logvar)).sum(1)
    np.testing.assert_allclose(terms["bce"].numpy(), bce, rtol=1e-4)
    np.testing.assert_allclose(terms["kl"].numpy(), kl, rtol=1e-4, atol=1e-5)
    total, elbo = model.training_loss(x, eps)
    assert float(total) == pytest.approx((bce + kl).sum(), rel=1e-4)  # summed over the batch, not averaged
    assert float(elbo) == pytest.approx(-(bce + kl).mean(), rel=1e-4)


def test_export_round_trip_and_refusals(tmp_path):
    set_seed(1)
    small = ExpVAE(latent_dim=4, filters=(2, 3), hidden_dim=5)
    save_expvae(small, tmp_path / "best", {"epoch": 7})
    again = load_expvae(tmp_path / "best")
    x = np.random.RandomState(0).uniform(size=(2, 784)).astype(np.float32)
    np.testing.assert_array_equal(again.encode(x)[0].numpy(), small.encode(x)[0].numpy())
    meta = json.loads((tmp_path / "best" / "model.json").read_text())
    assert (meta["format"], meta["kind"], meta["epoch"]) == ("clue-tf/model/v1", "expvae", 7)
    with pytest.raises(FileNotFoundError, match="save_expvae"):
        load_expvae(tmp_path / "nothing")
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "model.json").write_text(json.dumps({"format": "clue-tf/model/v1", "kind": "vae",
                                                             "config": {"latent_dim": 4}}))
    with pytest.raises(ValueError, match="not an ExpVAE"):
        load_expvae(tmp_path / "vae")


def test_config_resolves_to_the_original_settings():
    cfg = parse_config(train.Config, train.PRESETS, ["--dataset", "mnist_t10k", "--model", "expvae",
                                                     "--inlier-digit", "7"]).resolved()
    assert (cfg.lr, cfg.batch_size, cfg.max_epochs, cfg.latent_dim, cfg.arch) == (1e-3, 128, 100, 32, "expvae")
    assert cfg.inlier_digit == 7 and cfg.early_stop == 100  # patience = max_epochs: never stops early
    assert train.Config(dataset="mnist_t10k").resolved().arch == "mnist_conv"  # model 'vae' unchanged
    for bad in ({"dataset": "digits"}, {"dataset": "mnist_t10k", "arch": "mlp"},
                {"dataset": "mnist_t10k", "inlier_digit": 10}):
        with pytest.raises(ValueError):
            train.Config(model="expvae", **bad).resolved()
    with pytest.raises(ValueError, match="unknown --model"):
        train.Config(model="vqvae").resolved()


def test_one_class_keeps_only_the_inlier_digit(data_dir):
    import data
    ds = train.one_class(data.load("mnist_t10k", data_dir=str(data_dir)), 3)
    assert set(np.unique(ds.y_train)) == {3} and set(np.unique(ds.y_test)) == {3}
    assert 700 < len(ds.x_train) < 900 and 150 < len(ds.x_test) < 250  # ~10 % of 8000 / 2000


def _rows(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_tiny_run_learns_keeps_the_best_checkpoint_and_resumes(tmp_path, data_dir):
    def run(out, epochs):
        cfg = with_preset(train.Config, train.PRESETS, "expvae_tiny", out=str(out), progress=False,
                          max_epochs=epochs, data_dir=str(data_dir))
        return train.main(cfg)

    first = run(tmp_path / "a", 2)
    resumed = run(tmp_path / "a", 3)  # same --out: continues from epoch 2
    rows = _rows(tmp_path / "a")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    losses = [float(r["test/loss"]) for r in rows]
    assert losses[-1] < 0.8 * losses[0]  # from ~544 nats/image at init: the model learns
    assert resumed["best_epoch"] == int(np.argmin(losses))  # model_best.pth: the lowest validation loss
    assert resumed["test/loss"] == pytest.approx(min(losses), rel=1e-5)  # metrics come from the best export
    assert resumed["best/test/elbo"] >= first["best/test/elbo"]
    best = load_expvae(tmp_path / "a" / "best")
    assert json.loads((tmp_path / "a" / "best" / "model.json").read_text())["epoch"] == resumed["best_epoch"]
    assert best.latent_dim == 32
