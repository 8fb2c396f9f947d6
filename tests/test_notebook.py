"""The heatmap notebook runs from top to bottom and shows images."""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient

from conftest import REPO


def test_heatmap_notebook_runs_and_draws() -> None:
    notebook = nbformat.read(REPO / "notebooks" / "heatmaps.ipynb", as_version=4)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(REPO / "notebooks")}},
    ).execute()
    outputs = [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # whole-query map, word grid, evidence boxes, scanned letter
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "indexed 6 pages" in text and "scanned_letter.pdf" in text
