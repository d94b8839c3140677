"""Executes a notebook as the committed run (``publish = True``: figures and results into the tracked
``experiments/figures`` and ``experiments/results``), in place, then removes the parameters cell papermill
injected, so that the committed notebook run as the README says (no parameters) writes only under ``runs/``.

Usage::

    python experiments/publish_notebook.py clues_tabular [-p NAME VALUE ...]
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def strip_injected(path: Path) -> int:
    """Removes papermill's ``injected-parameters`` cells from a notebook; returns how many there were."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    kept = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    removed = len(nb.cells) - len(kept)
    if removed:
        nb.cells = kept
        nbformat.write(nb, path)
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python experiments/publish_notebook.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="notebook name in experiments/, with or without .ipynb")
    parser.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="another parameter (a Python literal, or a string)")
    args = parser.parse_args(argv)
    import papermill

    path = ROOT / "experiments" / (args.name if args.name.endswith(".ipynb") else args.name + ".ipynb")
    if not path.exists():
        parser.error(f"{path} does not exist")
    parameters = {"publish": True}
    for name, value in args.p:
        try:
            parameters[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parameters[name] = value
    papermill.execute_notebook(str(path), str(path), parameters=parameters, cwd=str(ROOT), kernel_name="python3")
    strip_injected(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
