"""experiments/authors_credit.py: the authors' printed Credit outputs as transcribed, and our runs beside them."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))

import authors_credit as ac  # noqa: E402

from common.io import load_json  # noqa: E402

SOURCE = ROOT.parent / "shared" / "reference" / "authors-credit-evaluation.md"
ROW_NAMES = {"clue": "CLUE", "sensitivity": "Sensitivity", "ufido": "U-FIDO"}


def _numbers(text: str) -> list[float]:
    return [float(v.replace("−", "-")) for v in re.findall(r"[−-]?\d+\.\d+", text)]


def _table_rows(source: str, header: str) -> dict[str, list[str]]:
    """The cells of the method rows of the table that follows the line starting with ``header``."""
    block = source[source.index(header):]
    rows = {}
    for line in block.splitlines()[1:]:
        if line.startswith("| ") and not line.startswith("| method"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            for key, name in ROW_NAMES.items():
                if cells[0].startswith(name) and key not in rows:
                    rows[key] = cells[1:]
        elif rows and not line.startswith("|"):
            break
    return rows


@pytest.mark.skipif(not SOURCE.is_file(), reason=f"the authors' outputs are not at {SOURCE}")
def test_the_transcription_matches_the_authors_printed_outputs():
    source = SOURCE.read_text()
    assert f"Points above threshold: {ac.AUTHORS['aleatoric']['n_selected']} (aleatoric), " \
           f"{ac.AUTHORS['epistemic']['n_selected']} (epistemic), out of {ac.AUTHORS['n_test']}" in source
    assert f"mean GT (VAEAC) aleatoric entropy {ac.AUTHORS['aleatoric']['h_x0']:.4f}" in source
    assert f"BNN error against GT labels {ac.AUTHORS['epistemic']['error_x0']:.4f}" in source
    log_px = _numbers(source[source.index("GT log p(x): aleatoric subset"):].splitlines()[0])
    assert log_px[0] == ac.AUTHORS["aleatoric"]["log_px_x0"] and log_px[2] == ac.AUTHORS["epistemic"]["log_px_x0"]
    for target, header in (("aleatoric", "| method (sweep order)"), ("epistemic", "| method | error after")):
        rows = _table_rows(source, header)
        assert set(rows) == set(ac.METHODS)
        for method, printed in rows.items():
            values = [v for v in _numbers(printed[0]) if 0 <= v <= 1]
            mine = ac.AUTHORS[target]["after"][method]
            assert values[:len(mine)] == mine, (target, method)  # a prefix: what follows is "≈" or "flat"
            assert min(values) == min(mine), (target, method)  # so the best gain is the printed one


def test_a_runs_best_gain_is_the_largest_mean_gain_of_its_sweep():
    name = "credit_s0"
    path = ac.STUDY / f"{name}.json"
    if not path.is_file():
        pytest.skip(f"{path} is not committed")
    results = load_json(path)
    table = ac.table()
    for target, key in (("aleatoric", "mean_delta_h"), ("epistemic", "delta_err")):
        rows = [r for r in results["rows"] if r["method"] == "ufido" and r["target"] == target]
        best = max(r[key] for r in rows)
        got = table["runs"][name][target]["methods"]["ufido"]
        assert got["best_gain"] == best and got["reached"] == pytest.approx(table["runs"][name][target]["start"] - best)
    authors = table["authors"]["aleatoric"]["methods"]["clue"]
    assert authors["best_gain"] == pytest.approx(0.5679 - 0.080) and authors["reached"] == 0.080
    assert "| authors (printed) | 46.1% |" in ac.markdown(table)
