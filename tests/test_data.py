"""Data layer: split sizes, layouts, round trips, seeds, parity with the original's preprocessing, and errors."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

import data
from common import tabular
from data.datasets import _read_credit
from data.sources import DataFileError

# (name, n_train, n_test, flat width, input_dim_vec prefix) from the original code (spec section 1, reference README).
SIZES = {
    "lsat": (17432, 4358, 12, (1, 1, 8, 2)),
    "compas": (5554, 618, 17, (3, 6, 2, 2, 2, 1, 1)),
    "compas_leak_free": (5554, 618, 15, (3, 6, 2, 2, 1, 1)),
    "wine": (1438, 160, 11, (1,) * 11),
    "credit": (27000, 3000, 29, (1, 2, 4, 3) + (1,) * 19),
    "mnist_t10k": (8000, 2000, 784, None),
    "digits": (1437, 360, 64, None),
}
FIXTURES = Path(__file__).parent / "fixtures"
TABULAR = ["lsat", "compas", "compas_leak_free", "wine", "credit"]


@pytest.fixture(scope="module")
def loaded(data_dir):
    return {name: data.load(name, data_dir=data_dir) for name in SIZES}


@pytest.mark.parametrize("name", list(SIZES))
def test_sizes_and_layout(loaded, name):
    n_train, n_test, width, vec = SIZES[name]
    d = loaded[name]
    assert d.x_train.shape == (n_train, width) and d.x_test.shape == (n_test, width)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.float32
    assert sum(d.input_dim_vec) == width == len(d.feature_names)
    if vec is not None:
        assert d.input_dim_vec == vec
    if d.task == "regression":
        assert d.y_train.shape == (n_train, 1) and d.y_test.shape == (n_test, 1)
    else:
        assert d.y_train.shape == (n_train,)
        assert set(np.unique(d.y_train)) <= set(range(d.n_classes))
    assert np.all(np.isfinite(d.x_train)) and np.all(np.isfinite(d.x_test))


@pytest.mark.parametrize("name", TABULAR)
def test_tabular_normalisation_and_one_hot(loaded, name):
    d = loaded[name]
    assert tabular.is_valid_one_hot(d.x_train, d.input_dim_vec)
    assert tabular.is_valid_one_hot(d.x_test, d.input_dim_vec)
    continuous = np.asarray(tabular.input_dim_vec_to_x_dims(d.input_dim_vec)) == 1
    # Continuous columns are standardised with training statistics: train mean 0, population std 1.
    np.testing.assert_allclose(d.x_train[:, continuous].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(d.x_train[:, continuous].std(0), 1, atol=1e-4)
    assert np.all(d.x_mean[~continuous] == 0) and np.all(d.x_std[~continuous] == 1)
    if d.task == "regression":
        assert abs(d.y_train.mean()) < 1e-5 and abs(d.y_train.std() - 1) < 1e-4


@pytest.mark.parametrize("name", TABULAR)
def test_inverse_transform_round_trips(loaded, name):
    d = loaded[name]
    table = d.to_original_units(d.x_test)
    assert list(table.columns) == [v.name for v in d.variables]
    np.testing.assert_allclose(d.from_original_units(table), d.x_test, atol=2e-5)
    np.testing.assert_array_equal(d.to_flat(d.to_compact(d.x_test)), d.x_test)


def test_original_units_are_raw_values(loaded, data_dir):
    import pandas as pd

    raw = pd.read_csv(data_dir / "lsat" / "law_school_cf_test.csv")
    table = loaded["lsat"].to_original_units(loaded["lsat"].x_test)
    np.testing.assert_allclose(table["LSAT"], raw["LSAT"], rtol=1e-5)
    races = ["amerind", "mexican", "other", "black", "asian", "puerto", "hisp", "white"]
    np.testing.assert_array_equal(table["race"].astype(str), raw[races].idxmax(axis=1))
    np.testing.assert_allclose(loaded["lsat"].y_to_original_units(loaded["lsat"].y_test)[:, 0], raw["ZFYA"], atol=1e-5)


def test_compas_original_categories_and_label_leak(loaded):
    d = loaded["compas"]
    assert [v.name for v in d.variables] == ["age_cat", "race", "sex", "c_charge_degree", "is_recid",
                                              "priors_count", "time_served"]
    assert d.variables[0].categories == ("25 - 45", "Greater than 45", "Less than 25")
    # is_recid is an input in the original (a label leak): it agrees with the label on most rows.
    is_recid = d.to_compact(d.x_train)[:, 4]
    assert np.mean(is_recid == d.y_train) > 0.9
    assert "is_recid" not in [v.name for v in loaded["compas_leak_free"].variables]
    assert data.load("compas", leak_free=True).x_dim == 15


@pytest.mark.parametrize("name", ["lsat", "compas"])
def test_test_split_is_bitwise_the_originals(loaded, parity_dir, name):
    """The PyTorch original's preprocessed test inputs, exported in the parity kit, equal ours bit for bit."""
    io = np.load(parity_dir / name / "io.npz")
    np.testing.assert_array_equal(loaded[name].x_test, io["x_test"])
    np.testing.assert_allclose(loaded[name].x_mean, io["x_means"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(loaded[name].x_std, io["x_stds"], rtol=1e-12)
    np.testing.assert_array_equal(loaded[name].y_test.reshape(io["y_test"].shape), io["y_test"])


@pytest.mark.parametrize("name", ["compas", "wine", "credit", "digits"])
def test_seed_selects_the_split(loaded, data_dir, name):
    again = data.load(name, data_dir=data_dir, seed=0)
    np.testing.assert_array_equal(again.x_test, loaded[name].x_test)
    other = data.load(name, data_dir=data_dir, seed=1)
    assert other.x_test.shape == loaded[name].x_test.shape
    assert not np.array_equal(other.x_test, loaded[name].x_test)


@pytest.mark.parametrize("name", ["lsat", "mnist_t10k"])
def test_fixed_splits_ignore_seed(loaded, data_dir, name):
    np.testing.assert_array_equal(data.load(name, data_dir=data_dir, seed=3).x_test, loaded[name].x_test)


def test_mnist_t10k_is_the_documented_permutation(loaded, data_dir):
    from data.datasets import _read_idx

    labels = _read_idx(data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz")
    perm = np.random.RandomState(0).permutation(10000)
    d = loaded["mnist_t10k"]
    np.testing.assert_array_equal(d.y_test, labels[perm[8000:]])
    assert d.image_shape == (28, 28, 1) and 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    assert d.pixel_norm == (0.1307, 0.3081)


def test_credit_codes_and_xls_reader(loaded, data_dir):
    d = loaded["credit"]
    compact = d.to_compact(d.x_train)
    assert set(np.unique(compact[:, 1])) == {0, 1}  # SEX 1/2 -> 0/1
    assert set(np.unique(compact[:, 2])) == {0, 1, 2, 3}  # EDUCATION 0..6 clipped at 3
    # The UCI .xls (two-row header, ID index) and the CSV export give the same matrix.
    from_xls = _read_credit(FIXTURES / "credit_first40.xls")
    from_csv = _read_credit(data_dir / "credit" / "UCI_Credit_Card.csv")[:40]
    np.testing.assert_array_equal(from_xls, from_csv)


def test_credit_loads_from_the_xls_alone(tmp_path, monkeypatch):
    """With only the UCI .xls present (here a 40-row excerpt), the credit loader uses it."""
    folder = tmp_path / "credit"
    folder.mkdir()
    shutil.copy(FIXTURES / "credit_first40.xls", folder / "default of credit card clients.xls")
    monkeypatch.delenv("CLUE_DATA_DIR", raising=False)
    monkeypatch.setenv("CLUE_CACHE_DIR", str(tmp_path / "cache"))
    d = data.load("credit", data_dir=tmp_path)
    assert d.x_train.shape == (36, 29) and d.x_test.shape == (4, 29)


def test_unknown_name_and_option():
    with pytest.raises(ValueError, match="unknown dataset 'iris'.*lsat"):
        data.load("iris")
    with pytest.raises(ValueError, match="takes no option"):
        data.load("lsat", leak_free=True)
    with pytest.raises(ValueError, match="non-negative integer"):
        data.load("digits", seed=-1)


def test_corrupted_file_is_refused(tmp_path, data_dir, monkeypatch):
    folder = tmp_path / "lsat"
    folder.mkdir()
    for name in ("law_school_cf_train.csv", "law_school_cf_test.csv"):
        shutil.copy(data_dir / "lsat" / name, folder / name)
    with open(folder / "law_school_cf_test.csv", "a") as f:
        f.write("1,2,3\n")
    monkeypatch.delenv("CLUE_DATA_DIR", raising=False)
    with pytest.raises(DataFileError, match=r"(?s)checksum mismatch.*law_school_cf_test.csv.*sha256:.*9500bf46"):
        data.load("lsat", data_dir=tmp_path)


def test_mnist_without_training_images_names_the_file(tmp_path, data_dir, monkeypatch):
    monkeypatch.delenv("CLUE_DATA_DIR", raising=False)
    monkeypatch.setenv("CLUE_CACHE_DIR", str(tmp_path / "cache"))
    # Make downloads fail fast and offline: every mirror points at a closed port on this machine.
    import data.sources as sources

    key = "mnist/train-images-idx3-ubyte.gz"
    monkeypatch.setitem(sources.SOURCES, key, dataclasses.replace(
        sources.SOURCES[key], urls=("http://127.0.0.1:9/train-images-idx3-ubyte.gz",)))
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for name in ("train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(data_dir / "mnist" / name, folder / name)
    with pytest.raises(DataFileError, match=r"(?s)train-images-idx3-ubyte\.gz.*mnist_t10k"):
        data.load("mnist", data_dir=tmp_path / "data")
    assert not (tmp_path / "cache").exists()  # a failed download leaves nothing behind


def test_mnist_is_the_official_split(data_dir):
    d = data.load("mnist", data_dir=data_dir)
    assert d.x_train.shape == (60000, 784) and d.x_test.shape == (10000, 784)
    assert d.y_train.shape == (60000,) and np.bincount(d.y_test.astype(int)).tolist()[:2] == [980, 1135]
    # The shared data README's pixel statistics of the official training images.
    assert abs(d.x_train.mean() - 0.130660) < 1e-5 and abs(d.x_train.std() - 0.308108) < 1e-5


def _mnist_folder(tmp_path, data_dir, train_images: bytes) -> Path:
    folder = tmp_path / "mnist"
    folder.mkdir(parents=True)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(train_images)
    return tmp_path


def test_mnist_training_images_accepted_by_content_or_archive_checksum(tmp_path, data_dir, monkeypatch):
    import gzip
    import hashlib

    import data.sources as sources

    key = "mnist/train-images-idx3-ubyte.gz"
    content = gzip.decompress((data_dir / key).read_bytes())
    # Another gzip (level 1, with a name and time stamp): the archive's md5 is not the official one, its content is.
    recompressed = gzip.compress(content, compresslevel=1, mtime=12345)
    assert hashlib.md5(recompressed).hexdigest() != sources.SOURCES[key].md5
    folder = _mnist_folder(tmp_path / "a", data_dir, recompressed)
    assert sources.fetch(key, folder, download=False) == folder / key
    # The archive checksum alone also suffices (as for the official archive, whose md5 is recorded).
    monkeypatch.setitem(sources.SOURCES, key, dataclasses.replace(
        sources.SOURCES[key], md5=hashlib.md5(recompressed).hexdigest(), content_sha256="0" * 64))
    assert sources.fetch(key, folder, download=False) == folder / key


@pytest.mark.parametrize("damage", ["other_content", "truncated", "not_gzip"])
def test_mnist_corrupted_training_images_are_refused(tmp_path, data_dir, damage):
    import gzip

    import data.sources as sources

    key = "mnist/train-images-idx3-ubyte.gz"
    raw = (data_dir / key).read_bytes()
    bad = {"other_content": lambda: gzip.compress(gzip.decompress(raw)[:-1] + b"\x01"),
           "truncated": lambda: raw[: len(raw) // 2],
           "not_gzip": lambda: b"not a gzip file"}[damage]()
    folder = _mnist_folder(tmp_path, data_dir, bad)
    with pytest.raises(DataFileError, match=r"(?s)checksum mismatch.*uncompressed content is not the official one.*"
                                            r"ba891046.*md5:\s+f68b3c2d"):
        sources.fetch(key, folder, download=False)


def test_training_scripts_take_a_dataset_object_of_the_named_dataset(loaded):
    other = dataclasses.replace(loaded["digits"], name="my_digits")
    data.check_named(other, "my_digits")
    data.check_named(None, "digits")
    with pytest.raises(ValueError, match="named 'my_digits' but the config names 'digits'"):
        data.check_named(other, "digits")
    with pytest.raises(ValueError, match="expected a data.Dataset"):
        data.check_named({"x_train": []}, "digits")
    with pytest.raises(ValueError, match="unknown dataset 'my_digits'"):
        data.load("my_digits")


def test_from_frame_builds_a_dataset_with_the_paper_preprocessing():
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 200
    df = pd.DataFrame({"age": rng.normal(40, 10, n), "city": rng.choice(["b", "a", "c"], n),
                       "income": rng.normal(3, 1, n), "default": rng.choice(["no", "yes"], n)})
    ds = data.from_frame(df, target="default", categorical=["city"], name="mine", seed=3)
    assert ds.task == "classification" and ds.name == "mine" and ds.class_names == ("no", "yes")
    assert ds.input_dim_vec == (1, 3, 1) and ds.feature_names == ("age", "city=a", "city=b", "city=c", "income")
    assert len(ds.x_test) == 20 and len(ds.x_train) == 180
    assert tabular.is_valid_one_hot(ds.x_train, ds.input_dim_vec)
    np.testing.assert_allclose(ds.x_train[:, [0, 4]].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train[:, [0, 4]].std(0), 1, atol=1e-4)
    # the split is the seeded permutation's first 10%, rows kept in frame order; original units come back
    test_rows = np.random.RandomState(3).permutation(n)[:20]
    train_rows = np.setdiff1d(np.arange(n), test_rows)
    back = ds.to_original_units(ds.x_train)
    np.testing.assert_allclose(back["age"], df["age"].to_numpy()[train_rows], rtol=1e-6)
    assert list(back["city"]) == list(df["city"].to_numpy()[train_rows])
    np.testing.assert_array_equal(ds.y_test, (df["default"].to_numpy()[np.sort(test_rows)] == "yes").astype(float))
    reg = data.from_frame(df.drop(columns="default"), target="income", categorical=["city"])
    assert reg.task == "regression" and reg.y_train.shape == (180, 1)
    assert abs(float(reg.y_train.mean())) < 1e-5
    again = data.from_frame(df, target="default", categorical=["city"], name="mine", seed=3)
    np.testing.assert_array_equal(again.x_test, ds.x_test)  # seeded split


@pytest.mark.parametrize(("change", "message"), [
    (lambda df: df.assign(city=None), "missing values"),
    (lambda df: df, "not numeric"),
    (lambda df: df.drop(columns="default"), "not in the frame"),
])
def test_from_frame_refuses_what_it_cannot_use(change, message):
    import pandas as pd

    df = pd.DataFrame({"age": [1.0, 2.0, 3.0, 4.0], "city": ["a", "b", "a", "b"], "default": [0, 1, 0, 1]})
    categorical = [] if message == "not numeric" else ["city"]
    with pytest.raises(ValueError, match=message):
        data.from_frame(change(df), target="default", categorical=categorical, test_fraction=0.25)
