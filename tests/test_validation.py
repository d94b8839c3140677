"""Bad inputs and damaged model files are refused at the public boundary with a UserError that says what to do.

Inputs: NaN or inf rows, the wrong width, empty batches and 1-D rows for ``CLUE.explain``, ``Posterior.forward`` /
``predict_samples`` / ``uncertainty``, ``VAE.encode`` and the baselines, with the committed LSAT models. Files:
truncated or corrupt copies of the committed ``samples.npz`` and ``model.weights.h5`` (in ``tmp_path``; the committed
files are never touched), and the advice for a corrupted committed weight file (restore it from git: committed
models are not hosted, so ``python -m weights.download NAME --force`` cannot replace them).
"""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import tensorflow as tf

import weights
from BNN.posterior import Posterior
from CLUE import CLUE, CLUEConfig, CLUEWeights
from CLUE.baselines import UFIDOConfig, global_sensitivity, localized_sensitivity, u_fido
from common.errors import UserError
from common.validation import check_inputs, check_tensor_inputs
from tests.toy_models import IdentityGenerator, MeanInfill, ToyGaussianBNN
from VAE.expvae import load_expvae
from VAE.model import load_parity_npz, load_vae
from VAEAC.export import load_model, save_model
from VAEAC.model import VAEAC
from weights import WeightsError, download

X = np.array([[0.1, -0.3, *np.eye(8)[2], 1.0, 0.0],
              [0.5, 0.2, *np.eye(8)[0], 0.0, 1.0],
              [-1.0, 0.7, *np.eye(8)[5], 1.0, 0.0],
              [0.0, 0.0, *np.eye(8)[7], 0.0, 1.0]], np.float32)  # four rows in LSAT's model-input layout (12)


@pytest.fixture(scope="module")
def models():
    if not (weights.available("bnn_lsat") and weights.available("vae_lsat")):
        pytest.skip("committed LSAT weights not present or not verified")
    return weights.load_posterior("bnn_lsat"), weights.load_vae("vae_lsat")


def _nan(x):
    x = x.copy()
    x[1, 0] = np.nan
    return x


def _inf(x):
    x = x.copy()
    x[3, 4] = -np.inf
    return x


BAD = {  # name -> (make the bad batch, what the message must say)
    "nan": (_nan, ["NaN or inf", "1 of 4 rows", "row indices 1)"]),
    "inf": (_inf, ["NaN or inf", "1 of 4 rows", "row indices 3)"]),
    "width": (lambda x: x[:, :11], ["11 columns", "trained on 12 (lsat)", "data.load('lsat').x_test"]),
    "empty": (lambda x: x[:0], ["empty", "at least one row"]),
    "one_row": (lambda x: x[0], ["[n, D]", "x[None]"]),
}

ENTRIES = {  # name -> call(bnn, vae, x)
    "clue_explain": lambda bnn, vae, x: CLUE(bnn, vae, CLUEConfig(CLUEWeights.paper(2.0, 12), max_steps=2)).explain(x),
    "clue_explain_many": lambda bnn, vae, x: CLUE(bnn, vae).explain_many(x, n_explanations=2),
    "clue_uncertainty": lambda bnn, vae, x: CLUE(bnn, vae).uncertainty(x),
    "clue_encode": lambda bnn, vae, x: CLUE(bnn, vae).encode(x),
    "bnn_forward": lambda bnn, vae, x: bnn.forward(x),
    "bnn_predict_samples": lambda bnn, vae, x: bnn.predict_samples(x),
    "bnn_predict_samples_tensor": lambda bnn, vae, x: bnn.predict_samples(tf.constant(x)),
    "bnn_uncertainty": lambda bnn, vae, x: bnn.uncertainty(x),
    "vae_encode": lambda bnn, vae, x: vae.encode(x),
    "vae_encode_tensor": lambda bnn, vae, x: vae.encode(tf.constant(x)),
    "global_sensitivity": lambda bnn, vae, x: global_sensitivity(bnn, x),
    "localized_sensitivity": lambda bnn, vae, x: localized_sensitivity(bnn, x, step=-0.1),
    "u_fido": lambda bnn, vae, x: u_fido(bnn, MeanInfill(np.zeros(12)), x, UFIDOConfig(n_iterations=1)),
}


