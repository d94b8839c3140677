"""benchmarks/side_by_side.py: our side in --quick mode on one small workload, and the JSON it writes.

The original's side runs only when a checkout of cambridge-mlg/CLUE (``CLUE_ORIGINAL_CHECKOUT``) and a Python with
torch (``CLUE_ORIGINAL_PYTHON``, or this interpreter if it has torch) are provided; it is skipped otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "side_by_side.py"
WORKLOAD = "clue/compas/n10/exact"
# Small and quick: 10 COMPAS points, one thread, no warm-up (the timed call traces), a small reference matmul.
ARGS = ["--quick", "--warmup", "0", "--threads", "1", "--workloads", WORKLOAD, "--points", "10", "--matmul-n", "256"]
STATS = {"seconds", "median_s", "min_s", "max_s", "q1_s", "q3_s", "iqr_s", "gflops", "matmul_gflops",
         "fraction_of_matmul", "last_call"}


def _module(path: Path = SCRIPT):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tmp_path, extra: list[str]) -> dict:
    out = tmp_path / "side_by_side.json"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, str(SCRIPT), *ARGS, *extra, "--out", str(out)], capture_output=True,
                          text=True, env=env, cwd=SCRIPT.parent.parent, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def _check_schema(result: dict, sides: list[str]) -> dict:
    assert result["benchmark"] == "side_by_side" and result["quick"] is True and result["repeats"] == 1
    assert result["sides"] == sides and "not a measurement" in result["note"]
    assert result["warmup"] == {"ours": 0, "original": 0}
    machine = result["machine"]
    assert machine["cpu_model"] and isinstance(machine["instruction_sets"], list) and machine["cpus_allowed"]
    assert len(machine["load_average_start"]) == 3 and len(machine["load_average_end"]) == 3
    assert set(result["flop_formulas"]) >= {"clue", "sghmc_epoch", "vae_epoch", "ufido", "matmul"}
    (run,) = result["runs"]
    assert run["threads"] == 1 and len(run["cores"]) == 1
    assert set(run["workers"]) == set(sides) and set(run["matmul_gflops"]) == set(sides)
    ours = run["workers"]["ours"]
    assert ours["tensorflow"] and ours["tf_intra_op_threads"] == 1 and ours["affinity"] == run["cores"]
    (w,) = run["workloads"]
    assert "errors" not in w, w.get("errors")
    assert (w["name"], w["kind"], w["dataset"], w["n_points"], w["gradient"]) == (WORKLOAD, "clue", "compas", 10,
                                                                                  "exact")
    assert w["settings"] == {"lr": 0.1, "min_steps": 3, "max_steps": 50, "n_early_stop": 3, "batch_size": 256,
                             "lam": 2.0}
    terms = w["flop_terms"]
    assert terms["n"] == 10 and terms["T"] == 50 and terms["S"] == 53
    expected = 10 * 50 * 4 * (terms["M_dec"] + 53 * terms["M_bnn"]) + 10 * 2 * terms["M_dec"]
    assert w["gflop"] == pytest.approx(expected / 1e9)
    assert set(w["sides"]) == set(sides)
    assert set(w["sides"]["ours"]["variants"]) == {"identical_work", "early_stop"}
    for side in sides:
        rec = w["sides"][side]
        assert rec["matmul_gflops"] > 0 and rec["setup_s"] >= 0
        for s in rec["variants"].values():
            assert STATS <= set(s) and len(s["seconds"]) == 1
            assert s["min_s"] == s["median_s"] == s["max_s"] > 0 and s["iqr_s"] == 0
            assert s["gflops"] == pytest.approx(w["gflop"] / s["median_s"])
            assert s["fraction_of_matmul"] == pytest.approx(s["gflops"] / rec["matmul_gflops"])
    return w


def test_the_flop_count_and_the_workload_list():
    sbs = _module()
    names = [s["name"] for s in sbs.all_workloads([100, 1000], [100], [100])]
    for name in ("clue/lsat/n100/exact", "clue/compas/n1000/orig", "clue/mnist_sized/n100/orig", "sghmc_epoch/lsat",
                 "vae_epoch/lsat", "ufido/compas/n100/exact"):
        assert name in names
    # LSAT: BNN 12-200-200-2 and the 300 x 3 decoder, by hand
    flops, terms = sbs.workload_flops({"kind": "clue", "dataset": "lsat", "n_points": 1, "x_dim": 12,
                                       "settings": {"max_steps": 1}})
    assert (terms["M_bnn"], terms["M_dec"]) == (12 * 200 + 200 * 200 + 400, 4 * 300 + 2 * 300**2 + 300 * 12)
    assert flops == 4 * (terms["M_dec"] + 53 * terms["M_bnn"]) + 2 * terms["M_dec"]
    # U-FIDO's 30 iterations draw 20 masks for the first 11 and 10 after
    _, terms = sbs.workload_flops({"kind": "ufido", "dataset": "compas", "n_points": 1, "x_dim": 17,
                                   "settings": dict(sbs.UFIDO)})
    assert terms["P"] == 11 * 20 + 19 * 10


def test_our_side_in_quick_mode_writes_the_schema(tmp_path, parity_dir):
    result = _run(tmp_path, ["--sides", "ours", "--parity", str(parity_dir)])
    w = _check_schema(result, ["ours"])
    assert result["original"] is None and "speedup" not in w


def test_both_sides_in_quick_mode(tmp_path, parity_dir):
    checkout = os.environ.get("CLUE_ORIGINAL_CHECKOUT")
    if not checkout or not (Path(checkout) / "interpret" / "CLUE.py").is_file():
        pytest.skip("the original's side needs a checkout of cambridge-mlg/CLUE at 3aaea12: git clone "
                    "https://github.com/cambridge-mlg/CLUE && git -C CLUE checkout 3aaea12, then set "
                    "CLUE_ORIGINAL_CHECKOUT=<that folder>")
    python = os.environ.get("CLUE_ORIGINAL_PYTHON") or sys.executable
    if subprocess.run([python, "-c", "import torch, numpy"], capture_output=True).returncode != 0:
        pytest.skip(f"{python} cannot import torch: install the project's torch extra (torch==2.13.0, CPU) or set "
                    "CLUE_ORIGINAL_PYTHON to a Python with torch and numpy")
    result = _run(tmp_path, ["--original", checkout, "--original-python", python, "--parity", str(parity_dir)])
    w = _check_schema(result, ["ours", "original"])
    assert result["original"]["commit"] in (None, "3aaea125f626325b2446bc37bb7ed664d095efb4")
    assert set(w["sides"]["original"]["variants"]) == {"all_steps"}
    assert result["runs"][0]["workers"]["original"]["torch_threads"] == 1
    assert set(w["speedup"]) == {"identical_work", "early_stop"}


def test_every_readme_speed_figure_is_the_committed_side_by_side_json():
    table = _module(SCRIPT.with_name("side_by_side_table.py"))
    result = json.loads(table.RESULTS.read_text())
    assert not result["quick"] and result["sides"] == ["ours", "original"]
    for kind, path in table.READMES.items():
        assert table.current_block(path.read_text()) == table.block(kind, result), \
            f"{path.name}: run python benchmarks/side_by_side_table.py --write"


def test_the_speed_table_moves_with_the_json(tmp_path):
    """A changed timing changes the README block (the check can fail), and a --quick run makes no table."""
    table = _module(SCRIPT.with_name("side_by_side_table.py"))
    result = json.loads(table.RESULTS.read_text())
    before = table.block("root", result)
    w = next(w for w in result["runs"][0]["workloads"] if w["name"] == "clue/lsat/n100/exact")
    w["speedup"]["early_stop"]["median_ratio"] *= 2
    assert table.block("root", result) != before
    quick = tmp_path / "side_by_side_quick.json"
    quick.write_text(json.dumps({**result, "quick": True}))
    with pytest.raises(SystemExit, match="smoke run"):
        table.main(["--results", str(quick)])
