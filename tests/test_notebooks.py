"""Both tutorials run top to bottom offline, and their saved outputs are not stale."""

from __future__ import annotations

import copy
import math
import re
import tempfile

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


_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def _text(cell) -> str:
    """What a code cell prints to stdout and shows as its value, as text."""
    parts = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream" and o["name"] == "stdout":
            parts.append(o["text"])
        elif o["output_type"] == "execute_result":
            parts.append(o["data"].get("text/plain", ""))
    return re.sub(re.escape(tempfile.gettempdir()) + r"/\S+", "<tmp path>", "".join(parts))  # a fresh folder per run


def _same_numbers(saved: str, fresh: str) -> bool:
    """The same text with the same numbers (to 1e-6 relative, 1e-9 absolute: rounding residues
    such as a 1e-16 difference may vary between machines, results may not)."""
    if _NUMBER.sub("#", saved) != _NUMBER.sub("#", fresh):
        return False
    a, b = [float(x) for x in _NUMBER.findall(saved)], [float(x) for x in _NUMBER.findall(fresh)]
    return all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9) for x, y in zip(a, b))


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
        assert _same_numbers(_text(a), _text(b)), (
            f"cell {i} of {name}: the saved output is stale; rerun python tutorials/tools/execute.py tutorials/{name}\n"
            f"saved: {_text(a)[:400]!r}\nfresh: {_text(b)[:400]!r}")


def test_stale_numbers_are_caught():
    assert _same_numbers("accuracy 0.431, rows 12", "accuracy 0.431, rows 12")
    assert not _same_numbers("accuracy 0.431", "accuracy 0.49")
    assert _same_numbers("max relative difference: 2.2e-16", "max relative difference: 4.4e-16")
