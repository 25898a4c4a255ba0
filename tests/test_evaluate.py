"""Metrics, baselines and evaluate, end to end on real systems' outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import GSM8K_ROWS, minilm, run_cli

from src import labeled_knn, labeled_oracle, mbr_baseline, pick_random_baseline, run_smoothie
from src.cli import UserError
from src.evaluate import evaluate
from src.evaluate.metrics import METRICS, gsm8k_acc, mix_instruct_rank, rouge2, squad_acc, trivia_qa_acc

# ---------------------------------------------------------------- metrics


def test_rouge2_best_reference_and_empty():
    gen = "the cat sat on the mat"
    assert rouge2([gen], [["a dog ran", "the cat sat on a mat"]])[0] == pytest.approx(
        max(rouge2([gen], ["a dog ran"])[0], rouge2([gen], ["the cat sat on a mat"])[0]))
    assert rouge2([gen], [gen])[0] == pytest.approx(1.0)
    assert rouge2([""], ["the cat sat"])[0] == 0.0
    assert rouge2(["Cats sitting"], ["cats sit"])[0] == 0.0  # no stemming


def test_containment_metrics_case_and_aliases():
    assert squad_acc(["The answer is NORMANDY."], ["Normandy"]) == [1.0]
    assert squad_acc(["Paris"], ["Normandy"]) == [0.0]
    assert squad_acc([""], ["Normandy"]) == [0.0]
    assert trivia_qa_acc(["It is the City of Light"], [["paris", "city of light"]]) == [1.0]
    assert trivia_qa_acc(["London"], [["paris", "city of light"]]) == [0.0]


def test_gsm8k_rule():
    assert gsm8k_acc(["So 2+3=5. Therefore, the answer is 1,000."], ["1000"]) == [1.0]
    assert gsm8k_acc(["the answer is 1000"], ["1,000"]) == [1.0]  # commas removed on both sides
    assert gsm8k_acc(["It is 5. Done."], ["5"]) == [0.0]  # no "the answer is" sentence
    assert gsm8k_acc(["The answer is 5."], ["5"]) == [0.0]  # the paper's rule is case-sensitive
    assert gsm8k_acc(["the answer is 4. Also 5."], ["5"]) == [0.0]  # only the first such sentence
    assert gsm8k_acc(["the answer is 25"], ["5"]) == [1.0]  # substring: the rule's known false positive
    assert gsm8k_acc([""], ["5"]) == [0.0]


def test_mix_instruct_rank():
    assert mix_instruct_rank(["b"], [{"a": 2, "b": 1}]) == [1.0]
    with pytest.raises(UserError, match="not one of the sample's MixInstruct candidates"):
        mix_instruct_rank(["c"], [{"a": 2, "b": 1}])
    with pytest.raises(UserError, match="no MixInstruct rank table"):
        mix_instruct_rank(["c"], [None])


def test_every_metric_is_registered():
    assert {"rouge2", "squad_acc", "trivia_qa_acc", "definition_extraction_acc", "gsm8k_acc",
            "mix_instruct_rank"} <= set(METRICS)


# ---------------------------------------------------------------- real data, end to end


def _independent_gsm8k(gen: str, ref: str) -> float:
    """The SPEC rule written out again, separately from src.evaluate.metrics."""
    for sentence in gen.split("."):
        if "the answer is" in sentence:
            return float(ref.replace(",", "") in sentence.replace(",", ""))
    return 0.0


def _run_pipeline(tree, capsys):
    config, results, group = tree.config, tree.results, tree.group
    base = tree.setting_args()
    emb = ["--embedding_model", minilm()]
    for module, extra in ((run_smoothie, ["--type", "sample_independent", *emb]),
                          (run_smoothie, ["--type", "sample_dependent", "--k", 1, *emb]),
                          (pick_random_baseline, []), (labeled_oracle, []),
                          (labeled_knn, emb), (mbr_baseline, emb), (evaluate, [])):
        code, out, err = run_cli(module.main, base + extra, capsys)
        assert code == 0, (module.__name__, err)
    folder = results / config.stem / group
    return folder, json.loads((folder / "scores.json").read_text()), out


def _method_check(folder, scores, metric, per_sample):
    """Every method's score equals the mean of the independently computed per-sample scores of
    the generators it selected."""
    names = scores[metric]["ensemble"]
    order = list(names)
    for f in sorted(folder.glob("*_test.json")):
        data = json.loads(f.read_text())
        if "selected" not in data:
            continue
        sel = np.array(data["selected"])
        got = (scores[metric]["smoothie"][f.name[:-10]] if f.name.startswith("smoothie_")
               else scores[metric][next(m for m in ("pick_random", "labeled_oracle", "labeled_knn", "mbr")
                                        if f.name.startswith(m))])
        assert data["generators"] == order
        rows = np.arange(per_sample.shape[0])
        want = per_sample[rows, sel].mean() if sel.ndim == 1 else np.mean([per_sample[rows, s].mean() for s in sel])
        assert got == pytest.approx(want, abs=1e-12), f.name


def test_gsm8k_end_to_end_matches_labels(gsm8k_tree, shared_data, capsys):
    folder, scores, table = _run_pipeline(gsm8k_tree, capsys)
    s = scores["gsm8k_acc"]
    names = list(s["ensemble"])
    refs = [json.loads(x)["reference"] for x in (gsm8k_tree.data_dir / "gsm8k_solutions_test.jsonl").read_text().splitlines()]
    per_sample = np.zeros((GSM8K_ROWS, len(names)))
    for j, name in enumerate(names):
        gens = json.loads((folder / f"{name}_test.json").read_text())["generations"]
        labels = json.loads((shared_data / "gsm8k_solutions" / "labels" / f"{name}_test.json").read_text())
        labels = np.array(labels["is_correct"][60:60 + GSM8K_ROWS], dtype=float)
        per_sample[:, j] = [_independent_gsm8k(g, r) for g, r in zip(gens, refs)]
        assert s["ensemble"][name] == pytest.approx(per_sample[:, j].mean())
        assert (per_sample[labels == 1, j] == 1).all()  # the rule never misses a labelled-correct answer
        assert s["ensemble"][name] >= labels.mean()
    assert s["oracle"] == pytest.approx(per_sample.max(axis=1).mean())
    assert s["best_single"] == pytest.approx(per_sample.mean(axis=0).max())
    _method_check(folder, scores, "gsm8k_acc", per_sample)
    assert {"pick_random", "labeled_oracle", "labeled_knn", "mbr"} <= set(s)
    assert {"smoothie_sample_independent_openai_all-MiniLM-L6-v2", "smoothie_sample_dependent_openai_1_all-MiniLM-L6-v2"
            } <= set(s["smoothie"])
    assert "oracle" in table and "Smoothie-Global, all-MiniLM-L6-v2" in table


def test_webnlg_end_to_end_matches_rouge(webnlg_tree, capsys):
    from rouge_score import rouge_scorer

    folder, scores, _ = _run_pipeline(webnlg_tree, capsys)
    s = scores["rouge2"]
    names = list(s["ensemble"])
    assert len(names) == 16
    rows = [json.loads(x) for x in (webnlg_tree.data_dir / "webnlg2020_test.jsonl").read_text().splitlines()]
    scorer = rouge_scorer.RougeScorer(["rouge2"], use_stemmer=False)
    per_sample = np.zeros((len(rows), len(names)))
    for j, name in enumerate(names):
        gens = json.loads((folder / f"{name}_test.json").read_text())["generations"]
        for i, (g, r) in enumerate(zip(gens, rows)):
            g = g.strip().split("\n")[0]
            per_sample[i, j] = max(scorer.score(ref, g)["rouge2"].fmeasure for ref in r["reference"])
        assert s["ensemble"][name] == pytest.approx(per_sample[:, j].mean(), abs=1e-12)
    _method_check(folder, scores, "rouge2", per_sample)
    assert s["oracle"] > s["best_single"] > min(s["ensemble"].values())


def test_smol_end_to_end_matches_independent_scores(smol_tree, capsys):
    """The whole pipeline on the project's own SmolLM2 tree (any machine): every generator's and
    method's score equals an alias-containment score computed here, on the first line of the
    raw generation (the demo task is cleaned)."""
    folder, scores, table = _run_pipeline(smol_tree, capsys)
    rows = [json.loads(x) for x in (smol_tree.data_dir / "smol_test.jsonl").read_text().splitlines()]
    gens = [json.loads((folder / f"{g}_test.json").read_text())["generations"] for g in smol_tree.generators]

    def contains(gen, aliases):
        first = gen.replace("<|im_end|>", "").strip().split("\n")[0].lower()
        return float(any(a.lower() in first for a in aliases))

    per_sample = np.array([[contains(g[i], rows[i]["reference"]) for g in gens] for i in range(len(rows))])
    s = scores["trivia_qa_acc"]
    for j, name in enumerate(smol_tree.generators):
        assert s["ensemble"][name] == pytest.approx(per_sample[:, j].mean(), abs=1e-12)
    _method_check(folder, scores, "trivia_qa_acc", per_sample)
    assert s["oracle"] >= s["best_single"] >= min(s["ensemble"].values())
    assert "prompt_0" in table and "oracle" in table


def test_trials_reproducible_for_a_seed_and_differ_across_seeds(tree, capsys):
    group = tree.group
    base = tree.setting_args()
    out = tree.folder
    for module, name in ((pick_random_baseline, "pick_random"), (labeled_oracle, "labeled_oracle"),
                         (labeled_knn, "labeled_knn")):
        extra = ["--embedding_model", minilm()] if module is labeled_knn else []
        path = out / f"{name}_{group}_test.json"
        seen = []
        for seed in (1, 1, 2):
            assert run_cli(module.main, base + extra + ["--seed", seed, "--redo"], capsys)[0] == 0
            data = json.loads(path.read_text())
            seen.append((data["selected"], data.get("labeled_train_rows")))
        assert seen[0] == seen[1]
        assert seen[0] != seen[2], name  # other picks, or at least other labelled rows
        assert len(seen[0][0]) == 10 and all(len(t) == tree.n_test for t in seen[0][0])


def test_bad_inputs(tree, capsys, tmp_path):
    config, results, data_dir, group = tree.config, tree.results, tree.data_dir, tree.group
    base = ["--dataset_config", config, "--data_dir", data_dir, "--multi_model"]
    bad = tree.folder / f"mbr_{group}_test.json"
    saved = bad.read_text() if bad.exists() else None
    bad.write_text(json.dumps({"generations": ["x"] * 7}))
    try:
        code, _, err = run_cli(evaluate.main, base + ["--results_dir", results, "--model_group", group], capsys)
        # a file of generations alone is a generator's, whatever its name: method files made before it are
        # stale (a new generator), and where there are none its length is checked as a generator's
        assert code == 2 and len(err.strip().splitlines()) == 1 and bad.name in err
        assert f"{bad.name} is new since" in err or "has 7 generations" in err, err
    finally:
        bad.write_text(saved) if saved else bad.unlink()
    empty = tmp_path / "empty"
    code, _, err = run_cli(evaluate.main, base + ["--results_dir", empty, "--model_group", "nothing"], capsys)
    assert code == 2 and "no generations found" in err
    from src import pair_rm_baseline

    code, _, err = run_cli(pair_rm_baseline.main, base + ["--results_dir", results, "--model_group", group], capsys)
    assert code == 2 and "llm-blender" in err and len(err.strip().splitlines()) == 1  # not installed here
    wrong = tmp_path / f"{tree.stem}.yaml"
    wrong.write_text(f"dataset: {tree.task}\nmetrics: [accuracy_of_vibes]\n")
    code, _, err = run_cli(evaluate.main, ["--dataset_config", wrong, "--data_dir", data_dir, "--multi_model",
                                           "--results_dir", results, "--model_group", group], capsys)
    assert code == 2 and "accuracy_of_vibes" in err and len(err.strip().splitlines()) == 1
