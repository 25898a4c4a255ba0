"""`run_smoothie` and `route` end to end: on the project's own SmolLM2 tree everywhere, and on
real files (GSM8K solutions of four OpenAI systems) where ../shared/data is present."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, minilm, run_cli

from src import route, run_smoothie
from src.cleaning import clean_for_task
from src.smoothie import smoothie_weights


def _args(tree, *extra):
    return tree.setting_args("--embedding_model", minilm(), *extra)


def _rows(tree, split):
    return [json.loads(x) for x in (tree.data_dir / f"{tree.stem}_{split}.jsonl").read_text().splitlines()]


def _gens(tree, split):
    return [json.loads((tree.folder / f"{g}_{split}.json").read_text())["generations"] for g in tree.generators]


@pytest.mark.parametrize("kind,k", [("sample_independent", 1), ("sample_dependent", 1), ("sample_dependent", 5)])
def test_run_smoothie_writes_documented_schema(tree, capsys, kind, k):
    code, out, err = run_cli(run_smoothie.main, _args(tree, "--type", kind, "--k", k), capsys)
    assert code == 0, err
    stem = f"smoothie_{kind}_{tree.group}{'_' + str(k) if kind == 'sample_dependent' else ''}_all-MiniLM-L6-v2_test.json"
    path = tree.folder / stem
    assert path.is_file(), sorted(p.name for p in path.parent.iterdir())
    data = json.loads(path.read_text())
    assert data["generators"] == tree.generators
    w = np.array(data["smoothie_weights"])
    assert w.shape == (tree.n_test, len(tree.generators))
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert data["selected"] == w.argmax(axis=1).tolist()
    gens = _gens(tree, "test")
    assert data["generations"] == [gens[s][i] for i, s in enumerate(data["selected"])]  # raw, uncleaned
    if kind == "sample_independent":
        assert (w == w[0]).all()
    else:
        assert len({tuple(r) for r in w.round(12)}) > tree.n_test // 3  # weights vary per sample


def test_route_matches_run_smoothie_and_the_estimator(tree, capsys, tmp_path):
    """route on the same files gives run_smoothie's weights, and both are the estimator's on the
    embeddings of the cleaned texts (cleaning as the task says: gsm8k is not cleaned)."""
    run_cli(run_smoothie.main, _args(tree, "--type", "sample_dependent", "--k", 5), capsys)
    files = [tree.folder / f"{g}_test.json" for g in tree.generators]
    out = tmp_path / "routed.json"
    inputs = tree.data_dir / f"{tree.stem}_test.jsonl"
    clean = tree.task != "gsm8k"
    code, stdout, err = run_cli(route.main, ["--inputs", inputs, "--generations", *files, "--output", out,
                                             "--type", "sample_dependent", "--k", 5, "--embedding_model", minilm(),
                                             *([] if clean else ["--no_clean"])], capsys)
    assert code == 0, err
    routed = json.loads(out.read_text())
    assert routed["generators"] == tree.generators
    ran = json.loads((tree.folder / f"smoothie_sample_dependent_{tree.group}_5_all-MiniLM-L6-v2_test.json").read_text())
    np.testing.assert_allclose(routed["smoothie_weights"], ran["smoothie_weights"], rtol=1e-12)
    assert routed["generations"] == ran["generations"]

    from src.embeddings import Embedder

    emb = Embedder(minilm(), show_progress=False)
    gens, rows = _gens(tree, "test"), _rows(tree, "test")
    m = len(gens)
    texts = [clean_for_task(t[i], tree.task) for i in range(len(rows)) for t in gens]
    if clean:
        assert any(t != raw for t, raw in zip(texts, [t[i] for i in range(len(rows)) for t in gens]))
    lam = emb.embed(texts).reshape(len(rows), m, -1)
    x = emb.embed([r["embedding_input"] for r in rows])
    np.testing.assert_allclose(routed["smoothie_weights"], smoothie_weights(lam, x, k=5), rtol=1e-9)


def test_second_run_skips_and_redo_recomputes(tree, capsys):
    args = _args(tree, "--type", "sample_independent")
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


def test_bad_inputs(tree, capsys, tmp_path):
    config, results, data_dir = tree.config, tree.results, tree.data_dir
    files = [tree.folder / f"{g}_test.json" for g in tree.generators]
    out = tmp_path / "o.json"
    short = tmp_path / "short.json"
    short.write_text(json.dumps({"generations": ["a", "b"]}))
    n = tree.n_test
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    base = ["--output", out, "--embedding_model", minilm()]
    # generation files of different lengths
    _one_line_error(*run_cli(route.main, ["--generations", files[0], files[1], short] + base, capsys)[:3:2],
                    "short.json", "2 entries")
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
    two = results / tree.stem / "two"
    two.mkdir(exist_ok=True)
    for f in files[:2]:
        (two / f.name).write_text(f.read_text())
    _one_line_error(*run_cli(run_smoothie.main, ["--dataset_config", config, "--results_dir", results,
                                                 "--data_dir", data_dir, "--model_group", "two",
                                                 "--multi_model", "--type", "sample_independent"],
                             capsys)[:3:2], "at least 3 generators")
    # the same file three times is one generator, not three
    _one_line_error(*run_cli(route.main, ["--generations", files[0], files[0], files[0]] + base, capsys)[:3:2],
                    "more than once")
    # files of empty lists
    empty = [tmp_path / f"e{i}.json" for i in range(3)]
    for e in empty:
        e.write_text(json.dumps({"generations": []}))
    _one_line_error(*run_cli(route.main, ["--generations", *empty] + base, capsys)[:3:2], "no generations")
    # --inputs of another length: the inputs file is named, not the answers
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps({"embedding_input": f"q{i}"}) + "\n" for i in range(n - 1)))
    _one_line_error(*run_cli(route.main, ["--generations", *files[:3], "--inputs", inputs] + base, capsys)[:3:2],
                    "--inputs", "inputs.jsonl", f"{n - 1} rows")
    # more neighbours than samples
    _one_line_error(*run_cli(run_smoothie.main, _args(tree, "--type", "sample_dependent", "--k", n + 1),
                             capsys)[:3:2], f"--k {n + 1}", f"{n} test samples")
    # --type is required (SPEC 3.3), --k 0 is refused
    _one_line_error(*run_cli(run_smoothie.main, _args(tree), capsys)[:3:2], "--type")
    _one_line_error(*run_cli(run_smoothie.main, _args(tree, "--type", "sample_dependent", "--k", 0),
                             capsys)[:3:2], "--k", "at least 1")
    # --k with Smoothie-Global has no effect: said, not silently accepted
    code, out, err = run_cli(run_smoothie.main, _args(tree, "--type", "sample_independent", "--k", 5), capsys)
    assert code == 0 and "no effect" in out, err


def test_command_line_entry_point_exit_status(tmp_path):
    """The real `python -m` path: a missing file gives one line on stderr and status 2."""
    proc = subprocess.run([sys.executable, "-m", "src.route", "--generations", "a.json", "b.json", "c.json",
                           "--output", str(tmp_path / "o.json")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "a.json" in proc.stderr and "Traceback" not in proc.stderr


def test_train_time_and_full_text_variants(tree, capsys):
    """--regime train_time estimates on the train split; --use_full_text_embeddings embeds input + output.
    Each writes its own file, and the weights equal the estimator's on those embeddings."""
    from src.embeddings import Embedder

    args = _args(tree, "--type", "sample_dependent", "--k", 3)
    assert run_cli(run_smoothie.main, args + ["--regime", "train_time"], capsys)[0] == 0
    assert run_cli(run_smoothie.main, args + ["--use_full_text_embeddings"], capsys)[0] == 0
    stem = f"smoothie_sample_dependent_{tree.group}_3"
    train_time = json.loads((tree.folder / f"{stem}_train_time_all-MiniLM-L6-v2_test.json").read_text())
    full = json.loads((tree.folder / f"{stem}_all-MiniLM-L6-v2_full_text_test.json").read_text())

    emb = Embedder(minilm(), show_progress=False)
    rows = {s: _rows(tree, s) for s in ("train", "test")}
    gens = {s: _gens(tree, s) for s in ("train", "test")}
    m = len(tree.generators)

    def lam(split, full_text=False):
        texts = [(rows[split][i]["embedding_input"] + " " if full_text else "") + clean_for_task(gens[split][j][i], tree.task)
                 for i in range(len(rows[split])) for j in range(m)]
        return emb.embed(texts).reshape(len(rows[split]), m, -1)

    x = {s: emb.embed([r["embedding_input"] for r in rows[s]]) for s in rows}
    want = smoothie_weights(lam("test"), x["test"], k=3, train_embeddings=lam("train"), train_input_embeddings=x["train"])
    np.testing.assert_allclose(train_time["smoothie_weights"], want, rtol=1e-9)
    np.testing.assert_allclose(full["smoothie_weights"], smoothie_weights(lam("test", True), x["test"], k=3), rtol=1e-9)
