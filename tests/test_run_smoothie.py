"""`run_smoothie` and `route` end to end on real files (GSM8K solutions of four OpenAI systems)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import GSM8K_ROWS, ROOT, minilm, run_cli

from src import route, run_smoothie
from src.smoothie import smoothie_weights

GENERATORS = ["175b_finetuning", "175b_verification", "6b_finetuning", "6b_verification"]


def _setting_args(gsm8k_tree):
    config, results, data_dir, group = gsm8k_tree
    return ["--dataset_config", config, "--results_dir", results, "--data_dir", data_dir,
            "--model_group", group, "--multi_model", "--embedding_model", minilm()]


@pytest.mark.parametrize("kind,k,stem", [
    ("sample_independent", 1, "smoothie_sample_independent_openai_all-MiniLM-L6-v2_test.json"),
    ("sample_dependent", 1, "smoothie_sample_dependent_openai_1_all-MiniLM-L6-v2_test.json"),
    ("sample_dependent", 5, "smoothie_sample_dependent_openai_5_all-MiniLM-L6-v2_test.json"),
])
def test_run_smoothie_writes_documented_schema(gsm8k_tree, capsys, kind, k, stem):
    code, out, err = run_cli(run_smoothie.main, _setting_args(gsm8k_tree) + ["--type", kind, "--k", k], capsys)
    assert code == 0, err
    _, results, _, _ = gsm8k_tree
    path = results / "gsm8k_solutions" / "openai" / stem
    assert path.is_file(), sorted(p.name for p in path.parent.iterdir())
    data = json.loads(path.read_text())
    assert data["generators"] == GENERATORS
    w = np.array(data["smoothie_weights"])
    assert w.shape == (GSM8K_ROWS, 4)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert data["selected"] == w.argmax(axis=1).tolist()
    gens = {g: json.loads((path.parent / f"{g}_test.json").read_text())["generations"] for g in GENERATORS}
    assert data["generations"] == [gens[GENERATORS[s]][i] for i, s in enumerate(data["selected"])]
    if kind == "sample_independent":
        assert (w == w[0]).all()
    else:
        assert len({tuple(r) for r in w.round(12)}) > GSM8K_ROWS // 2  # weights vary per sample


def test_route_matches_run_smoothie_and_the_estimator(gsm8k_tree, capsys, tmp_path):
    config, results, data_dir, group = gsm8k_tree
    run_cli(run_smoothie.main, _setting_args(gsm8k_tree) + ["--type", "sample_dependent", "--k", 5], capsys)
    folder = results / "gsm8k_solutions" / group
    files = [folder / f"{g}_test.json" for g in GENERATORS]
    out = tmp_path / "routed.json"
    inputs = data_dir / "gsm8k_solutions_test.jsonl"
    code, stdout, err = run_cli(route.main, ["--inputs", inputs, "--generations", *files, "--output", out,
                                             "--type", "sample_dependent", "--k", 5, "--no_clean",
                                             "--embedding_model", minilm()], capsys)
    assert code == 0, err
    routed = json.loads(out.read_text())
    assert routed["generators"] == GENERATORS
    # gsm8k is not cleaned, so route --no_clean and run_smoothie must agree exactly
    ran = json.loads((folder / "smoothie_sample_dependent_openai_5_all-MiniLM-L6-v2_test.json").read_text())
    np.testing.assert_allclose(routed["smoothie_weights"], ran["smoothie_weights"], rtol=1e-12)
    # and the weights are the estimator's on the cached embeddings
    from src.embeddings import Embedder

    emb = Embedder(minilm(), show_progress=False)
    texts = [json.loads(f.read_text())["generations"] for f in files]
    rows = [json.loads(line) for line in inputs.read_text().splitlines()]
    lam = emb.embed([t[i] for i in range(len(rows)) for t in texts]).reshape(len(rows), 4, -1)
    x = emb.embed([r["embedding_input"] for r in rows])
    np.testing.assert_allclose(routed["smoothie_weights"], smoothie_weights(lam, x, k=5), rtol=1e-9)


def test_second_run_skips_and_redo_recomputes(gsm8k_tree, capsys):
    args = _setting_args(gsm8k_tree) + ["--type", "sample_independent"]
    run_cli(run_smoothie.main, args, capsys)
    code, out, _ = run_cli(run_smoothie.main, args, capsys)
    assert code == 0 and "skipping" in out
    code, out, _ = run_cli(run_smoothie.main, args + ["--redo"], capsys)
    assert code == 0 and "wrote" in out


def _one_line_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]


def test_bad_inputs(gsm8k_tree, capsys, tmp_path):
    config, results, data_dir, group = gsm8k_tree
    files = sorted((results / "gsm8k_solutions" / group).glob("*_finetuning_test.json")) + sorted(
        (results / "gsm8k_solutions" / group).glob("*_verification_test.json"))
    out = tmp_path / "o.json"
    short = tmp_path / "short.json"
    short.write_text(json.dumps({"generations": ["a", "b"]}))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    base = ["--output", out, "--embedding_model", minilm()]
    # generation files of different lengths
    _one_line_error(*run_cli(route.main, ["--generations", files[0], files[1], short] + base, capsys)[:3:2],
                    "short.json", "has 2 generations")
    # a missing file
    _one_line_error(*run_cli(route.main, ["--generations", *files[:2], tmp_path / "nope.json"] + base,
                             capsys)[:3:2], "nope.json", "not found")
    # m = 2
    _one_line_error(*run_cli(route.main, ["--generations", *files[:2]] + base, capsys)[:3:2], "at least 3")
    # a malformed JSON file
    _one_line_error(*run_cli(route.main, ["--generations", files[0], files[1], bad] + base, capsys)[:3:2],
                    "bad.json", "not valid JSON")
    # --multi_model without a group
    _one_line_error(*run_cli(run_smoothie.main, ["--dataset_config", config, "--multi_model", "--type",
                                                 "sample_independent"], capsys)[:3:2], "--model_group")
    # an unknown embedding model name, offline
    _one_line_error(*run_cli(route.main, ["--generations", *files, "--output", out, "--embedding_model",
                                          "no-such-embedder-xyz"], capsys)[:3:2], "no-such-embedder-xyz",
                    "--embedding_model")
    # a group folder with only two generators
    two = results / "gsm8k_solutions" / "two"
    two.mkdir(exist_ok=True)
    for f in files[:2]:
        (two / f.name).write_text(f.read_text())
    _one_line_error(*run_cli(run_smoothie.main, ["--dataset_config", config, "--results_dir", results,
                                                 "--data_dir", data_dir, "--model_group", "two",
                                                 "--multi_model", "--type", "sample_independent"],
                             capsys)[:3:2], "at least 3 generators")


def test_command_line_entry_point_exit_status(tmp_path):
    """The real `python -m` path: a missing file gives one line on stderr and status 2."""
    proc = subprocess.run([sys.executable, "-m", "src.route", "--generations", "a.json", "b.json", "c.json",
                           "--output", str(tmp_path / "o.json")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "a.json" in proc.stderr and "Traceback" not in proc.stderr


def test_train_time_and_full_text_variants(gsm8k_tree, capsys):
    """--regime train_time estimates on the train split; --use_full_text_embeddings embeds input + output.
    Each writes its own file, and the weights equal the estimator's on those embeddings."""
    from src.embeddings import Embedder

    config, results, data_dir, group = gsm8k_tree
    folder = results / "gsm8k_solutions" / group
    args = _setting_args(gsm8k_tree) + ["--type", "sample_dependent", "--k", 3]
    assert run_cli(run_smoothie.main, args + ["--regime", "train_time"], capsys)[0] == 0
    assert run_cli(run_smoothie.main, args + ["--use_full_text_embeddings"], capsys)[0] == 0
    train_time = json.loads((folder / "smoothie_sample_dependent_openai_3_train_time_all-MiniLM-L6-v2_test.json")
                            .read_text())
    full = json.loads((folder / "smoothie_sample_dependent_openai_3_all-MiniLM-L6-v2_full_text_test.json").read_text())

    emb = Embedder(minilm(), show_progress=False)
    rows = {s: [json.loads(x) for x in (data_dir / f"gsm8k_solutions_{s}.jsonl").read_text().splitlines()]
            for s in ("train", "test")}
    gens = {s: [json.loads((folder / f"{g}_{s}.json").read_text())["generations"] for g in GENERATORS]
            for s in ("train", "test")}

    def lam(split, full_text=False):
        texts = [(rows[split][i]["embedding_input"] + " " if full_text else "") + gens[split][j][i]
                 for i in range(len(rows[split])) for j in range(4)]
        return emb.embed(texts).reshape(len(rows[split]), 4, -1)

    x = {s: emb.embed([r["embedding_input"] for r in rows[s]]) for s in rows}
    want = smoothie_weights(lam("test"), x["test"], k=3, train_embeddings=lam("train"), train_input_embeddings=x["train"])
    np.testing.assert_allclose(train_time["smoothie_weights"], want, rtol=1e-9)
    np.testing.assert_allclose(full["smoothie_weights"], smoothie_weights(lam("test", True), x["test"], k=3), rtol=1e-9)
