"""CLUE.evaluation.pipeline and CLUE.evaluate: end to end, published stages, rebuilds and saved settings."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from CLUE import evaluation as ev
from CLUE.evaluation import pipeline


def test_evaluate_tiny_end_to_end(tmp_path, data_dir):
    from CLUE import evaluate
    from common.config import with_preset

    config = with_preset(evaluate.Config, evaluate.PRESETS, "tiny", dataset="compas", out=str(tmp_path),
                         data_dir=str(data_dir))
    results = evaluate.main(config)
    table = pd.read_csv(tmp_path / "table.csv")
    assert set(table["method"]) == {"clue", "ufido", "sensitivity"} and len(table) >= 6
    numeric = table[["mean_delta_h", "delta_err", "mean_log_px", "mean_l1"]].to_numpy()
    assert np.isfinite(numeric).all()
    for target in results["references"]:
        if "n_explained" in results["references"][target]:
            assert (tmp_path / f"compas_{target}.png").stat().st_size > 1000
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == results["rows"]
    art = np.load(tmp_path / "artificial.npz")
    assert art["x_train"].shape == (5554, 17) and art["x_test"].shape == (618, 17)  # [nb]: real split sizes
    (tmp_path / "table.csv").unlink()  # a finished run with the same settings is returned, not recomputed
    assert evaluate.main(config)["rows"] == json.loads((tmp_path / "results.json").read_text())["rows"]
    assert not (tmp_path / "table.csv").exists()
    assert {r["verdict"] for r in results["verdicts"]} <= {"best", "tie", "alone"} and results["verdicts"]
    assert all(r["mean_delta_h_lo"] <= r["mean_delta_h"] <= r["mean_delta_h_hi"] for r in results["rows"])
    info = results["references"]["aleatoric"]
    assert info["fraction_selected"] == pytest.approx(info["n_selected"] / info["n_test"])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir):
    """A finished tiny LSAT evaluation run: (config, its folder, its results)."""
    from CLUE import evaluate
    from common.config import with_preset

    first = tmp_path_factory.mktemp("tiny_run") / "first"
    config = with_preset(evaluate.Config, evaluate.PRESETS, "tiny", dataset="lsat", out=str(first),
                         data_dir=str(data_dir), n_clue=1, n_ufido=1, n_sensitivity=1)
    return config, first, evaluate.main(config)


def _empty_weights(root):
    import weights

    root.mkdir()
    (root / "manifest.json").write_text(json.dumps({**json.loads(weights.MANIFEST.read_text()), "models": []}))
    return root


def _rows(results):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in results["rows"]]


def _models(results):
    """The stages' metrics without wall-clock seconds, which published copies leave out."""
    return {m: {k: v for k, v in metrics.items() if not k.split("/")[-1].startswith("seconds")}
            for m, metrics in results["models"].items()}


def test_published_stages_rescore_to_the_same_results(tiny_run, tmp_path, monkeypatch):
    """The trained stages go into a weights folder with sha256s; a new run folder fed from it scores the same."""
    import weights
    from CLUE import evaluate, stages

    config, first, results = tiny_run
    root = _empty_weights(tmp_path / "weights")
    name = stages.publish(config, first, "python -m CLUE.evaluate --preset tiny", committed=True, root=root)
    manifest = weights.read_manifest(root / "manifest.json")
    assert manifest.entry(name).kind == stages.KIND and not weights.mismatches(name, manifest)
    monkeypatch.setattr(weights, "MANIFEST", root / "manifest.json")
    second = tmp_path / "second"
    again = evaluate.main(dataclasses.replace(config, out=str(second), stages="weights"))
    assert not stages.missing_stages(second)
    assert _rows(again) == _rows(results) and _models(again) == _models(results)
    assert "seconds_per_epoch" in results["models"]["bnn"]  # the training run's own record keeps them
    with pytest.raises(ValueError, match="no published evaluation stages match"):
        stages.fetch(dataclasses.replace(config, bnn_epochs=5), tmp_path / "third", manifest=manifest)
    (root / manifest.entry(name).path / "bnn" / "posterior" / "samples.npz").write_bytes(b"damaged")
    with pytest.raises(ValueError, match="sha256|differ"):
        stages.fetch(config, tmp_path / "fourth", manifest=weights.read_manifest(root / "manifest.json"))


