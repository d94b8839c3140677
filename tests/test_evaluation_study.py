"""The evaluation study driver (experiments/evaluation_study.py) and its seed bands (evaluation_framework)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from CLUE import evaluate
from experiments import evaluation_framework as efw
from experiments import evaluation_study as study


def _run(dataset: str, seed: int, offset: float, switch: str = "default") -> dict:
    """A results.json as CLUE.evaluate writes it, with two sweep values per method and a known metric."""
    rows = [{"method": m, "target": "aleatoric", "param": p, "n_points": 10, "mean_delta_h": base + p + offset,
             "delta_err": 0.0, "mean_log_px": -5.0 - p, "mean_l1": 2.0 * p + offset, "seconds": 1.0}
            for m, base in (("clue", 0.2), ("ufido", 0.1)) for p in (0.5, 1.0)]
    at = [{"target": "aleatoric", "method": m, "l1": 2.0, "delta_h": v + offset, "delta_err": 0.0, "log_px": -6.0}
          for m, v in (("clue", 1.2), ("ufido", 1.1))]
    calls = [{"target": "aleatoric", "l1": 2.0, "verdict": "best" if seed < 2 else "tie", "best": "clue",
              "runner_up": "ufido", "gap": 0.1, "gap_lo": 0.05, "gap_hi": 0.15}]
    references = {"aleatoric": {"mean_log_px_x0": -6.0, "n_explained": 10, "n_selected": 12, "n_test": 40}}
    return {"dataset": dataset, "config": {"seed": seed}, "references": references,
            "rows": rows, "at_equal_distance": at, "verdicts": calls, "seconds": {"gt_vaeac": 5400.0, "sweeps": 3.0},
            "study_switch": switch}


def test_seed_bands_average_each_sweep_value_over_seeds(tmp_path):
    runs = [_run("wine", s, off) for s, off in ((0, 0.0), (1, 0.3), (2, -0.3))] + [_run("credit", 0, 9.0)]
    table = efw.seed_bands(runs, "wine", "aleatoric")
    clue = table[(table["method"] == "clue") & (table["param"] == 1.0)].iloc[0]
    assert clue["n_seeds"] == 3
    assert clue["mean_delta_h"] == pytest.approx(1.2) and clue["mean_delta_h_min"] == pytest.approx(0.9)
    assert clue["mean_delta_h_max"] == pytest.approx(1.5) and clue["mean_l1"] == pytest.approx(2.0)
    assert efw.seed_bands(runs, "wine", "epistemic").empty  # no run explains that target
    path = efw.plot_study(runs, "wine", "aleatoric", tmp_path / "wine.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert efw.plot_study(runs, "wine", "epistemic", tmp_path / "none.png") is None


def test_off_axis_note_names_what_the_cut_axes_hide(tmp_path, monkeypatch):
    import matplotlib.axes

    from CLUE import evaluation as ev

    curves = {"sensitivity": [(-100.0, 0.1), (-3.0, 0.2), (-50.0, -2.0)], "clue": [(-4.0, 0.3)], "ufido": []}
    note = ev.off_axis_note(curves, left=-20.0, bottom=-0.5, y_label="dH")
    assert note == "sensitivity: 2 off axis, log p(x) down to -100\nsensitivity: 1 off axis, dH down to -2"
    assert ev.off_axis_note(curves, left=-200.0, bottom=-5.0) == ""  # nothing cut, nothing said

    runs = [_run("wine", s, 0.0) for s in range(2)]
    for run in runs:  # one sensitivity step far out of distribution, as on every dataset of the study
        run["rows"].append({"method": "sensitivity", "target": "aleatoric", "param": 9.0, "n_points": 10,
                            "mean_delta_h": 0.05, "delta_err": 0.0, "mean_log_px": -500.0, "mean_l1": 30.0})
    titles, original = [], matplotlib.axes.Axes.set_title

    def spy(self, label, *args, **kwargs):
        titles.append(label)
        return original(self, label, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", spy)
    assert efw.plot_study(runs, "wine", "aleatoric", tmp_path / "wine.png").exists()
    assert titles == ["sensitivity: 1 off axis, log p(x) down to -500"]  # its dH (0.05) is on the axis


def test_study_driver_names_runs_rescoring_switches_from_weights_and_summarises(tmp_path, monkeypatch):
    seen = []

    def fake_main(config):
        seen.append(config)
        switch = "default" if config.threshold_quantile is None else "top20"
        return _run(config.dataset, config.seed, 0.1 * config.seed, switch)

    monkeypatch.setattr(evaluate, "main", fake_main)
    assert study.main(["--datasets", "wine", "--seeds", "0", "1", "2", "--switch", "default", "top20",
                       "--preset", "tiny", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "out"),
                       "--publish-stages"]) == 0
    names = sorted(p.name for p in (tmp_path / "out" / "tiny").iterdir())
    assert names == ["summary.json", "wine_s0.json", "wine_s0_top20.json", "wine_s1.json", "wine_s1_top20.json",
                     "wine_s2.json", "wine_s2_top20.json"]
    defaults = [c for c in seen if c.threshold_quantile is None]
    switched = [c for c in seen if c.threshold_quantile == 0.8]
    assert all(c.stages == "train" and c.publish_stages for c in defaults)
    assert all(c.stages == "rebuild" and not c.publish_stages for c in switched)  # same trained stages
    assert [c.out for c in switched] == [str(tmp_path / "runs" / "tiny" / f"wine_s{s}_top20") for s in (0, 1, 2)]
    summary = json.loads((tmp_path / "out" / "tiny" / "summary.json").read_text())
    assert set(summary["switches"]) == {"default", "top20"} and len(summary["runs"]) == 6
    verdict = next(r for r in summary["switches"]["default"] if r["kind"] == "verdict")
    assert verdict["counts"] == {"clue": 2, "tie": 1}
    clue = next(r for r in summary["switches"]["default"] if r["kind"] == "method" and r["method"] == "clue")
    assert clue["n_seeds"] == 3 and clue["delta_h"] == pytest.approx(np.mean([1.2, 1.3, 1.4]))
    table = efw.study_verdicts(summary)
    assert table.iloc[0]["clue"] == 2 and table.iloc[0]["tie"] == 1
    assert len(efw.load_study("tiny", "top20", tmp_path / "out" / "tiny")) == 3
    means = efw.study_table(summary)
    clue_row = means[means["method"] == "clue"].iloc[0]
    assert clue_row["seeds"] == 3 and clue_row["delta_h"] == pytest.approx(1.3)
    assert (clue_row["lowest seed"], clue_row["highest seed"]) == pytest.approx((1.2, 1.4))
    overview = efw.study_overview(summary, "wine")
    assert overview.loc[("aleatoric", 2.0), "clue"] == pytest.approx(1.3)
    assert overview.loc[("aleatoric", 2.0), "seeds' calls"] == "clue 2, tie 1"
    runs = efw.study_runs_table(summary)
    assert runs.loc["wine_s1_top20", "aleatoric selected"] == "12 / 40" and runs.loc["wine_s0", "sweeps min"] == 0.1
    assert runs.loc["wine_s0", "total h"] == pytest.approx(1.5)


def test_study_passes_max_explained_to_every_run_and_keeps_the_preset_otherwise(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(evaluate, "main", lambda config: seen.append(config) or _run(config.dataset, config.seed,
                                                                                      0.1, "default"))
    common = ["--datasets", "wine", "--seeds", "0", "--preset", "paper", "--runs", str(tmp_path / "runs"),
              "--results", str(tmp_path / "out")]
    assert study.main(common) == 0 and seen[-1].max_explained == 1000
    assert study.main([*common, "--max-explained", "500"]) == 0 and seen[-1].max_explained == 500
    assert study.main([*common, "--max-explained", "none"]) == 0 and seen[-1].max_explained is None


def test_unknown_switch_is_a_clear_error(tmp_path):
    from common.errors import UserError

    with pytest.raises(UserError, match="unknown switch"):
        study.make_config("wine", 0, "bf16", "tiny", tmp_path, False)


def test_a_failed_run_does_not_stop_the_others_and_is_named_at_the_end(tmp_path, monkeypatch):
    from common.errors import UserError

    def fake_main(config):
        if config.seed == 1 and config.threshold_quantile is not None:
            raise UserError("the stages trained in x differ from the published eval_wine_s1\n  a.npz: sha256 ...")
        return _run(config.dataset, config.seed, 0.0, "default" if config.threshold_quantile is None else "top20")

    monkeypatch.setattr(evaluate, "main", fake_main)
    with pytest.raises(UserError, match=r"1 run\(s\) failed[\s\S]*wine_s1_top20: the stages trained in x differ"):
        study.main(["--datasets", "wine", "--seeds", "0", "1", "2", "--switch", "top20", "--preset", "tiny",
                    "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "out")])
    names = sorted(p.name for p in (tmp_path / "out" / "tiny").iterdir())
    assert names == ["summary.json", "wine_s0_top20.json", "wine_s2_top20.json"]  # seed 2 ran after the failure
    summary = json.loads((tmp_path / "out" / "tiny" / "summary.json").read_text())
    assert [r["name"] for r in summary["runs"]] == ["wine_s0_top20", "wine_s2_top20"]


def test_scorecard_counts_each_seed_and_distance_where_clue_meets_a_baseline():
    def call(l1, values, verdict, best=None):
        return {"target": "aleatoric", "l1": l1, "values": dict.fromkeys(values, 0.1), "verdict": verdict,
                "best": best}

    def run(seed, calls, switch="default"):
        return {"dataset": "wine", "config": {"seed": seed}, "verdicts": calls, "study_switch": switch}

    runs = [run(0, [call(0.5, ("ufido", "sensitivity"), "best", "sensitivity"),
                    call(2.0, ("clue", "ufido", "sensitivity"), "best", "clue"),
                    call(3.0, ("clue", "sensitivity"), "tie", "clue"),
                    call(8.0, ("sensitivity",), "alone", "sensitivity")]),
            run(1, [call(2.0, ("clue", "ufido"), "best", "ufido")]),
            run(0, [call(2.0, ("clue", "ufido"), "tie")], switch="top20")]
    card = efw.study_scorecard(runs)
    assert list(card.index) == [("wine", "default", "aleatoric"), ("wine", "top20", "aleatoric")]
    row = card.loc[("wine", "default", "aleatoric")]
    assert row["seeds"] == 2 and row["CLUE meets a baseline"] == 3  # the lone sensitivity at L1 8 is not counted
    assert (row["CLUE best"], row["U-FIDO best"], row["sensitivity best"], row["tie"]) == (1, 1, 0, 1)
    assert row["CLUE best where U-FIDO reaches"] == "1 of 2"
    assert row["baselines only"] == 1 and row["of them U-FIDO / sensitivity / tie"] == "0 / 1 / 0"
    top20 = card.loc[("wine", "top20", "aleatoric")]
    assert top20["tie"] == 1 and top20["CLUE best"] == 0 and top20["seeds"] == 1
    assert efw.study_scorecard([]).empty


@pytest.mark.parametrize("name", ["wine_s0", "wine_s0_original_config"])
def test_a_committed_runs_calls_are_recomputed_from_its_per_point_scores(name):
    """The per-point scores committed beside a study run (float32) give back its verdicts and overlap comparisons:
    anyone can recompute every interval."""
    import pandas as pd

    from CLUE import evaluation as ev

    folder = study.RESULTS / "paper"
    run = json.loads((folder / f"{name}.json").read_text())
    per_point = ev.load_point_scores(folder / "points" / f"{name}.npz")
    table = pd.DataFrame(run["rows"])
    boot = {"per_point": per_point, "task": "regression", "n_boot": run["config"]["n_boot"],
            "seed": run["config"]["seed"]}
    assert len(per_point) == len(table)
    again = ev.verdicts(table, **boot)
    assert [(v["target"], v["l1"], v["verdict"], v["best"]) for v in again] == \
        [(v["target"], v["l1"], v["verdict"], v["best"]) for v in run["verdicts"]]
    for new, old in zip(again, run["verdicts"]):
        if old.get("gap_lo") is not None:
            assert new["gap_lo"] == pytest.approx(old["gap_lo"], abs=1e-4)
            assert new["gap_hi"] == pytest.approx(old["gap_hi"], abs=1e-4)
    overlaps = ev.run_overlaps(table, **boot)
    assert [(o["target"], o["baseline"]) for o in overlaps] == [(o["target"], o["baseline"]) for o in run["overlaps"]]
    for new, old in zip(overlaps, run["overlaps"]):
        assert new["gap"] == pytest.approx(old["gap"], abs=1e-5)
        assert new["gap_lo"] == pytest.approx(old["gap_lo"], abs=1e-4)
        assert new["p_value"] == pytest.approx(old["p_value"], abs=2e-3)
