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


def test_more_labels_than_train_rows_warns_and_names_the_output_by_what_was_used(smol_tree, tmp_path, capsys):
    from conftest import SMOL_TRAIN, run_cli
    from test_labeled_smoothie import _copy

    from src import labeled_oracle, labeled_smoothie

    tree = _copy(smol_tree, tmp_path)
    code, out, err = run_cli(labeled_smoothie.main, tree.setting_args("--n_labels", 50, "--embedding_model",
                                                                      "all-MiniLM-L6-v2"), capsys)
    assert code == 0, err
    assert "--n_labels 50" in err and f"only {SMOL_TRAIN}" in err
    made = sorted(f.name for f in tree.folder.glob("labeled_smoothie_*"))
    assert len(made) == 1 and f"_{SMOL_TRAIN}_" in made[0] and "_50_" not in made[0], made
    code, out, err = run_cli(labeled_oracle.main, tree.setting_args("--n_labels", 50), capsys)
    assert code == 0 and f"only {SMOL_TRAIN}" in err
    import json

    data = json.loads(next(tree.folder.glob("labeled_oracle_*")).read_text())
    assert all(len(rows) == SMOL_TRAIN for rows in data["labeled_train_rows"])


def test_a_json_file_given_as_jsonl_says_jsonl_is_expected(tmp_path, capsys):
    import json

    from conftest import run_cli

    from src import route

    paths = _write_generations(tmp_path, {"a": ["x", "y"], "b": ["y", "z"], "c": ["z", "x"]})
    for name, text in (("pretty.json", json.dumps([{"embedding_input": "q1"}, {"embedding_input": "q2"}], indent=2)),
                       ("oneline.json", json.dumps([{"embedding_input": "q1"}, {"embedding_input": "q2"}]))):
        (tmp_path / name).write_text(text)
        code, _, err = run_cli(route.main, ["--generations", *paths, "--inputs", tmp_path / name, "--output",
                                            tmp_path / "o.json"], capsys)
        assert code == 2 and name in err and "JSONL" in err and "one JSON object per line" in err, err


def test_unwritable_outputs_are_one_line_naming_the_place(tmp_path, capsys):
    from conftest import minilm, run_cli

    from src import route

    minilm()
    paths = _write_generations(tmp_path, {"a": ["x", "y"], "b": ["y", "z"], "c": ["z", "x"]})
    afile = tmp_path / "plain.txt"
    afile.write_text("I am a file")
    for target, place in ((afile / "out.json", str(afile)), ("/sys/kernel/routed.json", "/sys/kernel")):
        code, _, err = run_cli(route.main, ["--generations", *paths, "--type", "sample_independent",
                                            "--embedding_model", "all-MiniLM-L6-v2", "--output", target], capsys)
        lines = err.strip().splitlines()
        assert code == 2 and place in lines[-1] and "Traceback" not in err and ".tmp" not in lines[-1], err


def test_an_unreachable_hub_is_one_quick_line_and_leaves_no_cache_folder(tmp_path):
    """Typed by hand, without the Makefile's HF_HUB_OFFLINE=1: the hub is looked up once, found
    unreachable, and the command stops with one line, without the hub client's retry loop."""
    paths = _write_generations(tmp_path, {"a": ["x", "y"], "b": ["y", "z"], "c": ["z", "x"]})
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["SMOOTHIE_CACHE_DIR"] = str(tmp_path / "cache")
    proc = subprocess.run([sys.executable, "-m", "src.route", "--generations", *paths, "--type", "sample_independent",
                           "--embedding_model", "no-such-org/no-such-embedder", "--output", str(tmp_path / "o.json")],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert "Retrying" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "no-such-org/no-such-embedder" in errors[0] and "--embedding_model" in errors[0]
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.suffix in (".arrays", ".sqlite")]
    assert leftovers == [], leftovers