def test_stages_neither_here_nor_hosted_are_rebuilt_and_used_only_if_every_sha256_matches(tmp_path, data_dir,
                                                                                            monkeypatch):
    """A run publishes its stages (not committed, not hosted) and its folder is lost; --stages rebuild retrains them
    in a fresh single-threaded process, finds every file equal to the published sha256s, installs them and scores
    the run the published stages scored. A retrained file that differs is never installed."""
    import subprocess
    import sys

    import weights
    from CLUE import evaluate, stages
    from common.config import with_preset

    root = _empty_weights(tmp_path / "weights")
    first = tmp_path / "first"
    config = with_preset(evaluate.Config, evaluate.PRESETS, "tiny", dataset="wine", out=str(first),
                         data_dir=str(data_dir), n_clue=1, n_ufido=1, n_sensitivity=1)
    publishing = (  # the published run: its own process, one thread, as the study runs its seeds
        "import json, sys\n"
        "from CLUE import evaluate, stages\nfrom CLUE.evaluation import pipeline\n"
        "config = evaluate.Config(**json.loads(sys.argv[1]))\n"
        "evaluate.main(config)\n"
        "stages.publish(config, config.out, pipeline.publish_command(config), committed=False, root=sys.argv[2])\n")
    subprocess.run([sys.executable, "-c", publishing, json.dumps(dataclasses.asdict(config)), str(root)], check=True,
                   env={**os.environ, **stages.SINGLE_THREAD_ENV}, cwd=stages.PROJECT_ROOT)
    results = json.loads((first / "results.json").read_text())
    manifest = weights.read_manifest(root / "manifest.json")
    (name,) = manifest.entries
    assert not manifest.entry(name).committed and str(first) in manifest.entry(name).command
    assert manifest.entry(name).info["rebuildable"] is True  # every stage recorded one thread
    shutil.rmtree(manifest.local_dir(name))  # a fresh checkout: listed in the manifest, files nowhere
    shutil.rmtree(first)
    monkeypatch.setattr(weights, "MANIFEST", root / "manifest.json")
    monkeypatch.delenv(weights.ENV_URL, raising=False)
    assert stages.needs_rebuild(config)

    again = evaluate.main(dataclasses.replace(config, out=str(tmp_path / "second"), stages="rebuild"))
    assert weights.available(name, manifest) and not stages.needs_rebuild(config)  # installed, sha256-verified
    assert _rows(again) == _rows(results) and _models(again) == _models(results)  # the published run's scores

    raw = json.loads((root / "manifest.json").read_text())
    entry = next(m for m in raw["models"] if m["name"] == name)
    next(f for f in entry["files"] if f["file"] == "vae/best/model.weights.h5")["sha256"] = "0" * 64
    other = _empty_weights(tmp_path / "other")
    (other / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"differ from the published(.|\n)*vae/best/model.weights.h5: sha256"):
        stages.install(config, first, manifest=weights.read_manifest(other / "manifest.json"))
    assert not (other / "cache" / entry["path"]).exists()
    assert not list((other / "cache" / "eval").glob(".*"))  # no staging folder left behind


def test_stage_thread_records_say_whether_a_single_threaded_retrain_can_repeat_the_stages(tmp_path, monkeypatch):
    from CLUE import stages

    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "1")
    monkeypatch.setenv("TF_NUM_INTEROP_THREADS", "1")
    assert stages.tf_threads() == {"intra_op": 1, "inter_op": 1}
    assert stages.rebuildable(tmp_path) is None  # nothing recorded: a run from before the record
    for stage in stages.TRAINED_STAGES[:-1]:
        stages.note_training(tmp_path, stage)
    assert stages.rebuildable(tmp_path) is None  # the in-filling VAEAC is not recorded yet
    stages.note_training(tmp_path, "art_vaeac")
    assert stages.rebuildable(tmp_path) is True
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "2")
    stages.note_training(tmp_path, "bnn")  # the BNN resumed in a two-thread process
    assert stages.rebuildable(tmp_path) is False
    record = json.loads((tmp_path / stages.THREADS_FILE).read_text())
    assert [t["intra_op"] for t in record["bnn"]] == [1, 2]
    assert record["gt_vaeac"] == [{"intra_op": 1, "inter_op": 1, "cpu": stages.cpu_signature()}]
    assert stages.trained_on(tmp_path) == [stages.cpu_signature()]  # one machine, listed once
    with pytest.raises(ValueError, match="unknown stage"):
        stages.note_training(tmp_path, "sweeps")


