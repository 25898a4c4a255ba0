"""make_dataset for every task, from small local files in each hub dataset's real column schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

from src import make_dataset


def _cnn(i):
    return {"article": f"(CNN) Story {i}: the council approved a new bridge over the river.",
            "highlights": f"Council approves bridge {i} .", "id": f"id{i}"}


def _xsum(i):
    return {"document": f"Document {i} says rainfall in the region was the highest on record.",
            "summary": f"Record rainfall {i}.", "id": str(i)}


def _e2e(i):
    return {"meaning_representation": f"name[Place {i}], eatType[pub], food[Italian]",
            "human_reference": f"Place {i} is an Italian pub."}


def _webnlg(i):
    triples = [f"Entity_{i} | country | France", f"Entity_{i} | leader | Someone_{i}"]
    return {"category": "Airport", "size": 2, "eid": f"Id{i}", "shape": "(X (X) (X))", "shape_type": "sibling",
            "original_triple_sets": {"otriple_set": [triples]},
            "modified_triple_sets": {"mtriple_set": [triples, ["Other | p | o"]]},
            "lex": {"comment": ["good", "bad", "good"], "lid": ["Id1", "Id2", "Id3"],
                    "text": [f"Entity {i} is in France.", "Bad text.", f"Someone {i} leads Entity {i}."],
                    "lang": ["", "", ""]},
            "test_category": "", "dbpedia_links": [], "links": []}


def _squad(i):
    return {"doc_id": str(i), "title": "Normans", "context": f"Passage {i}: The Normans lived in Normandy.",
            "question": f"Where did the Normans live (q{i})?", "answers": {"text": ["Normandy"], "answer_start": [28]},
            "text": "unused", "value": f"Normandy{i}"}


def _trivia(i):
    return {"question": f"Which city is question {i} about?", "question_id": f"q{i}", "question_source": "x",
            "entity_pages": {"doc_source": [], "filename": [], "title": [], "wiki_context": []},
            "search_results": {"description": [], "filename": [], "rank": [], "title": [], "url": [],
                               "search_context": []},
            "answer": {"aliases": [f"Paris{i}", "City of Light"], "normalized_aliases": [f"paris{i}", "city of light"],
                       "matched_wiki_entity_name": "", "normalized_matched_wiki_entity_name": "",
                       "normalized_value": f"paris{i}", "type": "WikipediaEntity", "value": f"Paris{i}"}}


def _defext(i):
    return {"answer": f"term{i}", "index": str(i), "text": f"The term \"term{i}\" means a thing described in row {i}."}


def _gsm8k(i):
    return {"question": f"Tom has {i} apples and buys 1,000 more. How many?",
            "answer": f"He has {i} + 1000 = <<{i}+1000={1000 + i}>>{1000 + i}.\n#### {1000 + i:,}"}


def _mix(i):
    models = ["alpaca-native", "vicuna-13b-1.1", "mpt-7b"]
    cmp = {"alpaca-native,vicuna-13b-1.1": "B is better", "alpaca-native,mpt-7b": "A is better",
           "vicuna-13b-1.1,mpt-7b": "A is better"}
    return {"id": f"m{i}", "instruction": f"Write a greeting {i}.", "input": "", "output": f"Hello {i}",
            "candidates": [{"decoding_method": "top_p_sampling", "model": m, "text": f"{m} says hi {i}",
                            "scores": {"bleu": 0.1, "rouge2": 0.2}} for m in models],
            "cmp_results": json.dumps(cmp) if i % 5 else "null"}


def _demo(i):
    return {"question": f"Demo question {i}?", "answers": [f"ans{i}", "alias"]}


# task -> (row maker, {hub split file: n rows}, file format)
SOURCES = {
    "cnn_dailymail": (_cnn, {"train": 8, "test": 9}, "jsonl"),
    "xsum": (_xsum, {"train": 8, "test": 9}, "parquet"),
    "e2e_nlg": (_e2e, {"train": 8, "test": 9}, "csv"),
    "web_nlg": (_webnlg, {"train": 8, "dev": 9}, "json"),
    "squad": (_squad, {"validation": 16}, "jsonl"),
    "trivia_qa": (_trivia, {"train": 60, "validation": 9}, "save_to_disk"),
    "definition_extraction": (_defext, {"test": 106}, "jsonl"),
    "gsm8k": (_gsm8k, {"train": 8, "test": 9}, "jsonl"),
    "mix_instruct": (_mix, {"train": 8, "test": 12}, "jsonl"),
}


def write_source(folder: Path, task: str) -> dict[str, list[dict]]:
    make, splits, fmt = SOURCES[task]
    folder.mkdir(parents=True, exist_ok=True)
    data = {s: [make(i if s != "test" or task != "definition_extraction" else i) for i in range(n)]
            for s, n in splits.items()}
    if fmt == "save_to_disk":
        import datasets

        datasets.DatasetDict({s: datasets.Dataset.from_list(r) for s, r in data.items()}).save_to_disk(str(folder))
        return data
    for split, rows in data.items():
        path = folder / f"{split}.{fmt}"
        if fmt == "jsonl":
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        elif fmt == "json":
            path.write_text(json.dumps(rows))
        else:
            import pandas as pd

            df = pd.DataFrame(rows)
            df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path)
    return data


def write_config(folder: Path, task: str, train_size=3, test_size=4, **extra) -> Path:
    cfg = {"dataset": task, "multi_model_prompt_template": f"{task}_multi_model", "max_new_tokens": 20,
           "train_size": train_size, "test_size": test_size}
    if (ROOT / "prompt_templates" / f"{task}_multi_prompt.json").exists():
        cfg["multi_prompt_template"] = f"{task}_multi_prompt"
    cfg.update(extra)
    path = folder / f"{task}.yaml"
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in cfg.items()))
    return path


def build(tmp_path, capsys, task, **cfg):
    src = tmp_path / "src" / task
    data = write_source(src, task)
    config = write_config(tmp_path, task, **cfg)
    out = tmp_path / "out"
    code, stdout, err = run_cli(make_dataset.main, ["--dataset_config", config, "--source", src, "--data_dir", out,
                                                    "--results_dir", tmp_path / "results"], capsys)
    assert code == 0, err
    rows = {s: [json.loads(x) for x in (out / f"{task}_{s}.jsonl").read_text().splitlines()] for s in ("train", "test")}
    return data, rows, stdout


EXPECTED_REFERENCE = {
    "cnn_dailymail": lambda r: r["highlights"],
    "xsum": lambda r: r["summary"],
    "e2e_nlg": lambda r: r["human_reference"],
    "web_nlg": lambda r: [t for t, c in zip(r["lex"]["text"], r["lex"]["comment"]) if c == "good"],
    "squad": lambda r: r["value"],
    "trivia_qa": lambda r: r["answer"]["normalized_aliases"],
    "definition_extraction": lambda r: r["answer"],
    "gsm8k": lambda r: r["answer"].split("####")[1].strip(),
}
EMBEDDING_INPUT = {
    "cnn_dailymail": lambda r: r["article"],
    "xsum": lambda r: r["document"],
    "e2e_nlg": lambda r: r["meaning_representation"],
    "web_nlg": lambda r: "\n".join(r["modified_triple_sets"]["mtriple_set"][0]),
    "squad": lambda r: r["context"] + "\n" + r["question"],
    "trivia_qa": lambda r: r["question"],
    "definition_extraction": lambda r: r["text"],
    "gsm8k": lambda r: r["question"],
}


@pytest.mark.parametrize("task", sorted(EXPECTED_REFERENCE))
def test_build_task_from_local_files(tmp_path, capsys, task):
    data, rows, _ = build(tmp_path, capsys, task)
    by_input = {}
    for split_rows in data.values():
        for r in split_rows:
            by_input[EMBEDDING_INPUT[task](r)] = r
    n_prompts = len(json.loads((ROOT / "prompt_templates" / f"{task}_multi_prompt.json").read_text()))
    for split, want in (("train", 3), ("test", 4)):
        assert [r["idx"] for r in rows[split]] == list(range(want))
        for row in rows[split]:
            assert row["task_name"] == task
            raw = by_input[row["embedding_input"]]  # embedding input built from the right fields
            assert row["reference"] == EXPECTED_REFERENCE[task](raw)
            key_text = EMBEDDING_INPUT[task](raw).split("\n")[0]
            assert key_text.split(":")[0] in row["multi_model_prompt"]
            assert [f"multi_prompt_{i}" in row for i in range(n_prompts)] == [True] * n_prompts
            assert len({row[f"multi_prompt_{i}"] for i in range(n_prompts)}) == n_prompts  # variants differ


def test_split_parts_follow_the_paper(tmp_path, capsys):
    """squad: train from the first half of validation, test from the second; definition_extraction:
    the first 100 rows are train, the rest test; trivia_qa: train from the first 10%."""
    data, rows, _ = build(tmp_path, capsys, "squad", train_size=8, test_size=8)
    half = {r["context"] + "\n" + r["question"] for r in data["validation"][:8]}
    assert {r["embedding_input"] for r in rows["train"]} == half
    assert not {r["embedding_input"] for r in rows["test"]} & half
    _, rows, _ = build(tmp_path / "d", capsys, "definition_extraction", train_size="all", test_size="all")
    assert [r["reference"] for r in rows["train"]] == [f"term{i}" for i in range(100)]
    assert [r["reference"] for r in rows["test"]] == [f"term{i}" for i in range(100, 106)]
    _, rows, _ = build(tmp_path / "t", capsys, "trivia_qa", train_size=100, test_size=2)
    assert sorted(r["reference"][0] for r in rows["train"]) == sorted(f"paris{i}" for i in range(6))


def test_sizes_capped_with_a_warning(tmp_path, capsys):
    _, rows, out = build(tmp_path, capsys, "gsm8k", train_size=50, test_size=4)
    assert len(rows["train"]) == 8 and "warning" in out and "only 8 exist" in out


def test_mix_instruct_writes_candidates_and_rank_tables(tmp_path, capsys):
    _, rows, _ = build(tmp_path, capsys, "mix_instruct", train_size=3, test_size=20)
    assert len(rows["test"]) == 9  # the 3 rows without comparisons ('null') are dropped
    folder = tmp_path / "results" / "mix_instruct" / "mix_instruct"
    gens = {p.name: json.loads(p.read_text())["generations"] for p in folder.glob("*_test.json")}
    assert sorted(gens) == ["alpaca-native_test.json", "mpt-7b_test.json", "vicuna-13b-1.1_test.json"]
    for i, row in enumerate(rows["test"]):
        ref = row["reference"]
        vicuna, alpaca, mpt = (gens[f"{m}_test.json"][i] for m in ("vicuna-13b-1.1", "alpaca-native", "mpt-7b"))
        assert (ref[vicuna], ref[alpaca], ref[mpt]) == (1, 2, 3)  # 2, 1 and 0 wins
    assert (folder / "mpt-7b_train.json").is_file()


def test_reruns_are_byte_identical_and_skip_without_redo(tmp_path, capsys):
    src = tmp_path / "src"
    write_source(src, "gsm8k")
    config = write_config(tmp_path, "gsm8k")
    out = tmp_path / "out"
    args = ["--dataset_config", config, "--source", src, "--data_dir", out]
    run_cli(make_dataset.main, args, capsys)
    first = (out / "gsm8k_test.jsonl").read_bytes()
    stamp = (out / "gsm8k_test.jsonl").stat().st_mtime_ns
    code, stdout, _ = run_cli(make_dataset.main, args, capsys)
    assert code == 0 and "left untouched" in stdout
    assert (out / "gsm8k_test.jsonl").stat().st_mtime_ns == stamp
    run_cli(make_dataset.main, args + ["--redo"], capsys)
    assert (out / "gsm8k_test.jsonl").read_bytes() == first
    other = tmp_path / "out2"
    run_cli(make_dataset.main, ["--dataset_config", config, "--source", src, "--data_dir", other], capsys)
    assert (other / "gsm8k_test.jsonl").read_bytes() == first


def test_group_concatenates_tasks_in_order_with_their_own_templates(tmp_path, capsys):
    configs = []
    for task in ("squad", "trivia_qa", "definition_extraction"):
        src = tmp_path / "src" / task
        write_source(src, task)
        configs.append(write_config(tmp_path, task, train_size=2, test_size=3, source=str(src)))
    group = tmp_path / "acc_small.yaml"
    group.write_text("tasks:\n" + "".join(f"  - {c}\n" for c in configs) + "max_new_tokens: 40\n")
    out = tmp_path / "out"
    code, _, err = run_cli(make_dataset.main, ["--dataset_config", group, "--data_dir", out], capsys)
    assert code == 0, err
    rows = [json.loads(x) for x in (out / "acc_small_test.jsonl").read_text().splitlines()]
    assert [r["task_name"] for r in rows] == ["squad"] * 3 + ["trivia_qa"] * 3 + ["definition_extraction"] * 3
    assert [r["idx"] for r in rows] == list(range(9))
    templates = {t: (ROOT / "prompt_templates" / f"{t}_multi_model.txt").read_text().split("{")[0]
                 for t in ("squad", "trivia_qa", "definition_extraction")}
    assert all(r["multi_model_prompt"].startswith(templates[r["task_name"]]) for r in rows)
    assert not any(k.startswith("multi_prompt_") for r in rows for k in r)


def test_demo_builds_offline_from_the_repo(tmp_path, capsys):
    code, _, err = run_cli(make_dataset.main, ["--dataset_config", ROOT / "dataset_configs" / "demo.yaml",
                                               "--data_dir", tmp_path], capsys)
    assert code == 0, err
    test = [json.loads(x) for x in (tmp_path / "demo_test.jsonl").read_text().splitlines()]
    train = [json.loads(x) for x in (tmp_path / "demo_train.jsonl").read_text().splitlines()]
    assert len(test) == 100 and len(train) == 40
    assert all(isinstance(r["reference"], list) and r["reference"] for r in test)
    assert all(f"multi_prompt_{i}" in test[0] for i in range(4))
    assert not {r["embedding_input"] for r in test} & {r["embedding_input"] for r in train}


def _error(tmp_path, capsys, config, *needles, source=None):
    argv = ["--dataset_config", config, "--data_dir", tmp_path / "o"] + (["--source", source] if source else [])
    code, _, err = run_cli(make_dataset.main, argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, err


def test_bad_inputs(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: no_such_dataset\n")
    _error(tmp_path, capsys, bad, "unknown dataset", "no_such_dataset")
    missing = tmp_path / "missing.yaml"
    missing.write_text("dataset: gsm8k\nmulti_model_prompt_template: no_such_template\n")
    _error(tmp_path, capsys, missing, "no_such_template.txt", "not found")
    wrong_field = tmp_path / "wrong_field.txt"
    wrong_field.write_text("Q: {questoin}\nA:")
    src = tmp_path / "src"
    write_source(src, "gsm8k")
    cfg = tmp_path / "wf.yaml"
    cfg.write_text(f"dataset: gsm8k\nmulti_model_prompt_template: {wrong_field}\ntrain_size: 2\ntest_size: 2\n")
    _error(tmp_path, capsys, cfg, "wrong_field.txt", "questoin", source=src)
    cols = tmp_path / "cols"
    cols.mkdir()
    (cols / "train.jsonl").write_text(json.dumps({"question": "q", "solution": "s"}) + "\n")
    (cols / "test.jsonl").write_text(json.dumps({"question": "q", "solution": "s"}) + "\n")
    _error(tmp_path, capsys, write_config(tmp_path, "gsm8k"), "train.jsonl", "answer", source=cols)
    _error(tmp_path, capsys, tmp_path / "nope.yaml", "nope.yaml", "not found")


def test_mix_instruct_samples_first_then_drops_rows_without_comparisons(tmp_path, capsys):
    """As the paper's code: draw test_size rows, then drop those ChatGPT did not compare."""
    import pandas as pd

    _, rows, _ = build(tmp_path, capsys, "mix_instruct", train_size=3, test_size=5)
    drawn = pd.RangeIndex(12).to_series().sample(n=5, random_state=42).tolist()
    kept = [i for i in drawn if i % 5]  # _mix gives rows i % 5 == 0 no comparisons
    assert len(rows["test"]) == len(kept) < 5
    assert [r["embedding_input"] for r in rows["test"]] == [f"Write a greeting {i}." for i in kept]


