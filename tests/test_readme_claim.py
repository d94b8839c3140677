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


def test_the_experiments_readme_lists_every_overlap_call_of_the_committed_runs():
    module = _module()
    text = (PROJECT_ROOT / "experiments" / "README.md").read_text()
    table = module.current_block(text, module.TABLE_START, module.TABLE_END)
    assert table == module.expected_table(), "run python experiments/write_claim.py after committing study runs"
    assert "| COMPAS | aleatoric | U-FIDO |" in table and "| Wine | epistemic | sensitivity |" in table
    grid = module.current_block(text, module.GRID_START, module.GRID_END)
    assert grid == module.expected_grid(), "run python experiments/write_claim.py after committing study runs"
    assert len(grid.splitlines()) == 2 + 8  # header, rule, 4 datasets x 2 targets


def test_the_overlap_table_moves_with_the_runs():
    """A seed whose comparison turns significant in CLUE's favor reads so (the check can fail)."""
    efw = _module().efw
    runs = efw.load_study("paper", "default")
    before = efw.overlap_calls_markdown(runs)
    scored = next(r for r in runs if r.get("overlaps"))
    first = scored["overlaps"][0]
    first.update(measurable=True, gap=1.0, gap_lo=0.5, gap_hi=1.5, p_value=0.0)
    after = efw.overlap_calls_markdown(runs)
    assert after != before
    label = "COMPAS" if scored["dataset"] == "compas" else scored["dataset"].title()
    against = "U-FIDO" if first["baseline"] == "ufido" else first["baseline"]
    row = next(line for line in after.splitlines() if line.startswith(f"| {label} | {first['target']} | {against} |"))
    assert f"s{scored['config']['seed']}: CLUE better" in row
