"""Paths a researcher runs first, on the project's own SmolLM2 tree (no ../shared needed):
sampled generations, quick runs, stale inputs, reports, defaults, cleaning, error names."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, minilm, run_cli

from src import (
    get_generations,
    labeled_knn,
    labeled_oracle,
    make_dataset,
    mbr_baseline,
    pick_random_baseline,
    report,
    run_smoothie,
)
from src.cleaning import clean_generation
from src.evaluate import evaluate
from src.methods.registry import METHOD_PREFIXES


def _one_line(code, err, *needles):
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, err


def _only_generations(folder, names):
    """Other tests route on the shared tree; a copy starts from its generations alone, whatever ran before."""
    return [n for n in names if n.startswith(METHOD_PREFIXES) or n.startswith("scores")]


def _copy(tree, tmp_path):
    """A private copy of the tree's generations and splits, so a test may change files."""
    root = tmp_path / "t"
    shutil.copytree(tree.results, root / "results", ignore=_only_generations)
    shutil.copytree(tree.data_dir, root / "data")
    return tree._replace(results=root / "results", data_dir=root / "data")


def test_sampled_generations_through_every_command(smol_tree, capsys, tmp_path):
    """n = 3 sampled generations in an unregistered group folder holding only *_3_gens files:
    Smoothie (Global, Local k=1), every baseline and evaluate accept --n_generations 3."""
    tree = _copy(smol_tree, tmp_path)
    for split in ("train", "test"):  # only the sampled files: the folder has no n = 1 generations
        for g in tree.generators:
            (tree.folder / f"{g}_{split}.json").unlink()
    args = tree.setting_args("--n_generations", 3)
    emb = ["--embedding_model", minilm()]
    for module, extra in ((run_smoothie, ["--type", "sample_independent", *emb]),
                          (run_smoothie, ["--type", "sample_dependent", "--k", 1, *emb]),
                          (pick_random_baseline, []), (labeled_oracle, []), (labeled_knn, emb),
                          (mbr_baseline, emb), (evaluate, [])):
        code, out, err = run_cli(module.main, args + extra, capsys)
        assert code == 0, (module.__name__, err)
    scores = json.loads((tree.folder / "scores_3_gens.json").read_text())["trivia_qa_acc"]
    assert set(scores["smoothie"]) == {"smoothie_sample_independent_prompts_all-MiniLM-L6-v2_3_gens",
                                       "smoothie_sample_dependent_prompts_1_all-MiniLM-L6-v2_3_gens"}
    assert {"pick_random", "labeled_oracle", "labeled_knn", "mbr"} <= set(scores)
    local = json.loads((tree.folder / "smoothie_sample_dependent_prompts_1_all-MiniLM-L6-v2_3_gens_test.json")
                       .read_text())
    sampled = [json.loads((tree.folder / f"{g}_3_gens_test.json").read_text())["generations"] for g in tree.generators]
    # the routed text is the sample's first generation of the winning generator
    assert local["generations"] == [sampled[s][i][0] for i, s in enumerate(local["selected"])]
    # Local with k > 1 would pool other samples' sets: SPEC 4 says the sample's own n generations
    _one_line(*run_cli(run_smoothie.main, args + ["--type", "sample_dependent", "--k", 3, *emb], capsys)[:3:2],
              "--k 3", "--n_generations 3")


def test_quick_runs_do_not_masquerade_as_full_ones(smol_tree, capsys, tmp_path):
    """--max_samples output records its row count: downstream commands say what to do, a full
    run regenerates instead of skipping, and a changed input makes routed files stale."""
    tree = _copy(smol_tree, tmp_path)
    prompt_args = ["--dataset_config", tree.config, "--data_dir", tree.data_dir, "--results_dir", tree.results,
                   "--model", "smollm2-135m", "--multi_prompt"]
    code, out, err = run_cli(get_generations.main, prompt_args + ["--max_samples", 3, "--redo", "--splits", "test"],
                             capsys)
    assert code == 0, err
    quick = tree.results / "smol" / "smollm2-135m" / "individual_test.json"
    assert len(json.loads(quick.read_text())["generations"]) == 3
    # a downstream command on all rows says the file is a quick run, and how to use it
    _one_line(*run_cli(run_smoothie.main, prompt_args + ["--type", "sample_independent", "--embedding_model",
                                                         minilm()], capsys)[:3:2], "--max_samples 3")
    code, out, err = run_cli(run_smoothie.main, prompt_args + ["--type", "sample_independent", "--max_samples", 3,
                                                               "--embedding_model", minilm()], capsys)
    assert code == 0, err
    # the full run does not skip the quick run's file
    code, out, err = run_cli(get_generations.main, prompt_args + ["--splits", "test", "--max_new_tokens", 10],
                             capsys)
    assert code == 0 and "made with other settings (setting max_samples was 3, now None" in out and "wrote" in out, out + err
    assert len(json.loads(quick.read_text())["generations"]) == tree.n_test


