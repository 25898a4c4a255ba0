"""Both tutorials run top to bottom offline, and their saved outputs are not stale."""

from __future__ import annotations

import copy

import nbformat
import pytest
from conftest import ROOT
from nbclient import NotebookClient


def _shape(cell) -> list:
    """What a code cell shows: output kinds and mime types, not their exact text. stderr is left
    out: it carries diagnostics (a warning about a row whose error estimate sits at zero can
    come and go with the last bits of the embeddings), not results."""
    out = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            if o["name"] == "stdout":
                out.append(("stream", "stdout"))
        elif o["output_type"] in ("display_data", "execute_result"):
            out.append((o["output_type"], tuple(sorted(o["data"]))))
        else:
            out.append((o["output_type"],))
    return sorted(set(out))


@pytest.mark.parametrize("name", ["algorithm.ipynb", "tutorial.ipynb"])
def test_notebook_executes_and_matches_saved_outputs(name):
    path = ROOT / "tutorials" / name
    saved = nbformat.read(path, as_version=4)
    fresh = copy.deepcopy(saved)
    for cell in fresh.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    NotebookClient(fresh, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "tutorials")}}).execute()
    code_saved = [c for c in saved.cells if c.cell_type == "code"]
    code_fresh = [c for c in fresh.cells if c.cell_type == "code"]
    assert len(code_saved) == len(code_fresh)
    for i, (a, b) in enumerate(zip(code_saved, code_fresh)):
        assert a.execution_count == i + 1, f"cell {i} of the saved {name} was not run in order"
        assert a.outputs, f"cell {i} of the saved {name} has no outputs"
        assert not [o for o in b.outputs if o["output_type"] == "error"], b.outputs
        assert _shape(a) == _shape(b), f"cell {i}: saved outputs {_shape(a)} but a fresh run gives {_shape(b)}"
