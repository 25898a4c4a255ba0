"""Alpaca predictions and offline scoring: on AlpacaEval-format files the project makes from SmolLM2's
answers (any machine), and on six real leaderboard models (where ../shared/data is present)."""

from __future__ import annotations

import csv
import json
import random
import shutil

import numpy as np
import pytest
from conftest import minilm, run_cli

from src import alpaca_score, generate_predictions

N_INSTRUCTIONS = 50  # real data: the first 50 of 805 keeps MiniLM's CPU time small in CI


def _smol_alpaca(smol_tree, root):
    """AlpacaEval-format files made here: SmolLM2's answers to the demo questions under four
    prompts, plus its sampled answers under the last prompt, as five 'models'; the judge's
    verdict is made up from the references (an answer containing an alias wins)."""
    from src.cleaning import clean_generation

    rows = [json.loads(x) for x in (smol_tree.data_dir / "smol_test.jsonl").read_text().splitlines()]
    folder = smol_tree.folder
    models = {g: json.loads((folder / f"{g}_test.json").read_text())["generations"] for g in smol_tree.generators}
    models["prompt_3_sampled"] = [g[0] for g in json.loads((folder / "prompt_3_3_gens_test.json").read_text())["generations"]]
    src = root / "src"
    for sub in ("preferences", "annotations"):
        (src / sub).mkdir(parents=True)
    (root / "downloaded").mkdir()
    for name, outs in models.items():
        items = [{"dataset": "demo", "instruction": r["embedding_input"], "output": o, "generator": name}
                 for r, o in zip(rows, outs)]
        (root / "downloaded" / f"{name}.json").write_text(json.dumps(items))
        prefs = [2.0 if any(a in clean_generation(o).lower() for a in r["reference"]) else 1.0
                 for r, o in zip(rows, outs)]
        (src / "preferences" / f"{name}.json").write_text(json.dumps({"preference": prefs}))
        raw = [{"instruction": i["instruction"], "output_2": i["output"], "preference": p} for i, p in zip(items, prefs)]
        (src / "annotations" / f"{name}.json").write_text(json.dumps(raw))
    return src, root, len(rows), "prompt_2"


@pytest.fixture(scope="module", params=["smol", "sample"])
def alpaca(request, tmp_path_factory):
    """(cached verdicts folder, work folder with downloaded/, instructions used, a model with raw annotations):
    the project's own SmolLM2 answers everywhere, six real leaderboard models where ../shared/data is present."""
    root = tmp_path_factory.mktemp("alpaca")
    if request.param == "smol":
        return _smol_alpaca(request.getfixturevalue("smol_tree"), root)
    src = request.getfixturevalue("shared_data") / "alpaca_eval_sample"
    shutil.copytree(src / "downloaded_outputs", root / "downloaded")
    return src, root, N_INSTRUCTIONS, "gemma-7b-it"


def _predict(root, capsys, downloaded, out, *extra):
    code, stdout, err = run_cli(generate_predictions.main, [
        "--n_trials", 3, "--k", 5, "--embedding_model", minilm(), "--downloaded_dir", downloaded,
        "--outputs_dir", out, "--max_instructions", N_INSTRUCTIONS, *extra], capsys)
    assert code == 0, err
    return stdout


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.json"))}


def test_predictions_are_trial_members_outputs(alpaca, capsys):
    src, root, n, _ = alpaca
    out = root / "out"
    _predict(root, capsys, root / "downloaded", out)
    assert sorted(_files(out)) == sorted(f"{m}_{t}.json" for m in ("pick_random", "smoothie", "smoothie_independent")
                                         for t in range(3))
    outputs = {}
    for f in (root / "downloaded").glob("*.json"):
        outputs[f.stem] = {r["instruction"]: r["output"] for r in json.loads(f.read_text())}
    for path in out.glob("*.json"):
        rows = json.loads(path.read_text())
        assert len(rows) == n
        for row in rows:
            members = row["models_in_trial"]
            assert len(members) == 5 and row["selected_model"] in members
            assert row["output"] == outputs[row["selected_model"]][row["instruction"]]
            assert row["generator"] == path.stem
            if "smoothie" in path.stem:
                assert members[int(np.argmax(row["smoothie_weights"]))] == row["selected_model"]
                assert sum(row["smoothie_weights"]) == pytest.approx(1.0)
            else:
                assert "smoothie_weights" not in row
        if path.stem.startswith("smoothie_independent"):
            assert len({r["selected_model"] for r in rows}) == 1  # Global: one model for the whole trial