def test_stale_method_files_are_recomputed_or_refused(smol_tree, capsys, tmp_path):
    tree = _copy(smol_tree, tmp_path)
    args = tree.setting_args("--embedding_model", minilm(), "--type", "sample_independent")
    assert run_cli(run_smoothie.main, args, capsys)[0] == 0
    assert run_cli(pick_random_baseline.main, tree.setting_args(), capsys)[0] == 0
    replaced = tree.folder / f"{tree.generators[0]}_test.json"
    data = json.loads(replaced.read_text())
    data["generations"] = ["Paris"] * len(data["generations"])
    replaced.write_text(json.dumps(data))
    # evaluate refuses to score routed files whose generations changed, naming the file
    _one_line(*run_cli(evaluate.main, tree.setting_args(), capsys)[:3:2], "stale", replaced.name)
    # rerunning a method recomputes instead of skipping
    code, out, err = run_cli(run_smoothie.main, args, capsys)
    assert code == 0 and "stale" in out and replaced.name in out and "wrote" in out, out
    code, out, err = run_cli(pick_random_baseline.main, tree.setting_args(), capsys)
    assert code == 0 and "stale" in out, out
    code, out, err = run_cli(evaluate.main, tree.setting_args(), capsys)
    assert code == 0, err


def test_report_shows_every_metric_and_names_each_smoothie_variant(smol_tree, capsys, tmp_path):
    tree = _copy(smol_tree, tmp_path)
    for extra in (["--type", "sample_independent"], ["--type", "sample_dependent", "--k", 1],
                  ["--type", "sample_dependent", "--k", 3]):
        assert run_cli(run_smoothie.main, tree.setting_args("--embedding_model", minilm(), *extra), capsys)[0] == 0
    assert run_cli(evaluate.main, tree.setting_args(), capsys)[0] == 0
    scores_path = tree.folder / "scores.json"
    scores = json.loads(scores_path.read_text())
    # a task group's scores.json has one entry per metric plus the average: the report shows all
    scores["rouge2"] = scores["average"] = scores["trivia_qa_acc"]
    scores_path.write_text(json.dumps(scores))
    out = tmp_path / "report.md"
    code, stdout, err = run_cli(report.main, tree.setting_args("--output", out), capsys)
    assert code == 0, err
    text = out.read_text()
    for metric in ("trivia_qa_acc", "rouge2", "average"):
        assert f"## `{metric}`" in text
    assert "Smoothie-Local k=1, all-MiniLM-L6-v2" in text and "Smoothie-Local k=3, all-MiniLM-L6-v2" in text
    assert "Smoothie-Global, all-MiniLM-L6-v2" in text
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "report_rouge2.png").is_file()


def test_mbr_rouge_picks_the_most_agreeing_text(smol_tree, capsys, tmp_path):
    tree = _copy(smol_tree, tmp_path)
    code, _, err = run_cli(mbr_baseline.main, tree.setting_args("--similarity", "rouge"), capsys)
    assert code == 0, err
    picked = json.loads((tree.folder / "mbr_prompts_test.json").read_text())
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge2"])
    gens = [json.loads((tree.folder / f"{g}_test.json").read_text())["generations"] for g in tree.generators]
    for i, s in enumerate(picked["selected"]):
        texts = [g[i] for g in gens]
        agree = [sum(scorer.score(texts[b], texts[a])["rouge2"].fmeasure for b in range(len(texts)) if b != a)
                 for a in range(len(texts))]
        assert agree[s] == pytest.approx(max(agree)), i


def test_environment_defaults_for_data_and_results(smol_tree, capsys, tmp_path, monkeypatch):
    """HF_DATASETS_DIR and RESULTS_DIR place the splits and results when no flag is given."""
    monkeypatch.setenv("HF_DATASETS_DIR", str(tmp_path / "hf"))
    monkeypatch.setenv("RESULTS_DIR", str(tmp_path / "res"))
    assert run_cli(make_dataset.main, ["--dataset_config", smol_tree.config], capsys)[0] == 0
    assert (tmp_path / "hf" / "datasets" / "smol_test.jsonl").is_file()
    shutil.copytree(smol_tree.folder, tmp_path / "res" / "smol" / "prompts")
    code, _, err = run_cli(pick_random_baseline.main, ["--dataset_config", smol_tree.config, "--model_group",
                                                       "prompts", "--multi_model"], capsys)
    assert code == 0, err
    assert (tmp_path / "res" / "smol" / "prompts" / "pick_random_prompts_test.json").is_file()


