"""A new user's first hour (issue #20): the sharp edges found by trying the README as written."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import ROOT

COMMANDS = ["route", "serve", "replay", "run_smoothie", "get_generations", "labeled_smoothie", "labeled_oracle",
            "labeled_knn", "make_dataset", "evaluate.evaluate", "report", "pick_random_baseline", "mbr_baseline"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_states_each_default_once_and_never_none(command):
    proc = subprocess.run([sys.executable, "-m", f"src.{command}", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "(default: None)" not in text
    assert not re.search(r"default:[^()]*\)\s*\(default:", text), text


def _write_generations(folder, outputs: dict[str, list[str]]) -> list[str]:
    import json

    paths = []
    for name, gens in outputs.items():
        path = folder / f"{name}.json"
        path.write_text(json.dumps({"generations": gens}))
        paths.append(str(path))
    return paths


def test_identical_generator_files_are_named_and_warnings_are_one_line(tmp_path):
    from conftest import minilm

    minilm()
    answers = ["Paris", "Four", "Blue sky", "A dog", "Seven days"]
    paths = _write_generations(tmp_path, {"a": answers, "b": ["Lyon", "Five", "Red", "A cat", "Six"],
                                          "c": list(answers)})
    proc = subprocess.run([sys.executable, "-m", "src.route", "--generations", *paths, "--type", "sample_independent",
                           "--embedding_model", "all-MiniLM-L6-v2", "--output", str(tmp_path / "out.json")],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "warning" in line.lower()]
    assert any("a.json" in line and "c.json" in line and "identical" in line for line in lines), proc.stderr
    assert "smoothie.py" not in proc.stderr and not any(line.startswith("  ") for line in proc.stderr.splitlines())
    assert all(line.startswith("src.route: warning: ") for line in lines), lines
