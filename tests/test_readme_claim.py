"""The README's statement of the paper's claim is what the committed study runs say, number for number."""

from __future__ import annotations

import importlib.util

from common.io import PROJECT_ROOT


def _module():
    spec = importlib.util.spec_from_file_location("write_claim", PROJECT_ROOT / "experiments" / "write_claim.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_states_the_claim_as_the_committed_runs_give_it():
    module = _module()
    readme = (PROJECT_ROOT / "README.md").read_text()
    block = module.current_block(readme)
    assert block == module.expected_block(), "run python experiments/write_claim.py after committing study runs"
    paragraph, figure = block.split("\n\n")
    assert len(paragraph.splitlines()) <= 8 and figure.startswith("![")


def test_the_claim_numbers_move_with_the_runs():
    """A changed call in one run changes the statement (the check can fail)."""
    module = _module()
    efw = module.efw
    runs = efw.load_study("paper", "default")
    before = efw.claim_paragraph(efw.claim_numbers(runs))
    for call in runs[0]["verdicts"]:
        if len(call["values"]) > 1 and "clue" in call["values"]:
            call.update(best="clue", verdict="best")
    assert efw.claim_paragraph(efw.claim_numbers(runs)) != before