@pytest.mark.parametrize("entry", list(ENTRIES))
@pytest.mark.parametrize("bad", list(BAD))
def test_bad_inputs_are_refused_saying_what_to_do(models, entry, bad):
    bnn, vae = models
    make, expected = BAD[bad]
    with pytest.raises(UserError) as err:
        ENTRIES[entry](bnn, vae, make(X))
    message = str(err.value)
    name = "x0" if entry.startswith("clue_explain") else "x"
    for part in expected:
        assert part.replace("x[None]", f"{name}[None]") in message, message
    assert "\x1b[" not in message  # no ANSI codes from a Keras traceback


def test_good_inputs_still_work_eager_in_graphs_and_with_gradients(models):
    bnn, vae = models
    result = CLUE(bnn, vae, CLUEConfig(CLUEWeights.paper(2.0, 12), max_steps=2)).explain(X.astype(np.float64))
    assert result.x.shape == (4, 12) and np.isfinite(result.uncertainty_after).all()
    x = tf.constant(X)
    with tf.GradientTape() as tape:  # the check keeps the caller's tensor, so gradients still reach it
        tape.watch(x)
        total = tf.reduce_sum(bnn.uncertainty(x)[0])
    assert np.isfinite(tape.gradient(total, x).numpy()).all()
    # Inside a graph only the static shape is checked, so the library's own empty shards keep working.
    traced = tf.function(lambda x: bnn.predict_samples(x)[0], input_signature=[tf.TensorSpec([None, 12])])
    assert traced(tf.zeros([0, 12])).shape == (bnn.n_samples, 0)
    np.testing.assert_array_equal(traced(x).numpy(), bnn.predict_samples(X)[0].numpy())
    encode = tf.function(lambda x: vae.encode(x)[0], input_signature=[tf.TensorSpec([None, 12])])
    np.testing.assert_allclose(encode(x).numpy(), vae.encode(X)[0].numpy(), rtol=1e-6, atol=1e-6)


def test_nan_message_names_the_first_rows_only():
    x = np.zeros((40, 3), np.float32)
    x[[2, 5, 7, 11, 13, 17, 19], 1] = np.nan
    with pytest.raises(UserError, match=r"7 of 40 rows \(row indices 2, 5, 7, 11, 13, \.\.\.\)"):
        check_inputs(x, 3, what="this model")
    with pytest.raises(UserError, match="takes 4"):  # no dataset known: the width alone
        check_inputs(x[:1], 4)
    with pytest.raises(UserError, match="numeric"):
        check_inputs([["a", "b"]], 2)
    with pytest.raises(UserError, match=r"reshape\(len\(x\), -1\)"):  # images must be flat
        check_tensor_inputs(np.zeros((2, 28, 28, 1)), 784, image_shape=(28, 28, 1))


def test_models_without_a_known_width_still_get_the_value_checks():
    bnn, gen = ToyGaussianBNN(3), IdentityGenerator()
    x = np.zeros((3, 3), np.float32)
    x[2, 2] = np.nan
    with pytest.raises(UserError, match=r"row indices 2\)"):
        CLUE(bnn, gen).explain(x)
    with pytest.raises(UserError, match=r"x0 must be \[n, D\] flat inputs; got shape \(3,\)"):
        CLUE(bnn, gen).explain(x[0])


# ------------------------------------------------------------------------------------------------ damaged files
def _copy(src, tmp_path):
    if not src.is_dir():
        pytest.skip(f"{src} not present")
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_posterior_samples_name_the_file(tmp_path):
    folder = _copy(weights.ROOT / "bnn" / "lsat", tmp_path)
    _truncate(folder / "samples.npz")
    with pytest.raises(UserError) as err:
        Posterior.load(folder)
    assert str(folder / "samples.npz") in str(err.value) and "truncated or damaged" in str(err.value)
    assert "python -m BNN.train --dataset lsat" in str(err.value)
    with pytest.raises(UserError, match=str(folder / "samples.npz")):
        Posterior.from_npz(folder / "samples.npz", "gaussian")


