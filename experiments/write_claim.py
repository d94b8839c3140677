"""Writes the README's statement of the paper's claim (between ``<!-- claim:start -->`` and ``<!-- claim:end -->``)
and ``experiments/README.md``'s tables of every overlap's call (``<!-- overlaps:start -->`` ... ``end``) and of the
grid's calls (``<!-- grid:start -->`` ... ``end``) from the committed study runs
(``experiments/evaluation_framework.claim_paragraph``, ``overlap_calls_markdown``, ``grid_calls_markdown``);
``--check`` only compares.

Usage::

    python experiments/write_claim.py          # after committing new study runs
    python experiments/write_claim.py --check  # exit 1 when the README says something the runs do not
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from experiments import evaluation_framework as efw  # noqa: E402

START, END = "<!-- claim:start -->", "<!-- claim:end -->"
TABLE_START, TABLE_END = "<!-- overlaps:start -->", "<!-- overlaps:end -->"
GRID_START, GRID_END = "<!-- grid:start -->", "<!-- grid:end -->"


FIGURE = "experiments/figures/claim_scorecard.png"


def _runs() -> list[dict]:
    return [r for switch in ("default", "original_config") for r in efw.load_study("paper", switch)]


def expected_block() -> str:
    return efw.claim_paragraph(efw.claim_numbers(_runs())) + f"\n\n![the calls, per dataset and target]({FIGURE})"


def expected_table() -> str:
    return efw.overlap_calls_markdown(_runs())


def expected_grid() -> str:
    return efw.grid_calls_markdown(_runs())


def current_block(readme: str, start: str = START, end: str = END) -> str:
    return readme.split(start, 1)[1].split(end, 1)[0].strip()


def _replace_block(text: str, block: str, start: str, end: str) -> str:
    head, rest = text.split(start, 1)
    return f"{head}{start}\n{block}\n{end}{rest.split(end, 1)[1]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python experiments/write_claim.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    path, table_path = ROOT / "README.md", ROOT / "experiments" / "README.md"
    readme, experiments_readme = path.read_text(), table_path.read_text()
    block, table, grid = expected_block(), expected_table(), expected_grid()
    if args.check:
        same = (current_block(readme) == block
                and current_block(experiments_readme, TABLE_START, TABLE_END) == table
                and current_block(experiments_readme, GRID_START, GRID_END) == grid)
        return 0 if same else 1
    efw.plot_claim(_runs(), ROOT / FIGURE)
    path.write_text(_replace_block(readme, block, START, END))
    experiments_readme = _replace_block(experiments_readme, table, TABLE_START, TABLE_END)
    table_path.write_text(_replace_block(experiments_readme, grid, GRID_START, GRID_END))
    return 0


if __name__ == "__main__":
    sys.exit(main())