def test_log_px_diagnostic_reproduces_the_runs_estimate_and_reads_the_run_only(tiny_run, tmp_path):
    """experiments/diagnostics/log_px_convergence.py at the run's own sample count gives the run's log p(x) of its
    explained points; more samples change the estimate; an explanation set moves the points; the run is not
    written."""
    import importlib.util

    from common.errors import UserError

    config, first, results = tiny_run
    path = Path(__file__).resolve().parent.parent / "experiments" / "diagnostics" / "log_px_convergence.py"
    spec = importlib.util.spec_from_file_location("log_px_convergence", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    before = sorted((p.relative_to(first), p.stat().st_mtime_ns) for p in first.rglob("*"))
    out = tmp_path / "lpx.json"
    # a target the tiny run explains (whether a tiny BNN's aleatoric uncertainty crosses the threshold depends on the
    # CPU's kernels)
    target = next(t for t in ev.TARGETS if results["references"][t].get("n_explained"))
    module.main(["--run", str(first), "--target", target, "--n-points", "100000", "--samples",
                 str(config.n_px_samples), "64", "--explain", "sensitivity:1", "--out", str(out)])
    rows = {(r["set"], r["samples"]): r for r in json.loads(out.read_text())["rows"]}
    reference = results["references"][target]
    original = rows[("original", config.n_px_samples)]
    assert original["mean"] == pytest.approx(reference["mean_log_px_x0"], abs=1e-5)
    assert original["mean_l1"] == 0 and original["rise_of_10_lowest"] == 0
    assert rows[("original", 64)]["mean"] != original["mean"]
    assert rows[("sensitivity:1", 64)]["mean_l1"] > 0
    assert sorted((p.relative_to(first), p.stat().st_mtime_ns) for p in first.rglob("*")) == before
    with pytest.raises(SystemExit):  # the parser names what is wrong (pipeline.load_trained_run)
        module.main(["--run", str(tmp_path), "--target", "aleatoric", "--out", str(tmp_path / "no.json")])
    partial = tmp_path / "partial"
    shutil.copytree(first, partial)
    (partial / "vae" / "metrics.json").unlink()
    with pytest.raises(UserError, match="vae is not trained yet"):
        pipeline.load_trained_run(partial)
    assert not (tmp_path / "no.json").exists()


def test_rebuild_refuses_at_once_stages_trained_with_several_threads(tiny_run, tmp_path, monkeypatch, caplog):
    """An entry published from a multi-threaded run is marked so, and --stages rebuild says what to do instead of
    retraining for an hour and then finding every sha256 different."""
    import subprocess

    import weights
    from CLUE import stages

    config, first, _ = tiny_run
    root = _empty_weights(tmp_path / "weights")
    thread_record = first / stages.THREADS_FILE
    saved = thread_record.read_text()
    record = json.loads(saved)
    record["vae"].append({"intra_op": 2, "inter_op": 2})
    thread_record.write_text(json.dumps(record))
    try:
        name = stages.publish(config, first, "python -m CLUE.evaluate --preset tiny --out x", committed=False,
                              root=root)
    finally:
        thread_record.write_text(saved)
    manifest = weights.read_manifest(root / "manifest.json")
    assert manifest.entry(name).info["rebuildable"] is False
    assert manifest.entry(name).info["trained_on"] == [stages.cpu_signature()]
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("rebuild started a retrain"))
    with pytest.raises(ValueError, match="more than one TensorFlow thread"):
        pipeline.rebuild_stages(config, manifest)

    # one thread, but another CPU: TensorFlow's kernels differ, so the retrain is refused as well
    raw = json.loads((root / "manifest.json").read_text())
    raw["models"][0].update(rebuildable=True, trained_on=[{"model": "AMD EPYC", "simd": ["avx", "avx2", "fma"]}])
    monkeypatch.setattr(stages, "cpu_signature", lambda: {"model": "Intel Xeon", "simd": ["avx2", "avx512f"]})
    (root / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"trained on AMD EPYC \(avx, avx2, fma\); this machine is Intel Xeon"):
        pipeline.rebuild_stages(config, weights.read_manifest(root / "manifest.json"))

    # an entry published before the threads and CPU were recorded: the rebuild says at once that it may not match
    del raw["models"][0]["trained_on"], raw["models"][0]["rebuildable"]
    (root / "manifest.json").write_text(json.dumps(raw))
    with caplog.at_level(logging.WARNING, logger="CLUE.stages"):
        stages.check_rebuildable(weights.read_manifest(root / "manifest.json").entry(name))
    assert "records neither its threads nor its CPU" in caplog.text


def test_a_run_saved_before_a_setting_existed_matches_that_settings_default():
    from CLUE import evaluate
    from common.io import jsonable

    config = evaluate.Config(dataset="lsat", out="runs/x")
    saved = jsonable(dataclasses.asdict(config))
    del saved["clue_n_early_stop"]
    assert pipeline.saved_settings(saved) == jsonable(dataclasses.asdict(config))
    changed = dataclasses.replace(config, clue_n_early_stop=0)
    assert pipeline.saved_settings(saved) != jsonable(dataclasses.asdict(changed))


def test_stage_settings_map_onto_the_training_scripts_configs():
    from BNN import train as bnn_train
    from CLUE import evaluate
    from VAEAC import train as vaeac_train

    config = evaluate.Config(dataset="lsat", gt_width=77, under_lr=1e-3, bnn_epochs=12, bnn_width=9)
    gt = pipeline.script_config(config, vaeac_train.Config, {"gt_": "", "under_": "under_"}, dataset="lsat")
    assert (gt.width, gt.under_lr, gt.max_epochs) == (77, 1e-3, config.gt_max_epochs)
    bnn = pipeline.script_config(config, bnn_train.Config, {"bnn_": ""}, {"bnn_epochs": "n_epochs"}, dataset="x")
    assert (bnn.n_epochs, bnn.width) == (12, 9)
    with pytest.raises(TypeError, match="n_epochs|epochs"):  # a setting whose name the script does not have
        pipeline.script_config(config, bnn_train.Config, {"bnn_": ""}, dataset="x")