def test_offline_scores_and_trial_summary(alpaca, capsys):
    src, root, n, raw_model = alpaca
    out, board_dir = root / "out", root / "board"
    if not out.exists():
        _predict(root, capsys, root / "downloaded", out)
    code, stdout, err = run_cli(alpaca_score.main, ["--annotations_dir", src / "preferences", "--downloaded_dir",
                                                    root / "downloaded", "--outputs_dir", out,
                                                    "--leaderboard_dir", board_dir], capsys)
    assert code == 0, err
    board = {r["name"]: r for r in csv.DictReader((board_dir / "leaderboard.csv").open())}
    for f in (src / "preferences").glob("*.json"):
        prefs = np.array(json.loads(f.read_text())["preference"], dtype=float)
        assert float(board[f.stem]["win_rate"]) == pytest.approx(100 * (prefs - 1).mean(), abs=1e-4)
    rates = [float(r["win_rate"]) for r in board.values()]
    assert rates == sorted(rates, reverse=True)
    summary = list(csv.DictReader((board_dir / "trial_summary.csv").open()))
    assert [int(s["trial"]) for s in summary] == [0, 1, 2]
    for s in summary:
        members = s["models_in_trial"].split()
        best = max(members, key=lambda m: float(board[m]["win_rate"]))
        assert s["best_model"] == best
        assert s["picked_best"] == str(s["smoothie_global_pick"] == best)
        pick = json.loads((out / f"smoothie_independent_{s['trial']}.json").read_text())[0]["selected_model"]
        assert s["smoothie_global_pick"] == pick
    assert "cached judge annotations" in stdout


def test_run_alpaca_script_scores_offline(alpaca, capsys, tmp_path):
    import os
    import subprocess

    from conftest import ROOT

    src, root, n, raw_model = alpaca
    out = root / "out"
    if not out.exists():
        _predict(root, capsys, root / "downloaded", out)
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    proc = subprocess.run(["bash", "alpaca/run_alpaca.sh", "--cached_annotations", str(src / "preferences"),
                           "--downloaded_dir", str(root / "downloaded"), "--outputs_dir", str(out),
                           "--leaderboard_dir", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "offline" in proc.stdout and (tmp_path / "leaderboard.csv").is_file()
    assert (tmp_path / "trial_summary.csv").read_text().count("\n") == 1 + 3


def test_raw_leaderboard_annotations_give_the_stored_preferences(alpaca, tmp_path):
    src, root, n, raw_model = alpaca
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(src / "annotations" / f"{raw_model}.json", raw / f"{raw_model}.json")
    verdicts = alpaca_score.load_verdicts(raw, root / "downloaded")
    rows = json.loads((root / "downloaded" / f"{raw_model}.json").read_text())
    stored = json.loads((src / "preferences" / f"{raw_model}.json").read_text())["preference"]
    got = [verdicts[(r["instruction"], r["output"])] for r in rows]
    np.testing.assert_allclose(got, np.array(stored, dtype=float), atol=1e-9)


def test_shuffled_file_gives_the_same_predictions_and_reruns_are_identical(alpaca, capsys, tmp_path):
    src, root, n, raw_model = alpaca
    out = root / "out"
    if not out.exists():
        _predict(root, capsys, root / "downloaded", out)
    shuffled = tmp_path / "shuffled"
    shutil.copytree(root / "downloaded", shuffled)
    victim = sorted(shuffled.glob("*.json"))[3]
    rows = json.loads(victim.read_text())
    random.Random(0).shuffle(rows)
    victim.write_text(json.dumps(rows))
    _predict(root, capsys, shuffled, tmp_path / "out_shuffled")
    assert _files(tmp_path / "out_shuffled") == _files(out)
    _predict(root, capsys, root / "downloaded", tmp_path / "out_again")
    assert _files(tmp_path / "out_again") == _files(out)


@pytest.mark.parametrize("damage,needle", [("drop", "missing"), ("duplicate", "listed twice")])
def test_missing_or_duplicated_instruction_is_an_error(alpaca, capsys, tmp_path, damage, needle):
    src, root, n, raw_model = alpaca
    bad = tmp_path / "bad"
    shutil.copytree(root / "downloaded", bad)
    victim = sorted(bad.glob("*.json"))[2]
    rows = json.loads(victim.read_text())
    rows = rows[1:] if damage == "drop" else rows + [rows[5]]
    victim.write_text(json.dumps(rows))
    code, _, err = run_cli(generate_predictions.main, ["--downloaded_dir", bad, "--outputs_dir", tmp_path / "o",
                                                       "--embedding_model", minilm()], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert victim.name in err and needle in err
