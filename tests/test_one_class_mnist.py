"""The one-class MNIST driver (experiments/one_class_mnist.py): end to end on a tiny setting (one digit, one seed,
one epoch, a few hundred mnist_t10k images), the summary, the reuse of a finished run and the resumed evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import one_class_mnist as oc

TINY = ["--digits", "3", "--seeds", "0", "--epochs", "1", "--max-train", "200", "--max-images", "30",
        "--dataset", "mnist_t10k"]


def _argv(tmp_path, *extra):
    return [*TINY, "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results"),
            "--figure", str(tmp_path / "bars.png"), *extra]


def _argv_data(tmp_path, data_dir):
    return _argv(tmp_path, "--data-dir", str(data_dir))


def test_end_to_end_summary_and_resume(tmp_path, data_dir, monkeypatch):
    assert oc.main(_argv_data(tmp_path, data_dir)) == 0
    run = json.loads((tmp_path / "results" / "digit3_s0.json").read_text())
    assert run["digit"] == 3 and run["seed"] == 0 and run["train"]["epochs_run"] == 1
    assert run["n_images"] == {"train_inliers": 200, "test_inliers": 30, "test_outliers": 30}
    assert run["protocol"]["outlier_digit"] is None  # every other digit is anomalous
    summary = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert summary["digits"]["3"]["seeds"] == [0]
    assert summary["anchor"]["image_auroc_percent"]["3"] == 91.9
    assert summary["mean_over_digits"]["deep_svdd"] == pytest.approx(0.919)
    for score in ("loss", "bce", "attention_code_mean", "attention_anomaly_mean"):
        row = summary["image_auroc"][score]["3"]
        assert 0.0 <= row["mean"] <= 1.0 and row["sd"] == 0.0  # one seed
        assert row["mean"] == run["evaluation"]["image"][score]
    metrics = summary["digits"]["3"]["metrics"]
    for kind in ("additive", "subtractive"):
        for name in ("attention_anomaly", "ablation_anomaly_mean", "baseline_mean_inlier", "attention_code"):
            assert 0.0 <= metrics[f"pixel/{kind}/{name}/pooled"]["mean"] <= 1.0
    assert (tmp_path / "bars.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a finished run is reused: nothing is trained or evaluated again
    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was recomputed")

    with monkeypatch.context() as m:
        m.setattr(oc.train, "main", refuse)
        m.setattr(oc, "evaluate_model", refuse)
        assert oc.main(_argv_data(tmp_path, data_dir)) == 0
    assert json.loads((tmp_path / "results" / "summary.json").read_text()) == summary

    # results lost, training run kept: the finished training run is resumed (no epoch more), the evaluation repeated
    (tmp_path / "results" / "digit3_s0.json").unlink()
    assert oc.main(_argv_data(tmp_path, data_dir)) == 0
    again = json.loads((tmp_path / "results" / "digit3_s0.json").read_text())
    assert again["evaluation"] == run["evaluation"] and again["train"]["epochs_run"] == 1
    assert len((tmp_path / "runs" / "digit3_s0" / "metrics.csv").read_text().splitlines()) == 2  # header + 1 epoch


def _fake_run(digit: int, seed: int, auroc: float, settings: dict) -> dict:
    evaluation = {"pixel": {"additive": {"attention_anomaly": {"pooled": auroc / 2, "per_image_mean": 0.5}}},
                  "image": {"loss": auroc, "bce": auroc - 0.1}}
    return {"digit": digit, "seed": seed, "settings": settings, "evaluation": evaluation,
            "train": {"best_epoch": 10 + seed}}


def test_summary_means_over_seeds_and_skips_other_settings(tmp_path):
    ours, other = {"dataset": "mnist", "epochs": None}, {"dataset": "mnist", "epochs": 1}
    runs = [_fake_run(d, s, 0.8 + 0.01 * d + 0.02 * s, ours) for d in range(10) for s in range(3)]
    runs.append(_fake_run(3, 9, 0.0, other))  # another setting's run: left out
    summary = oc.summarize(runs, ours)
    assert summary["digits"]["3"]["seeds"] == [0, 1, 2]
    loss = summary["image_auroc"]["loss"]["3"]
    assert loss["mean"] == pytest.approx(0.85) and loss["sd"] == pytest.approx(0.02)  # sample sd (ddof 1)
    assert summary["digits"]["3"]["metrics"]["train/best_epoch"]["mean"] == pytest.approx(11)
    assert summary["mean_over_digits"]["loss"] == pytest.approx(np.mean([0.82 + 0.01 * d for d in range(10)]))
    assert summary["mean_over_digits"]["deep_svdd"] == pytest.approx(np.mean(list(oc.DEEP_SVDD.values())) / 100)
    path = oc.plot_summary(summary, tmp_path / "fig" / "bars.png")
    assert path.stat().st_size > 5000
    assert oc.plot_summary(oc.summarize([], ours), tmp_path / "none.png") is None


def test_arguments_and_run_config(tmp_path):
    args = oc.parse_args(_argv(tmp_path, "--deterministic", "false"))
    config = oc.train_config(3, 1, args)
    assert (config.model, config.dataset, config.inlier_digit, config.seed) == ("expvae", "mnist_t10k", 3, 1)
    assert (config.max_epochs, config.max_train_rows, config.deterministic) == (1, 200, False)
    assert config.out == str(tmp_path / "runs" / "digit3_s1")
    assert config.resolved().batch_size == 128  # the rest are the expvae defaults
    defaults = oc.parse_args([])
    assert defaults.digits == list(range(10)) and defaults.seeds == [0, 1, 2] and defaults.epochs is None
    assert oc.train_config(0, 0, defaults).resolved().max_epochs == 100
    with pytest.raises(SystemExit):
        oc.parse_args(["--digits", "10"])


def test_a_run_folder_of_other_settings_is_refused(tmp_path, monkeypatch):
    """A folder holding a longer run (its max_epochs resumes nothing) is not evaluated as a shorter one."""
    from common.errors import UserError

    monkeypatch.setattr(oc.train, "main", lambda config: {"epochs_run": 5})
    monkeypatch.setattr(oc, "load_expvae", lambda path: pytest.fail("a mislabelled run was evaluated"))
    args = oc.parse_args(_argv(tmp_path))
    with pytest.raises(UserError, match="holds a run of 5 epochs, not 1"):
        oc.run_one(None, 3, 0, args)