def test_corrupt_member_of_the_samples_is_refused_too(tmp_path):
    folder = _copy(weights.ROOT / "bnn" / "lsat", tmp_path)
    data = bytearray((folder / "samples.npz").read_bytes())
    data[200_000:201_000] = bytes(1000)  # inside dense_0/kernel: a bad CRC, not a bad zip directory
    (folder / "samples.npz").write_bytes(bytes(data))
    with pytest.raises(UserError, match=str(folder / "samples.npz")):
        Posterior.load(folder)
    (folder / "model.json").write_text("{not json")
    with pytest.raises(UserError, match=str(folder / "model.json")):
        Posterior.load(folder)


def test_truncated_vae_weights_name_the_file(tmp_path):
    folder = _copy(weights.ROOT / "vae" / "lsat", tmp_path)
    _truncate(folder / "model.weights.h5")
    with pytest.raises(UserError) as err:
        load_vae(folder)
    assert str(folder / "model.weights.h5") in str(err.value) and "python -m VAE.train" in str(err.value)
    (folder / "model.weights.h5").unlink()
    with pytest.raises(FileNotFoundError, match="model.weights.h5"):
        load_vae(folder)


def test_damaged_vaeac_expvae_and_parity_files_name_the_file(tmp_path):
    save_model(VAEAC([1, 1, 2], 2, width=8, depth=1), tmp_path / "vaeac")
    _truncate(tmp_path / "vaeac" / "model.weights.h5")
    with pytest.raises(UserError, match=str(tmp_path / "vaeac" / "model.weights.h5")):
        load_model(tmp_path / "vaeac")
    (tmp_path / "expvae").mkdir()
    (tmp_path / "expvae" / "model.json").write_text('{"format": "clue-tf/model/v1", "kind": "expv')
    with pytest.raises(UserError, match=str(tmp_path / "expvae" / "model.json")):
        load_expvae(tmp_path / "expvae")
    (tmp_path / "vae.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UserError, match=str(tmp_path / "vae.npz")):
        load_parity_npz(tmp_path / "vae.npz")


@pytest.fixture()
def corrupted_committed(tmp_path):
    """A copy of the manifest and of ``bnn/lsat`` with ``samples.npz`` truncated (the repository's is untouched)."""
    root = tmp_path / "weights"
    (root / "bnn").mkdir(parents=True)
    _copy(weights.ROOT / "bnn" / "lsat", root / "bnn")
    shutil.copy(weights.MANIFEST, root / "manifest.json")
    _truncate(root / "bnn" / "lsat" / "samples.npz")
    return weights.read_manifest(root / "manifest.json")


def test_corrupted_committed_weights_advise_git_not_download(corrupted_committed, monkeypatch, caplog):
    monkeypatch.delenv(weights.ENV_URL, raising=False)
    manifest = corrupted_committed
    samples = manifest.root / "bnn" / "lsat" / "samples.npz"
    for call in (lambda: weights.load_posterior("bnn_lsat", manifest=manifest),
                 lambda: weights.path("bnn_lsat", download=False, manifest=manifest),
                 lambda: download.download("bnn_lsat", manifest, force=True, progress=False)):
        with pytest.raises(WeightsError) as err:
            call()
        assert isinstance(err.value, UserError)
        assert f"git checkout -- {samples}" in str(err.value), str(err.value)
    with caplog.at_level(logging.ERROR, logger="weights.download"):
        status = download.main(["bnn_lsat", "--force", "--manifest", str(manifest.root / "manifest.json")])
    assert status == 1
    assert "not hosted for download" in caplog.text and "git checkout --" in caplog.text
    # Loading the damaged copy directly (not through the manifest) names it, with the generic advice.
    with pytest.raises(UserError, match=str(samples)):
        Posterior.load(samples.parent)


def test_repair_advice_for_the_repository_weights():
    advice = weights.repair_advice(weights.ROOT / "bnn" / "lsat" / "samples.npz")
    assert "git checkout -- weights/bnn/lsat/samples.npz" in advice
    hosted = weights.repair_advice(weights.ROOT / "cache" / "bnn" / "mnist" / "samples.npz")
    assert "python -m weights.download bnn_mnist --force" in hosted and "python -m BNN.train" in hosted
    assert weights.repair_advice("/nowhere/samples.npz") is None
