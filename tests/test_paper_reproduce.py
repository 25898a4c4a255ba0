"""The paper's experiment grid as one resumable driver, and its AlpacaEval table from the authors' inputs."""

from __future__ import annotations

import json
import re

import pytest
from conftest import minilm, run_cli, smollm2

from src.paper import reproduce


def test_plan_lists_the_papers_grid(capsys):
    """Against SPEC 6/7 and PAPER_NUMBERS.md: Table 1 (7 tasks x 3b, 7b; Global, random, Best-on-Val),
    Table 2 (acc and rouge2 groups x 3b, 7b; Local k=1 and k=100, Global, random, kNN, Best-on-Val,
    PairRM, bge ablation), Table 3 (falcon-1b, llama-2-7b prompts on the 7 tasks), GSM8K math."""
    code, out, err = run_cli(reproduce.main, ["--plan"], capsys)
    assert code == 0, err
    lines = [line for line in out.splitlines() if " todo " in line or " done " in line]
    by_table: dict[str, list[str]] = {}
    for line in lines:
        table = line.split()[2]
        by_table.setdefault(table, []).append(line)
    t1 = by_table["table1"]
    gen1 = {(re.search(r"configs/(\w+)\.yaml", x).group(1), re.search(r"--model (\S+)", x).group(1))
            for x in t1 if "get_generations" in x}
    assert {t for t, _ in gen1} == set(reproduce.TABLE1_TASKS)
    assert {m for _, m in gen1} == {"dolly-3b", "incite-3b", "pythia-2.8b", "gemma-2b", "llama-2-7b", "mistral-7b",
                                    "vicuna-7b", "gemma-7b", "nous-capybara"}
    assert len(gen1) == 7 * 9
    assert sum("sample_independent" in x for x in t1) == 14
    assert sum("labeled_oracle" in x for x in t1) == 14 and sum("pick_random" in x for x in t1) == 14
    t2 = by_table["table2"]
    assert {re.search(r"configs/(\w+)\.yaml", x).group(1) for x in t2} == {"acc_group", "rouge2_group"}
    ks = sorted({int(m.group(1)) for x in t2 if (m := re.search(r"--k (\d+)", x))})
    assert ks == [1, 100]
    for method in ("labeled_knn", "pair_rm_baseline", "labeled_oracle", "pick_random", "sample_independent",
                   "bge-small-en-v1.5"):
        assert sum(method in x for x in t2) == 4, method
    t3 = by_table["table3"]
    prompts = {(re.search(r"configs/(\w+)\.yaml", x).group(1), re.search(r"--model (\S+)", x).group(1))
               for x in t3 if "get_generations" in x}
    assert prompts == {(t, m) for t in reproduce.TABLE1_TASKS for m in ("falcon-1b", "llama-2-7b")}
    assert all("--multi_prompt" in x for x in t3 if "--model" in x)
    assert any("--n_generations 5" in x for x in by_table["gsm8k"]) and by_table["tables"]
    assert "generations in all" in out


def test_filters_and_bad_flags(capsys):
    code, out, _ = run_cli(reproduce.main, ["--plan", "--tasks", "squad", "--groups", "3b", "--models", "falcon-1b"],
                           capsys)
    assert code == 0 and "7b" not in out.replace("llama-2-7b", "") and "xsum" not in out
    code, _, err = run_cli(reproduce.main, ["--plan", "--groups", "12b"], capsys)
    assert code == 2 and "--groups 12b" in err
    code, _, err = run_cli(reproduce.main, ["--plan", "--tasks", "nope"], capsys)
    assert code == 2 and "nope" in err


def test_smoke_run_to_the_tables_and_resume(tmp_path, capsys):
    """For real, on CPU: the demo task, SmolLM2's four prompts, a few rows, through to the tables;
    a second run finds every step done."""
    args = ["--tasks", "demo", "--groups", "none", "--models", smollm2(), "--max_samples", 6,
            "--results_dir", tmp_path / "results", "--data_dir", tmp_path / "data", "--embedding_model", minilm()]
    code, out, err = run_cli(reproduce.main, args, capsys)
    assert code == 0, err
    table3 = (tmp_path / "results" / "paper" / "table3.md").read_text()
    assert "demo" in table3 and "Smoothie-Global" in table3
    scores = json.loads((tmp_path / "results" / "demo" / "smollm2-135m" / "scores.json").read_text())
    assert len(scores["trivia_qa_acc"]["ensemble"]) == 4
    code, out, err = run_cli(reproduce.main, args + ["--plan"], capsys)
    todo = [line for line in out.splitlines() if " todo " in line]
    assert all("evaluate" in line or "paper.tables" in line for line in todo), todo  # always re-scored


def test_paper_alpaca_table_on_a_slice(shared_data, tmp_path, capsys):
    """The command of the README on the first 40 instructions with MiniLM: both pairings, the
    per-trial table, the summary beside the paper's numbers, and SPEC 3.6 prediction files."""
    from src.paper import alpaca

    inputs = shared_data / "alpaca_paper"
    if not inputs.is_dir():
        pytest.skip(f"{inputs} not found")
    code, out, err = run_cli(alpaca.main, ["--inputs", inputs, "--embedding_model", minilm(), "--max_instructions", 40,
                                           "--results_dir", tmp_path / "r", "--outputs_dir", tmp_path / "o"], capsys)
    assert code == 0, err
    md = (tmp_path / "r" / "paper" / "alpaca.md").read_text()
    assert "paired by instruction" in md and "paired by position" in md and "8/10" in md
    rows = (tmp_path / "r" / "paper" / "alpaca.csv").read_text().splitlines()
    assert len(rows) == 1 + 20
    ensembles = json.loads((inputs / "ensembles.json").read_text())
    for pairing in ("instruction", "position"):
        preds = json.loads((tmp_path / "o" / f"paper_{pairing}" / "smoothie_independent_0.json").read_text())
        assert len(preds) == 40 and preds[0]["models_in_trial"] == ensembles[0]
        assert {p["selected_model"] for p in preds} <= set(ensembles[0])
    # by instruction, every output is the one its model gave for that instruction
    outputs = {json.loads(f.read_text())[0]["generator"]: {r["instruction"]: r["output"] for r in json.loads(f.read_text())}
               for f in (inputs / "downloaded_outputs").glob("*.json")}
    preds = json.loads((tmp_path / "o" / "paper_instruction" / "smoothie_0.json").read_text())
    assert all(outputs[p["selected_model"]][p["instruction"]] == p["output"] for p in preds)
