"""experiments/float16_copy.py: a float16 copy of a BNN posterior and the check that it changes no reported number."""

from __future__ import annotations

import json

import numpy as np
import pytest

from BNN.model import Architecture, init_params
from BNN.posterior import Posterior
from experiments import float16_copy as fc


def test_compare_flags_a_figure_that_moves_at_its_reported_precision():
    full = {k: 0.5 for k in fc.REPORTED}
    assert fc.compare(full, {k: v + 1e-6 for k, v in full.items()})["changes_no_reported_number"] is True
    moved = {**full, "test/accuracy": 0.5 + 1e-4}  # reported at 4 decimals: 0.5000 -> 0.5001
    report = fc.compare(full, moved)
    assert report["changes_no_reported_number"] is False
    assert report["figures"]["test/accuracy"]["same_as_reported"] is False


def test_copy_is_written_in_float16_loads_in_float32_and_is_checked(tmp_path, data_dir):
    arch = Architecture("mlp", 784, 10, 16, 2)
    draws = [init_params(arch, seed=s) for s in range(3)]
    posterior = Posterior(arch, "categorical", {k: np.stack([d[k] for d in draws]) for k in draws[0]},
                          input_norm=(0.1307, 0.3081), dataset="mnist_t10k")
    posterior.save(tmp_path / "bnn" / "posterior")
    assert fc.main(["--bnn", str(tmp_path / "bnn"), "--vae", "weights/vae/mnist", "--dataset", "mnist_t10k",
                    "--n-explain", "4", "--out", str(tmp_path / "half")]) == 0
    with np.load(tmp_path / "half" / "posterior" / "samples.npz") as saved:
        assert {saved[k].dtype for k in saved.files} == {np.dtype(np.float16)}
    half = Posterior.load(tmp_path / "half" / "posterior")
    assert half.samples["dense_0/kernel"].dtype.name == "float32" and half.dataset == "mnist_t10k"
    np.testing.assert_allclose(half.samples["dense_0/kernel"].numpy(), posterior.samples["dense_0/kernel"].numpy(),
                               rtol=1e-3, atol=1e-4)
    report = json.loads((tmp_path / "half" / "float16_check.json").read_text())
    assert set(report["figures"]) == set(fc.REPORTED) and isinstance(report["changes_no_reported_number"], bool)


def test_models_of_another_dataset_are_refused(tmp_path):
    from common.errors import UserError

    arch = Architecture("mlp", 784, 10, 8, 2)
    draws = [init_params(arch, seed=s) for s in range(2)]
    Posterior(arch, "categorical", {k: np.stack([d[k] for d in draws]) for k in draws[0]},
              dataset="mnist_t10k").save(tmp_path / "bnn" / "posterior")
    with pytest.raises(UserError, match="not mnist"):
        fc.main(["--bnn", str(tmp_path / "bnn"), "--vae", "weights/vae/mnist", "--dataset", "mnist",
                 "--out", str(tmp_path / "half")])
