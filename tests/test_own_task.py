"""A user's own task through every command, the Python API, and the sharp edges around them."""

from __future__ import annotations

import importlib
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, minilm, run_cli

README = ROOT / "docs" / "own_task.md"  # the own-task example lives there


def _readme_example() -> list[str]:
    text = README.read_text()
    block = text.split("<!-- own-task-example -->", 1)[1].split("<!-- /own-task-example -->", 1)[0]
    return [line for line in block.strip().strip("`").splitlines() if line and not line.startswith("bash")]


@pytest.fixture(scope="module")
def own_task(tmp_path_factory):
    """The README's own-task example, run line by line in a fresh folder, exactly as written
    (python -m lines in-process, the shell line through bash)."""
    minilm()
    root = tmp_path_factory.mktemp("own")
    shutil.copytree(ROOT / "tutorials" / "own_task", root / "tutorials" / "own_task")
    cwd, env = os.getcwd(), {k: os.environ.pop(k, None) for k in ("RESULTS_DIR", "HF_DATASETS_DIR")}
    os.chdir(root)
    try:
        for line in _readme_example():
            if line.startswith("python -m "):
                argv = shlex.split(line)
                module = importlib.import_module(argv[2])
                assert module.main(argv[3:]) is None, line
            else:
                subprocess.run(["bash", "-c", line], check=True)
    finally:
        os.chdir(cwd)
        for k, v in env.items():
            if v is not None:
                os.environ[k] = v
    return root


def test_readme_example_runs_through_every_command(own_task):
    folder = own_task / "results" / "myqa" / "mine"
    scores = json.loads((folder / "scores.json").read_text())["squad_acc"]
    assert set(scores["ensemble"]) == {"careful", "chatty", "guesser", "verbose"}
    assert {"pick_random", "labeled_oracle", "labeled_knn", "mbr"} <= set(scores)
    assert len(scores["smoothie"]) == 2
    assert (folder / "report.md").is_file()
    # clean: false in the config: the chatty model's second-line answers count
    rows = [json.loads(x) for x in (own_task / "smoothie_data" / "datasets" / "myqa_test.jsonl").read_text().splitlines()]
    chatty = json.loads((folder / "chatty_test.json").read_text())["generations"]
    want = np.mean([r["reference"].lower() in g.lower() for r, g in zip(rows, chatty)])
    assert scores["ensemble"]["chatty"] == pytest.approx(want) and want > 0.5
    # the split follows file order (the answers line up)
    source = [json.loads(x) for x in (ROOT / "tutorials" / "own_task" / "qa.jsonl").read_text().splitlines()]
    assert [r["embedding_input"] for r in rows] == [r["question"] for r in source[12:]]


def test_cleaning_switch_changes_scoring(own_task, capsys):
    """First-line cleaning would score the chatty model's answers as wrong: the config's
    clean: false keeps them, and --no_clean is the same switch for one run."""
    from src.evaluate import evaluate

    cfg = own_task / "tutorials" / "own_task" / "myqa.yaml"
    cleaned = own_task / "cleaned.yaml"
    cleaned.write_text(cfg.read_text().replace("clean: false", "clean: true").replace("source: qa.jsonl",
                                                                                       f"source: {cfg.parent / 'qa.jsonl'}"))
    shutil.copytree(own_task / "results" / "myqa", own_task / "results" / "cleaned", dirs_exist_ok=True)
    base = ["--results_dir", own_task / "results", "--data_dir", own_task / "smoothie_data" / "datasets",
            "--model_group", "mine", "--multi_model"]
    for split in ("train", "test"):
        shutil.copy(own_task / "smoothie_data" / "datasets" / f"myqa_{split}.jsonl",
                    own_task / "smoothie_data" / "datasets" / f"cleaned_{split}.jsonl")
    for f in (own_task / "results" / "cleaned" / "mine").glob("*_mine_*test.json"):
        f.unlink()  # method files made with the other setting
    assert run_cli(evaluate.main, ["--dataset_config", cleaned, *base], capsys)[0] == 0
    first_line = json.loads((own_task / "results" / "cleaned" / "mine" / "scores.json").read_text())
    assert first_line["squad_acc"]["ensemble"]["chatty"] == 0.0
    assert run_cli(evaluate.main, ["--dataset_config", cleaned, *base, "--no_clean"], capsys)[0] == 0
    whole = json.loads((own_task / "results" / "cleaned" / "mine" / "scores.json").read_text())
    assert whole["squad_acc"]["ensemble"]["chatty"] > 0.5


def test_python_api_agrees_with_the_command(own_task):
    """route_generations takes per-generator lists as the files hold them and cleans as the
    commands do: its Global weights equal run_smoothie's."""
    from src.route import route_generations

    folder = own_task / "results" / "myqa" / "mine"
    names = ["careful", "chatty", "guesser", "verbose"]
    gens = [json.loads((folder / f"{n}_test.json").read_text())["generations"] for n in names]
    ran = json.loads((folder / "smoothie_sample_independent_mine_all-MiniLM-L6-v2_test.json").read_text())
    api = route_generations(gens, embedding_model=minilm(), clean=False)
    np.testing.assert_allclose(api.weights, ran["smoothie_weights"], rtol=1e-12)
    cleaned = route_generations(gens, embedding_model=minilm())  # cleaning on: chatty's answers become greetings
    assert not np.allclose(cleaned.weights, api.weights)
    with pytest.raises(ValueError, match="at least 3"):
        route_generations(gens[:2])


def test_outputs_follow_the_users_umask(own_task):
    mode = stat.S_IMODE((own_task / "results" / "myqa" / "mine" / "scores.json").stat().st_mode)
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask


def test_help_shows_defaults():
    proc = subprocess.run([sys.executable, "-m", "src.labeled_oracle", "--help"], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0 and "(default: 50)" in proc.stdout


def test_broken_yaml_is_reported_as_such(tmp_path, capsys):
    from src import labeled_oracle, run_smoothie
    from src.evaluate import evaluate

    bad = tmp_path / "broken.yaml"
    bad.write_text("dataset: [unclosed\n")
    for module, extra in ((evaluate, []), (labeled_oracle, []), (run_smoothie, ["--type", "sample_independent"])):
        code, _, err = run_cli(module.main, ["--dataset_config", bad, "--model_group", "g", "--multi_model",
                                             "--results_dir", tmp_path, "--data_dir", tmp_path, *extra], capsys)
        assert code == 2 and "broken.yaml" in err and "not valid YAML" in err, err


def test_failed_embedder_load_leaves_no_cache_file(tmp_path):
    from src.cli import UserError
    from src.embeddings import Embedder

    emb = Embedder("no-such-org/no-such-embedder", cache_dir=tmp_path)
    with pytest.raises(UserError):
        emb.embed(["x"])
    assert not emb.cache_path.exists()


def test_installed_package_imports_outside_the_repository(tmp_path):
    """`pip install -e .` (make install does it) makes `src` importable from any folder."""
    proc = subprocess.run([sys.executable, "-c", "from src.smoothie import smoothie_weights; "
                           "from src.tasks.registry import REPO; print(REPO)"], cwd=tmp_path, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(ROOT)
