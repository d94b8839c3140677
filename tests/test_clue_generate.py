"""`make demo`'s pipeline (BNN.train -> VAE.train -> CLUE.generate) at tiny size, and CLUE.generate's outputs."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from toy_models import IdentityGenerator, ToyCategoricalBNN

import data
from CLUE import CLUE, CLUEConfig, CLUEResult, demo, generate
from common.config import with_preset
from common.errors import UserError

SUMMARY_KEYS = {"n_explained", "uncertainty_before", "uncertainty_after", "l1_distance", "seconds"}


def test_demo_pipeline_on_digits(tmp_path):
    result = demo.run("digits", tmp_path / "demo", n_explain=6, tiny=True, progress=False)
    clue_dir = tmp_path / "demo" / "clue"
    summary = json.loads((clue_dir / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary) and summary["n_explained"] == 6
    assert np.isfinite([summary[k] for k in SUMMARY_KEYS]).all()
    assert (clue_dir / "clues.png").stat().st_size > 10_000
    with np.load(clue_dir / "explanations.npz") as f:
        assert f["x"].shape == (6, 64) and f["x0"].shape == (6, 64)
        assert f["test_index"].shape == (6,) and len(set(f["test_index"])) == 6
        assert np.all((f["x"] >= 0) & (f["x"] <= 1))  # Bernoulli decoder: pixel probabilities
        np.testing.assert_allclose(f["uncertainty_before"], np.sort(f["uncertainty_before"])[::-1], rtol=1e-6)
    assert result["figure"].endswith("clues.png")


def test_generate_on_lsat_writes_changes_in_original_units(tmp_path, data_dir):
    demo.run("lsat", tmp_path / "demo", n_explain=5, tiny=True, progress=False)
    out = tmp_path / "demo" / "clue"
    table = pd.read_csv(out / "changes.csv")
    assert list(table.columns) == ["point", "test_index", "feature", "original", "clue", "uncertainty_before",
                                   "uncertainty_after"]
    assert set(table["feature"]) <= {"LSAT", "UGPA", "race", "sex"}
    lsat_rows = table[table["feature"] == "LSAT"]
    if len(lsat_rows):  # original units: LSAT scores, not standardised values
        assert lsat_rows["original"].astype(float).between(10, 50).all()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_explained"] == 5 and summary["uncertainty_unit"].startswith("std")
    assert summary["figure"] == "changes.png" and summary["decimals"] == {"LSAT": 0, "UGPA": 1}
    # the raw data's resolution: LSAT scores are integers, UGPAs have one decimal (not 35.999999970198)
    text = (out / "changes.csv").read_text().splitlines()[1:]
    for line in text:
        feature, original, clue = line.split(",")[2:5]
        if feature == "LSAT":
            assert re.fullmatch(r"-?\d+", original) and re.fullmatch(r"-?\d+", clue), line
        if feature == "UGPA":
            assert re.fullmatch(r"-?\d+\.\d", original) and re.fullmatch(r"-?\d+\.\d", clue), line
    png = (out / "changes.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_generate_refuses_models_of_another_dataset(tmp_path, data_dir):
    demo.run("digits", tmp_path / "demo", n_explain=2, tiny=True, progress=False)
    config = with_preset(generate.Config, generate.PRESETS, "tiny", dataset="wine", bnn=str(tmp_path / "demo" / "bnn"),
                         vae=str(tmp_path / "demo" / "vae"), out=str(tmp_path / "x"))
    with pytest.raises(ValueError, match="were they trained on this dataset"):
        generate.main(config)
    with pytest.raises(UserError, match="--bnn .* does not exist: pass the --out folder of its training run"):
        generate.main(with_preset(generate.Config, generate.PRESETS, "tiny", dataset="digits",
                                  bnn=str(tmp_path / "nothing"), vae=str(tmp_path / "nothing"),
                                  out=str(tmp_path / "y")))


def _bad_counts_config(tmp_path, **counts):
    return with_preset(generate.Config, generate.PRESETS, "tiny", dataset="digits", bnn=str(tmp_path / "no_bnn"),
                       vae=str(tmp_path / "no_vae"), out=str(tmp_path / "out"), **counts)


@pytest.mark.parametrize("counts, message", [
    ({"n_explain": -3}, r"--n-explain .* >= 1"),
    ({"n_explain": 0}, r"--n-explain .* >= 1"),
    ({"n_explain": None, "fraction": 2.0}, r"--fraction .* \(0, 1\]"),
    ({"n_explain": None, "fraction": 0.0}, r"--fraction .* \(0, 1\]"),
    ({"n_explain": None, "fraction": -0.5}, r"--fraction .* \(0, 1\]"),
])
def test_generate_refuses_bad_counts_before_loading_anything(tmp_path, counts, message):
    """`--n-explain -3` explained 4,355 points and `--fraction 2` all of them, silently: now both say the range."""
    with pytest.raises(UserError, match=message):
        generate.main(_bad_counts_config(tmp_path, **counts))
    assert not (tmp_path / "out").exists()


def test_explain_most_uncertain_ranks_then_explains():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    bnn = ToyCategoricalBNN(5)
    clue = CLUE(bnn, IdentityGenerator(), CLUEConfig(max_steps=4))
    result, index = generate.explain_most_uncertain(clue, x, n_explain=6)
    np.testing.assert_array_equal(index, generate.select_uncertain(bnn, x, 6))
    np.testing.assert_array_equal(result.x0, x[index])
    assert np.all(np.diff(result.uncertainty_before) <= 1e-6)  # most uncertain first
    _, by_fraction = generate.explain_most_uncertain(clue, x, fraction=0.1)
    assert len(by_fraction) == 4  # ceil(0.1 * 40)
    assert generate.n_to_explain(40, n_explain=100) == 40 and generate.n_to_explain(40, fraction=1.0) == 40
    with pytest.raises(UserError, match=">= 1"):
        generate.explain_most_uncertain(clue, x, n_explain=-3)
    with pytest.raises(UserError, match=r"\(0, 1\]"):
        generate.explain_most_uncertain(clue, x, fraction=2)
    with pytest.raises(UserError, match="total, aleatoric or epistemic"):
        generate.explain_most_uncertain(clue, x, n_explain=2, target="both")


def test_column_decimals_follow_the_raw_data(data_dir):
    assert generate.column_decimals(data.load("lsat")) == {"LSAT": 0, "UGPA": 1}
    assert generate.column_decimals(data.load("compas")) == {"priors_count": 0, "time_served": 0}
    wine = generate.column_decimals(data.load("wine"))
    assert wine["density"] == 5 and wine["pH"] == 2 and wine["alcohol"] == 1 and wine["total sulfur dioxide"] == 0


def _fake_result(x0: np.ndarray, x: np.ndarray) -> CLUEResult:
    n, t = len(x0), 3
    steps = np.zeros((t, n), np.float32)
    return CLUEResult(x=x, z=x, x0=x0, z_init=x0, uncertainty=steps, aleatoric=steps, epistemic=steps,
                      distance_term=steps, cost=steps, stop_step=np.zeros(n, np.int64),
                      freeze_index=np.full(n, t, np.int64),
                      uncertainty_before=np.linspace(0.69, 0.6, n, dtype=np.float32),
                      uncertainty_after=np.linspace(0.3, 0.2, n, dtype=np.float32))


def test_changes_table_and_figure_in_readable_units(tmp_path, data_dir):
    """COMPAS counts come back as integers (not 12.000000166928347), categories by name, and the PNG is drawn."""
    ds = data.load("compas")
    names = [v.name for v in ds.variables]
    compact = ds.to_compact(ds.x_test[:5]).copy()
    j, k = names.index("priors_count"), names.index("time_served")
    compact[:, j] += 2.3  # standardised units: about 11 more priors, not on the integer grid
    compact[:2, k] += 0.001  # far below the threshold: unchanged
    compact[0, names.index("sex")] = 1 - compact[0, names.index("sex")]  # a category flips
    result = _fake_result(ds.x_test[:5], ds.to_flat(compact))
    decimals = generate.column_decimals(ds)
    table = generate.changed_features(ds, result, np.arange(10, 15), 0.05, decimals)
    priors = table[table.feature == "priors_count"]
    assert len(priors) == 5 and "time_served" not in set(table.feature)
    assert all(isinstance(v, (int, np.integer)) for v in [*priors.original, *priors.clue])
    assert (priors.clue.astype(int) > priors.original.astype(int)).all()
    sex = table[table.feature == "sex"]
    assert len(sex) == 1 and {sex.original.iloc[0], sex.clue.iloc[0]} == {"Male", "Female"}
    csv = tmp_path / "changes.csv"
    table.to_csv(csv, index=False)
    for line in csv.read_text().splitlines()[1:]:
        feature, original, clue = line.split(",")[2:5]
        if feature == "priors_count":
            assert re.fullmatch(r"\d+", original) and re.fullmatch(r"-?\d+", clue), line
    png = tmp_path / "changes.png"
    generate.plot_changes(png, ds, result, np.arange(10, 15), table, decimals, "nats", max_points=3)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_missing_model_folders_and_empty_inputs_are_one_line_errors(tmp_path):
    import subprocess
    import sys

    from CLUE.generate import explain_most_uncertain
    from common.io import PROJECT_ROOT

    done = subprocess.run([sys.executable, "-m", "CLUE.generate", "--dataset", "lsat", "--bnn", str(tmp_path / "no"),
                           "--vae", str(tmp_path / "no"), "--out", str(tmp_path / "out")], capture_output=True,
                          text=True, cwd=PROJECT_ROOT)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == f"error: --bnn {tmp_path / 'no'} does not exist: pass the --out " \
                                                   "folder of its training run"
    assert "Traceback" not in done.stderr and not (tmp_path / "out").exists()
    with pytest.raises(UserError, match=r"non-empty \[n, D\] array"):
        explain_most_uncertain(None, np.zeros((0, 12), np.float32))
