"""``python -m VAE.localise`` on tiny generated MVTec AD and UCSD Ped1 copies (64x64, 2 training steps per epoch):
metrics written, AUROCs in [0, 1], a rerun resumes; and the ResNet-18 VAE's attention maps on the trained model."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import roc_auc_score
from test_anomaly_images import make_mvtec, make_ped1

from common.cli import run_script
from common.config import with_preset
from common.errors import UserError
from VAE import localise
from VAE import resnet_vae as rv


def _config(root, out, **overrides) -> localise.Config:
    return with_preset(localise.Config, localise.PRESETS, "tiny", root=str(root), out=str(out), progress=False,
                       **overrides)


def _rows(run_dir) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _check_metrics(metrics: dict, run_dir, n_test: int, latest: bool = True) -> None:
    """``latest``: ``metrics`` are those of the last run into ``run_dir``, so its files hold them."""
    if latest:
        assert json.loads((run_dir / "metrics.json").read_text()) == pytest.approx(metrics)
    aurocs = {k: v for k, v in metrics.items() if "auroc" in k}
    assert {f"test/pixel_auroc_{m}{s}" for m in localise.MAPS for s in ("", "_minmax")} <= set(aurocs)
    assert {"test/image_auroc_loss", "test/image_auroc_attention_max"} <= set(aurocs)
    assert all(0.0 <= v <= 1.0 for v in aurocs.values()), aurocs
    assert np.isfinite(metrics["test/elbo"]) and metrics["test/n_test"] == n_test
    with open(run_dir / "scores.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == n_test


@pytest.fixture(scope="module")
def mvtec_run(tmp_path_factory):
    """One tiny run (10 images: 8 train in 2 steps of 4, 2 validation), then the same command with 2 epochs."""
    base = tmp_path_factory.mktemp("localise")
    root, out = make_mvtec(base / "mvtec", n_train=10), base / "run"
    first = localise.main(_config(root, out, epochs=1))
    first_rows = _rows(out)
    resumed = localise.main(_config(root, out, epochs=2))
    return out, first, first_rows, resumed


def test_mvtec_run_writes_metrics_and_model(mvtec_run):
    out, first, _, _ = mvtec_run
    _check_metrics(first, out, n_test=5, latest=False)  # the fixture's rerun has replaced metrics.json
    assert first["epochs_run"] == 1 and first["best_epoch"] == 0
    assert first["test/n_test_anomalous"] == 3 and np.isfinite(first["best/val/elbo"])
    assert json.loads((out / "config.json").read_text())["image_size"] == 64
    assert json.loads((out / "best" / "model.json").read_text())["kind"] == "resnet_vae"


def test_rerun_resumes_from_the_checkpoint(mvtec_run):
    out, first, first_rows, resumed = mvtec_run
    assert resumed["epochs_run"] == 2
    rows = _rows(out)
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert rows[0] == first_rows[0]  # epoch 0 is not redone
    assert rows[1]["train/elbo"] != rows[0]["train/elbo"]
    _check_metrics(resumed, out, n_test=5)


def test_attention_maps_of_the_trained_model(mvtec_run):
    model = rv.load_resnet_vae(mvtec_run[0] / "best")
    x = np.random.RandomState(1).uniform(size=(3, 64, 64, 3)).astype(np.float32)
    maps = rv.attention_maps(model, x, batch_size=3)
    assert maps.shape == (3, 64, 64) and (maps >= 0).all() and maps.max() > 0
    np.testing.assert_allclose(rv.attention_maps(model, x, batch_size=1), maps, rtol=1e-4, atol=1e-7)  # per image
    a, grad = rv.target_and_gradient(model, x)
    assert a.shape == (3, 8, 8, 32)  # layer2.1.conv1 at 64 px: stride 8, 2 x width 16 channels
    _, alpha = rv.dimension_weights(model, x)  # per-dimension weights sum to the weights of sum_i mu_i
    np.testing.assert_allclose(tf.reduce_sum(alpha, 1), tf.reduce_mean(grad, [1, 2]), rtol=1e-3, atol=1e-7)
    for method in rv.METHODS:
        normalised = rv.attention_map(model, x, method=method, normalize=True).numpy()
        assert normalised.min() == pytest.approx(0) and normalised.max() == pytest.approx(1, abs=1e-5)
    with pytest.raises(UserError, match="no encoder layer 'layer9'"):
        rv.attention_map(model, x, layer="layer9")


def test_the_encoder_is_resnet18():
    """64 px RGB, width 64: torchvision's resnet18 without its fc layer has 11,176,512 parameters."""
    encoder = rv.build_encoder((64, 64, 3), 8, "resnet")
    heads = sum(int(np.prod(w.shape)) for name in ("fc_mu", "fc_logvar") for w in encoder.get_layer(name).weights)
    trainable = sum(int(np.prod(w.shape)) for w in encoder.trainable_weights)
    assert trainable - heads == 11_176_512
    assert encoder.get_layer("layer4.1").output.shape[1:] == (2, 2, 512)  # total stride 32


def test_ped1_run_scores_masked_clips_only(tmp_path):
    root = make_ped1(tmp_path / "ped1", n_train_clips=2, frames=5, masked=(2,), unmasked=(1, 3))
    metrics = localise.main(_config(root, tmp_path / "run", dataset="ucsd_ped1"))
    _check_metrics(metrics, tmp_path / "run", n_test=5)
    assert metrics["test/n_test_anomalous"] == 4 and metrics["test/n_assumed_normal_clips"] == 0


def test_pooled_pixel_auroc_raw_minmax_and_sampled():
    rng = np.random.RandomState(0)
    masks = rng.uniform(size=(6, 16, 16)) < 0.1
    maps = rng.uniform(size=masks.shape) + masks * 0.5 + np.arange(6)[:, None, None]  # image offsets: min-max helps
    raw = localise.pooled_pixel_auroc(maps, masks)
    assert raw == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()))
    low, high = maps.min((1, 2), keepdims=True), maps.max((1, 2), keepdims=True)
    expected = roc_auc_score(masks.ravel(), ((maps - low) / (high - low)).ravel())
    assert localise.pooled_pixel_auroc(maps, masks, minmax=True) == pytest.approx(expected)
    assert localise.pixel_sample(masks.shape, 2000, 0) is None
    sample = localise.pixel_sample(masks.shape, 1000, 0)
    assert sample.shape == (1000,) and localise.pooled_pixel_auroc(maps, masks, sample, True) == pytest.approx(
        expected, abs=0.05)
    assert localise.pooled_pixel_auroc(maps, np.zeros_like(masks)) is None  # one class: undefined


def test_bad_root_or_layer_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(UserError, match="does not exist.*train/good"):
        localise.main(_config(tmp_path / "nowhere", tmp_path / "out"))
    with pytest.raises(UserError, match="pass --root"):
        localise.main(localise.Config(out=str(tmp_path / "out")))
    make_mvtec(tmp_path / "mvtec", n_train=2, defects={"broken": 1})
    with pytest.raises(UserError, match="no encoder layer 'layer2.9'"):
        localise.main(_config(tmp_path / "mvtec", tmp_path / "out", target_layer="layer2.9"))
    assert not (tmp_path / "out").exists()


def test_help_lists_the_flags_and_presets(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_script(localise.main, localise.Config, localise.PRESETS, prog="python -m VAE.localise",
                   preset_help=localise.PRESET_HELP, argv=["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--dataset", "--root", "--category", "--target-layer", "--unmasked-as-normal", "tiny", "paper"):
        assert flag in text
