"""Writes the README's statement of the paper's claim (between ``<!-- claim:start -->`` and ``<!-- claim:end -->``)
from the committed study runs (``experiments/evaluation_framework.claim_paragraph``); ``--check`` only compares.

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


FIGURE = "experiments/figures/claim_scorecard.png"


def _runs() -> list[dict]:
    return [r for switch in ("default", "original_config") for r in efw.load_study("paper", switch)]


def expected_block() -> str:
    return efw.claim_paragraph(efw.claim_numbers(_runs())) + f"\n\n![the calls, per dataset and target]({FIGURE})"


def current_block(readme: str) -> str:
    return readme.split(START, 1)[1].split(END, 1)[0].strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python experiments/write_claim.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    path = ROOT / "README.md"
    readme = path.read_text()
    block = expected_block()
    if args.check:
        return 0 if current_block(readme) == block else 1
    efw.plot_claim(_runs(), ROOT / FIGURE)
    head, rest = readme.split(START, 1)
    path.write_text(f"{head}{START}\n{block}\n{END}{rest.split(END, 1)[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
