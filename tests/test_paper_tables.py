"""src.paper.tables: where each value lands in the three tables and the figure (from hand-written
scores; that stale or hand-written scores are refused, and the whole command on a real pipeline
run, are in test_freshness.py and test_paper_reproduce.py)."""

from __future__ import annotations

import json

from conftest import run_cli

from src.paper import tables
from src.paths import Setting


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


# display names as evaluate records them from each method file's manifest (src.methods.registry.label)
LABELS = {"smoothie_sample_independent_3b": "Smoothie-Global",
          "smoothie_sample_independent_3b_all-MiniLM-L6-v2": "Smoothie-Global, all-MiniLM-L6-v2",
          "smoothie_sample_dependent_7b_1": "Smoothie-Local k=1", "smoothie_sample_independent_7b": "Smoothie-Global",
          "smoothie_sample_independent": "Smoothie-Global", "smoothie_sample_dependent_1": "Smoothie-Local k=1"}


def _manifest(entries: dict) -> dict:
    stems = {s for e in entries.values() for s in e.get("smoothie", {})}
    return {"kind": "scores", "inputs": {}, "models": {}, "rows": 1,
            "settings": {"partial": False, "labels": {s: LABELS[s] for s in stems}}}


def _scores(metric, ensemble, **methods):
    entries = {metric: {"ensemble": ensemble, "smoothie": methods.pop("smoothie", {}), **methods}}
    return {**entries, "manifest": _manifest(entries)}


def test_three_tables_and_figure(tmp_path):
    r = tmp_path / "results"
    _write(r / "squad/3b/scores.json", _scores(
        "squad_acc", {"dolly-3b": 0.5, "incite-3b": 0.7}, labeled_oracle=0.66, pick_random=0.6,
        smoothie={"smoothie_sample_independent_3b": 0.612, "smoothie_sample_independent_3b_all-MiniLM-L6-v2": 0.577}))
    _write(r / "squad/3b/smoothie_sample_independent_3b_test.json",
           {"generations": ["a"], "smoothie_weights": [[0.4, 0.6]], "generators": ["dolly-3b", "incite-3b"]})
    group = {
        "squad_acc": {"ensemble": {"a": 0.1}}, "average": {
            "ensemble": {"a": 0.5, "b": 0.8}, "smoothie": {"smoothie_sample_dependent_7b_1": 0.75,
                                                       "smoothie_sample_independent_7b": 0.665},
            "pick_random": 0.654, "labeled_knn": 0.717, "best_single": 0.732, "oracle": 0.9}}
    _write(r / "acc_group/7b/scores.json", {**group, "manifest": _manifest(group)})
    _write(r / "trivia_qa/falcon-1b/individual_test.json", {"generations": [["x", "y", "z"]]})
    _write(r / "trivia_qa/falcon-1b/scores.json", _scores(
        "trivia_qa_acc", {"prompt_0": 0.2, "prompt_1": 0.3, "prompt_2": 0.4},
        smoothie={"smoothie_sample_independent": 0.314, "smoothie_sample_dependent_1": 0.274}))

    def records(embedder="all-mpnet-base-v2"):
        out = []
        for config, folder, multi_prompt in (("acc_group", "7b", False), ("squad", "3b", False),
                                             ("trivia_qa", "falcon-1b", True)):
            setting = Setting(config, r, **({"model": folder} if multi_prompt else {"group": folder}))
            scores = json.loads((setting.folder / "scores.json").read_text())
            out.append(tables.record(scores, setting, folder, embedder, multi_prompt))
        return out

    def render(recs, out_dir):
        for name, (md, tex) in tables.build_tables(recs).items():
            (out_dir / f"{name}.md").write_text(md)
            (out_dir / f"{name}.tex").write_text(tex)
        tables.weights_figure(recs, out_dir / "smoothie_weights.png")

    (r / "paper").mkdir()
    render(records(), r / "paper")
    t1 = (r / "paper/table1.md").read_text()
    assert "| 3b | Smoothie-Global | - | - | - | 61.2 |" in t1
    assert "| 3b | Best-on-Val | - | - | - | 66.0 |" in t1 and "| 3b | Random | - | - | - | 60.0 |" in t1
    t2 = (r / "paper/table2.md").read_text()
    for row in ("| 7b | Random | 65.4 |", "| 7b | Labeled-KNN | 71.7 |", "| 7b | Best-Model | 73.2 |",
                "| 7b | Smoothie-Global | 66.5 |", "| 7b | Smoothie-Local | 75.0 |", "| 7b | PairRM | - |"):
        assert row in t2, t2
    t3 = (r / "paper/table3.md").read_text()
    assert "| falcon-1b | Smoothie-Global | - | - | - | - | 31.4 |" in t3
    assert "| falcon-1b | Random | - | - | - | - | 30.0 |" in t3  # no pick_random file: mean of prompts
    for name in ("table1", "table2", "table3"):
        tex = (r / f"paper/{name}.tex").read_text()
        assert tex.startswith("\\begin{tabular}") and "\\bottomrule" in tex
    png = (r / "paper/smoothie_weights.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(r / "paper/smoothie_weights.png").shape[0] > 100


    (tmp_path / "minilm").mkdir()
    render(records("all-MiniLM-L6-v2"), tmp_path / "minilm")
    assert "| 3b | Smoothie-Global | - | - | - | 57.7 |" in (tmp_path / "minilm" / "table1.md").read_text()


def test_scores_without_a_manifest_are_refused(tmp_path, capsys):
    r = tmp_path / "results"
    _write(r / "squad/3b/scores.json", {"squad_acc": {"ensemble": {"a": 0.5}, "smoothie": {}}})
    code, _, err = run_cli(tables.main, ["--results_dir", r], capsys)
    assert code == 2 and "squad/3b/scores.json" in err and "no manifest" in err


def test_no_results_is_a_user_error(tmp_path, capsys):
    code, _, err = run_cli(tables.main, ["--results_dir", tmp_path], capsys)
    assert code == 2 and "scores.json" in err