def test_mix_instruct_labelled_baselines_stop_with_one_line(tmp_path, capsys):
    """Train rows without comparisons have no rank table: Best-on-Val says so instead of a traceback."""
    from src import labeled_oracle

    _, rows, _ = build(tmp_path, capsys, "mix_instruct", train_size=8, test_size=12)
    assert any(r["reference"] is None for r in rows["train"])
    assert all(isinstance(r["reference"], dict) for r in rows["test"])
    config = tmp_path / "mix_instruct.yaml"
    code, _, err = run_cli(labeled_oracle.main, ["--dataset_config", config, "--data_dir", tmp_path / "out",
                                                 "--results_dir", tmp_path / "results", "--model_group",
                                                 "mix_instruct", "--multi_model", "--n_labels", 8], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "mix_instruct_train.jsonl" in err and "no reference" in err


def test_hub_parquet_conversion_layout(tmp_path, capsys):
    """Script-based hub datasets (legalbench; web_nlg, e2e_nlg, xsum if they still ship one) are read
    from the hub's Parquet conversion, <config>/<split>/NNNN.parquet. The same loader reads a local
    tree in that layout, split names such as 'dev' kept."""
    import pandas as pd

    from src.tasks.registry import TASKS
    from src.tasks.sources import export_config, hub_export_base, load_parquet_export

    root = tmp_path / "export"
    for task, split, n in (("web_nlg", "dev", 9), ("web_nlg", "train", 8), ("definition_extraction", "test", 106)):
        make = SOURCES[task][0]
        folder = root / export_config(TASKS[task]) / split
        folder.mkdir(parents=True)
        rows = [make(i) for i in range(n)]
        half = n // 2  # two shards, as the hub writes large splits
        pd.DataFrame(rows[:half]).to_parquet(folder / "0000.parquet")
        pd.DataFrame(rows[half:]).to_parquet(folder / "0001.parquet")
    assert (root / "release_v3.0_en" / "dev").is_dir() and (root / "definition_extraction" / "test").is_dir()
    ds = load_parquet_export(str(root), "release_v3.0_en", "dev")
    assert len(ds) == 9 and "modified_triple_sets" in ds.column_names
    assert hub_export_base("nguha/legalbench") == "hf://datasets/nguha/legalbench@refs%2Fconvert%2Fparquet"
    assert TASKS["definition_extraction"].parquet_export
    # make_dataset reads the same layout through --source
    for task, sizes in (("web_nlg", {"train_size": 3, "test_size": 4}), ("definition_extraction", {})):
        config = write_config(tmp_path, task, **sizes)
        code, out, err = run_cli(make_dataset.main, ["--dataset_config", config, "--source", root, "--data_dir",
                                                     tmp_path / "o"], capsys)
        assert code == 0, err
    test = [json.loads(x) for x in (tmp_path / "o" / "definition_extraction_test.jsonl").read_text().splitlines()]
    assert len(test) == 4 and all(r["reference"].startswith("term") for r in test)
