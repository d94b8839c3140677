"""`make demo`'s pipeline (BNN.train -> VAE.train -> CLUE.generate) at tiny size, and CLUE.generate's outputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from CLUE import demo, generate
from common.config import with_preset

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


def test_generate_refuses_models_of_another_dataset(tmp_path, data_dir):
    demo.run("digits", tmp_path / "demo", n_explain=2, tiny=True, progress=False)
    config = with_preset(generate.Config, generate.PRESETS, "tiny", dataset="wine", bnn=str(tmp_path / "demo" / "bnn"),
                         vae=str(tmp_path / "demo" / "vae"), out=str(tmp_path / "x"))
    with pytest.raises(ValueError, match="were they trained on this dataset"):
        generate.main(config)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        generate.main(with_preset(generate.Config, generate.PRESETS, "tiny", dataset="digits",
                                  bnn=str(tmp_path / "nothing"), vae=str(tmp_path / "nothing"),
                                  out=str(tmp_path / "y")))
