"""The paper's experiment grid as one resumable driver, and its AlpacaEval table from the authors' inputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

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
    assert ks == [1, 20, 50, 100]  # k = 20 and 50: the train-time runs of the authors' multimodel_exps.sh
    for method in ("labeled_knn", "pair_rm_baseline", "labeled_oracle", "pick_random", "bge-small-en-v1.5"):
        assert sum(method in x for x in t2) == 4, method
    train_time = [x for x in t2 if "--regime train_time" in x]
    assert len(train_time) == 4 * 3 and sum("sample_independent" in x for x in train_time) == 4
    assert sum("sample_independent" in x for x in t2) == 8
    mix = by_table["table10"]  # MixInstruct: candidates ship with the data, so no generation step
    assert mix and not any("get_generations" in x for x in mix)
    assert any("--model_group mix_instruct" in x and "sample_dependent" in x for x in mix)
    t3 = by_table["table3"]
    prompts = {(re.search(r"configs/(\w+)\.yaml", x).group(1), re.search(r"--model (\S+)", x).group(1))
               for x in t3 if "get_generations" in x}
    assert prompts == {(t, m) for t in reproduce.TABLE1_TASKS for m in ("falcon-1b", "llama-2-7b")}
    assert all("--multi_prompt" in x for x in t3 if "--model" in x)
    assert not any("--n_generations" in x for x in by_table["gsm8k"])  # the authors' gsm8k.sh: greedy, n = 1
    assert any("--n_generations 5" in x for x in by_table["gsm8k-n5-ours"]) and by_table["tables"]
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
    scores = json.loads((tmp_path / "results" / "demo" / "smollm2-135m" / "scores_first6.json").read_text())
    assert scores["manifest"]["settings"]["partial"] and "(first 6 rows)" in table3  # a smoke run says so
    assert len(scores["trivia_qa_acc"]["ensemble"]) == 4
    code, out, err = run_cli(reproduce.main, args + ["--plan"], capsys)
    todo = [line for line in out.splitlines() if " todo " in line]
    assert all("evaluate" in line or "paper.tables" in line for line in todo), todo  # always re-scored

    # The old driver called a step done when its output existed and recorded the same
    # --max_samples: an output made with another k and embedder, and one with no manifest.
    folder = tmp_path / "results" / "demo" / "smollm2-135m"
    glob = folder / "smoothie_sample_independent_all-MiniLM-L6-v2_test.json"
    data = json.loads(glob.read_text())
    data["manifest"]["settings"]["k"] = 999
    data["manifest"]["models"]["embedder"] = "another-embedder-0123456789abcdef"
    glob.write_text(json.dumps(data))
    rand = folder / "pick_random_test.json"
    data = json.loads(rand.read_text())
    del data["manifest"]
    rand.write_text(json.dumps(data))
    code, out, err = run_cli(reproduce.main, args + ["--plan"], capsys)
    todo = [line for line in out.splitlines() if " todo " in line and "evaluate" not in line
            and "paper.tables" not in line]
    assert len(todo) == 2, out
    assert any("sample_independent" in line and "model embedder was 'another-embedder" in line for line in todo)
    assert any("pick_random" in line and "records no manifest" in line for line in todo)
    code, out, err = run_cli(reproduce.main, args, capsys)  # the driver now redoes exactly those two
    assert code == 0, err
    assert out.count("] python -m src.run_smoothie") == 1 and out.count("] python -m src.pick_random") == 1, out
    assert "settings" in json.loads(rand.read_text())["manifest"]

    # generations that record no manifest: the command would keep them; the driver cannot vouch
    gens = folder / "individual_test.json"
    data = json.loads(gens.read_text())
    del data["manifest"]
    gens.write_text(json.dumps(data))
    code, out, err = run_cli(reproduce.main, args + ["--plan"], capsys)
    assert code == 0 and " unstamped " in out and "individual_test.json records no manifest" in out
    code, out, err = run_cli(reproduce.main, args, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "individual_test.json records no manifest" in lines[0], err


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
    assert "paired by instruction" in md and "paired by position" in md
    # the summary's count, recomputed apart from the code that writes it: per trial, does the
    # Global prediction file's model have the best leaderboard win rate among the trial's models?
    board = json.loads((inputs / "leaderboard.json").read_text())
    rate = {k: v["leaderboard_win_rate"] for k, v in board.items()}
    for pairing in ("instruction", "position"):
        files = sorted((tmp_path / "o" / f"paper_{pairing}").glob("smoothie_independent_*.json"))
        picked = 0
        for f in files:
            preds = json.loads(f.read_text())
            members = preds[0]["models_in_trial"]
            picked += preds[0]["selected_model"] == max(members, key=rate.get)
        assert f"| this project, paired by {pairing} | {picked}/{len(files)} |" in md
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


def _serve(folder: Path):
    """A local HTTP server (127.0.0.1, a free port) serving ``folder``; returns (server, base URL)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def test_fetch_alpaca_inputs_builds_the_folder_and_refuses_other_bytes(shared_data, tmp_path, capsys):
    """Served from a local mirror of the same files: the folder it builds equals the paper's
    inputs, byte for byte for the outputs, value for value for the trials and the leaderboard;
    a file that differs by one byte is refused and not kept."""
    import shutil

    from src.paper import fetch_alpaca_inputs

    inputs = shared_data / "alpaca_paper"
    if not inputs.is_dir():
        pytest.skip(f"{inputs} not found")
    server, url = _serve(inputs / "downloaded_outputs")
    try:
        out = tmp_path / "paper_inputs"
        code, stdout, err = run_cli(fetch_alpaca_inputs.main, ["--output", out, "--base_url", url], capsys)
        assert code == 0, err
        for f in (inputs / "downloaded_outputs").glob("*.json"):
            assert (out / "downloaded_outputs" / f.name).read_bytes() == f.read_bytes()
        for name in ("ensembles.json", "leaderboard.json"):
            assert json.loads((out / name).read_text()) == json.loads((inputs / name).read_text())
        code, stdout, err = run_cli(fetch_alpaca_inputs.main, ["--output", out, "--base_url", url], capsys)
        assert code == 0 and stdout.count("already in place") == 10, stdout  # resumes: nothing fetched again
    finally:
        server.shutdown()
    tampered = tmp_path / "mirror"
    shutil.copytree(inputs / "downloaded_outputs", tampered)
    victim = tampered / "claude_2.json"
    victim.write_bytes(victim.read_bytes().replace(b"a", b"b", 1))
    server, url = _serve(tampered)
    try:
        fresh = tmp_path / "other"
        code, stdout, err = run_cli(fetch_alpaca_inputs.main, ["--output", fresh, "--base_url", url], capsys)
        assert code == 2 and "claude_2.json" in err and "not kept" in err, err
        assert not (fresh / "downloaded_outputs" / "claude_2.json").exists()
    finally:
        server.shutdown()
