"""Write a notebook from a list of (kind, source) cells: the one place notebooks are created from.

Usage from Python: ``write_notebook(path, [("md", "# Title"), ("params", "profile = 'quick'"), ("code", "...")])``.
The ``params`` cell is tagged ``parameters`` so papermill can inject a profile.
"""

from __future__ import annotations

import nbformat


def write_notebook(path, cells) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, source) in enumerate(cells):
        source = source.strip("\n")
        if kind == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(source, id=f"cell-{i}"))
        else:
            cell = nbformat.v4.new_code_cell(source, id=f"cell-{i}")  # stable ids: regenerating gives no diff
            if kind == "params":
                cell.metadata["tags"] = ["parameters"]
            nb.cells.append(cell)
    nbformat.validate(nb)
    nbformat.write(nb, str(path))
