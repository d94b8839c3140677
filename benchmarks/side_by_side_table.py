"""The README tables of ``results/side_by_side.json``: every speed figure against the original comes from here.

Usage (from the project root)::

    python benchmarks/side_by_side_table.py            # print the tables
    python benchmarks/side_by_side_table.py --write    # rewrite the marked blocks of README.md and benchmarks/README.md

The blocks sit between ``<!-- side-by-side:start -->`` and ``<!-- side-by-side:end -->``; ``tests/test_side_by_side.py``
checks that both are what the committed JSON gives.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "side_by_side.json"
READMES = {"root": HERE.parent / "README.md", "benchmarks": HERE / "README.md"}
START, END = "<!-- side-by-side:start -->", "<!-- side-by-side:end -->"
COMMAND = "python benchmarks/side_by_side.py --original PATH/TO/CLUE --original-python PATH/TO/torch/python"
# the rows of the root README's short table: (workload, our variant)
HEADLINE = (("clue/lsat/n100/exact", "early_stop"), ("clue/compas/n100/exact", "early_stop"),
            ("clue/lsat/n100/exact", "identical_work"), ("clue/compas/n100/exact", "identical_work"),
            ("clue/lsat/n1000/exact", "identical_work"), ("sghmc_epoch/lsat", "sampling_epoch"),
            ("vae_epoch/lsat", "xla"))
LABELS = {"identical_work": "identical work", "early_stop": "early stopping", "xla": "XLA", "graph": "graph",
          "sampling_epoch": "", "sweep_value": ""}


def _workloads(result: dict[str, Any], threads: int) -> dict[str, dict[str, Any]]:
    for run in result["runs"]:
        if run.get("threads") == threads and "workloads" in run:
            return {w["name"]: w for w in run["workloads"]}
    return {}


def _rows(w: dict[str, Any]):
    """(our variant, the original's median, ours, the ratio of medians, paired min-max, fractions of matmul)."""
    sides = w.get("sides", {})
    orig = next(iter(sides.get("original", {}).get("variants", {}).values()), None)
    for variant, ours in sides.get("ours", {}).get("variants", {}).items():
        speed = w.get("speedup", {}).get(variant)
        if orig is None or speed is None:
            continue
        yield variant, orig, ours, speed


def _frac(stats: dict[str, Any]) -> str:
    value = stats.get("fraction_of_matmul")
    return "-" if value is None else f"{value:.2f}"


def _per_row_step(w: dict[str, Any], stats: dict[str, Any]) -> str:
    terms = w.get("flop_terms", {})
    if w.get("kind") != "clue" or not terms.get("n") or not terms.get("T"):
        return "-"
    return f"{1e3 * stats['median_s'] / (terms['n'] * terms['T']):.3f}"


def full_table(result: dict[str, Any]) -> str:
    """Every workload, variant and thread count: medians, the speed-up with its per-round range, the matmul share."""
    lines = ["| threads | workload | ours | original s | ours s | speed-up (per-round range) | ms per row-step "
             "(original / ours) | share of matmul rate (original / ours) |",
             "|---|---|---|---|---|---|---|---|"]
    for run in result["runs"]:
        if "workloads" not in run:
            continue
        for name, w in _workloads(result, run["threads"]).items():
            for variant, orig, ours, speed in _rows(w):
                lines.append(
                    f"| {run['threads']} | {name} | {LABELS.get(variant, variant) or '-'} | {orig['median_s']:.3g} "
                    f"| {ours['median_s']:.3g} | {speed['median_ratio']:.2f}x ({speed['paired_min']:.2f}-"
                    f"{speed['paired_max']:.2f}) | {_per_row_step(w, orig)} / {_per_row_step(w, ours)} "
                    f"| {_frac(orig)} / {'-' if variant == 'early_stop' else _frac(ours)} |")
    return "\n".join(lines)


def headline_table(result: dict[str, Any]) -> str:
    """The root README's rows: one thread, the exact gradient, the workloads the speed targets name."""
    work = _workloads(result, 1)
    lines = ["| one thread, same core, one run | original s | ours s | speed-up |", "|---|---|---|---|"]
    for name, variant in HEADLINE:
        for v, orig, ours, speed in _rows(work.get(name, {})):
            if v == variant:
                label = name + (f", {LABELS[v]}" if LABELS.get(v) else "")
                lines.append(f"| {label} | {orig['median_s']:.3g} | {ours['median_s']:.3g} | "
                             f"{speed['median_ratio']:.1f}x |")
    return "\n".join(lines)


def machine_line(result: dict[str, Any]) -> str:
    m = result["machine"]
    rates = [f"{r['threads']} thread{'s' if r['threads'] > 1 else ''}: TF {r['matmul_gflops'].get('ours', 0):.0f} "
             f"/ torch {r['matmul_gflops'].get('original', 0):.0f} GFLOP/s"
             for r in result["runs"] if "matmul_gflops" in r]
    return (f"{m['cpu_model']} ({', '.join(m['instruction_sets'][-3:])}), {result['repeats']} interleaved rounds, "
            f"medians; same-run float32 matmul rate, {'; '.join(rates)}.")


def block(kind: str, result: dict[str, Any]) -> str:
    source = "[`results/side_by_side.json`](results/side_by_side.json)" if kind == "benchmarks" else \
        "[`benchmarks/results/side_by_side.json`](benchmarks/results/side_by_side.json)"
    table = full_table(result) if kind == "benchmarks" else headline_table(result)
    return f"{START}\n{table}\n\n`{COMMAND}` ({source}): {machine_line(result)}\n{END}"


def current_block(text: str) -> str | None:
    if START not in text or END not in text:
        return None
    return text[text.index(START):text.index(END) + len(END)]


def write(result: dict[str, Any]) -> list[Path]:
    changed = []
    for kind, path in READMES.items():
        text = path.read_text()
        old = current_block(text)
        if old is None:
            raise SystemExit(f"{path} has no {START} ... {END} block: add the two markers where the table goes")
        new = block(kind, result)
        if new != old:
            path.write_text(text.replace(old, new))
            changed.append(path)
    return changed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--write", action="store_true", help="rewrite the READMEs' marked blocks")
    args = parser.parse_args(argv)
    result = json.loads(args.results.read_text())
    if result.get("quick"):
        raise SystemExit(f"{args.results} is a --quick smoke run, not a measurement: no table is made from it")
    if args.write:
        for path in write(result):
            print(f"rewrote {path}")
    else:
        print(block("benchmarks", result))


if __name__ == "__main__":
    main()