def test_clean_generation_rules():
    assert clean_generation("<s> Paris</s><pad><pad>") == "Paris"
    assert clean_generation("Rome\\nThe next question is") == "Rome"  # a literal backslash-n
    assert clean_generation("\n\n  Mercury  \nmore") == "Mercury  "  # SPEC 4: strip, then the first line
    assert clean_generation("<|im_start|>assistant Au<|im_end|>") == "assistant Au"
    assert clean_generation("") == ""


def test_smoothie_embeds_cleaned_text_but_returns_the_raw_output(tmp_path):
    from src.embeddings import Embedder
    from src.generations import GenerationTable
    from src.route import route_table

    raw = np.array([[["Paris\nQ: next?", "Paris</s>", "London, I think\nmore"]],
                    [["Rome\nQ: x", "Rome", "Milan\nand"]]], dtype=object)
    table = GenerationTable(names=["a", "b", "c"], texts=raw)
    emb = Embedder(minilm(), cache_dir=tmp_path, show_progress=False)
    routed = route_table(table, emb, type_="sample_dependent", k=1, rows=[{"task_name": "demo"}] * 2)
    assert routed.generations[0] in raw[0, 0].tolist() and routed.generations[0] != "Paris"
    cleaned = emb.embed(["Paris", "Paris", "London, I think"])
    assert np.array_equal(cleaned[0], cleaned[1])  # the first two agree once cleaned
    np.testing.assert_array_equal(routed.weights[0], [0.5, 0.5, 0.0])  # delta exactly 0 for the agreeing pair


@pytest.mark.parametrize("module", ["src.run_smoothie", "src.evaluate.evaluate", "src.get_generations"])
def test_errors_name_the_command(module):
    proc = subprocess.run([sys.executable, "-m", module, "--dataset_config", "nope.yaml", "--no_such_flag"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"{module}: error:"), proc.stderr
    assert "__main__" not in proc.stderr


def test_generation_flags_checked_at_the_edge(smol_tree, capsys):
    base = ["--dataset_config", smol_tree.config, "--data_dir", smol_tree.data_dir, "--results_dir",
            smol_tree.results]
    _one_line(*run_cli(get_generations.main, base + ["--model", "smollm2-135m", "--multi_prompt", "--dtype",
                                                     "float8"], capsys)[:3:2], "--dtype", "float8")
    _one_line(*run_cli(get_generations.main, base + ["--model_group", "3b", "--multi_model", "--model",
                                                     "smollm2-135m"], capsys)[:3:2], "not a member", "3b")
    _one_line(*run_cli(get_generations.main, base + ["--model", "smollm2-135m", "--multi_prompt", "--max_samples",
                                                     0], capsys)[:3:2], "--max_samples", "at least 1")


def test_baseline_counts_checked_at_the_edge(smol_tree, capsys):
    """Zero labels or neighbours used to end in numpy and scikit-learn tracebacks."""
    _one_line(*run_cli(labeled_oracle.main, smol_tree.setting_args("--n_labels", 0), capsys)[:3:2],
              "--n_labels", "at least 1")
    _one_line(*run_cli(labeled_knn.main, smol_tree.setting_args("--k", 0), capsys)[:3:2], "--k", "at least 1")
    _one_line(*run_cli(pick_random_baseline.main, smol_tree.setting_args("--n_trials", 0), capsys)[:3:2],
              "--n_trials")


def test_labeled_knn_checks_files_before_loading_the_embedder(smol_tree, capsys, tmp_path):
    """A generation file of the wrong length is reported first, not after a 14 s model load
    (here the embedder does not even exist, so loading it first would give another error)."""
    tree = _copy(smol_tree, tmp_path)
    short = tree.folder / f"{tree.generators[1]}_test.json"
    short.write_text(json.dumps({"generations": ["x"] * 3}))
    argv = tree.setting_args("--embedding_model", "no-such-org/no-such-embedder", "--n_labels", tree.n_train)
    _one_line(*run_cli(labeled_knn.main, argv, capsys)[:3:2], short.name, "3 generations")
