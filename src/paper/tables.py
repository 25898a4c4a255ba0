"""The paper's tables and a figure, from whatever results exist under a results folder.

    python -m src.paper.tables --results_dir results

Reads every ``<config>/<group or model>/scores.json`` and writes, under ``<results>/paper/``:
Table 1 (one generator selected per single-task dataset, multi-model), Table 2 (per-sample
routing on task groups), Table 3 (prompt selection, multi-prompt), each as Markdown and LaTeX,
and ``smoothie_weights.png``: Smoothie-Global's weight for each generator against that
generator's true score. Scores are shown x100, as in the paper; a missing run shows as "-".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from src import cli, manifest
from src.evaluate.evaluate import metric_entries, scores_problems
from src.experiment import Experiment
from src.io import atomic_write_text, read_json
from src.methods.registry import BASELINES, label
from src.paths import DEFAULT_EMBEDDER, Setting, datasets_dir, results_root, shipped

LABELLED_N = 5  # Labelled Smoothie's column: the default label count of src.labeled_smoothie
TABLE1_TASKS = ["cnn_dailymail", "definition_extraction", "e2e_nlg", "squad", "trivia_qa", "web_nlg", "xsum"]


def _is_group(config: str) -> bool:
    path = shipped("dataset_configs") / f"{config}.yaml"
    return config.endswith("_group") or (path.is_file() and "tasks:" in path.read_text())


def _headline(scores: dict) -> tuple[str, dict]:
    """The metric a table shows: the all-rows average for mixed groups, else the only metric."""
    key = "average" if "average" in scores else next(iter(scores))
    return key, scores[key]


def _scores_file(folder: Path, allow_partial: bool) -> Path | None:
    """A folder's full ``scores.json``; with ``allow_partial`` a ``--max_samples`` run's
    ``scores_first<N>.json`` where there is no full one (the largest N)."""
    full = folder / "scores.json"
    if full.is_file() or not allow_partial:
        return full if full.is_file() else None
    partial = sorted(folder.glob("scores_first*.json"), key=lambda p: int(p.stem[len("scores_first"):] or 0))
    return partial[-1] if partial else None


def _problems(path: Path, scores: dict, setting: Setting) -> list[str]:
    """Why a folder's scores no longer describe it: the rule ``evaluate`` and the report use
    (``scores_problems``), with the config and row count the scores record."""
    recorded = scores.get(manifest.KEY)
    if not isinstance(recorded, dict):
        return manifest.compare(None, {}).reasons
    config = Path(recorded.get("settings", {}).get("dataset_config") or "")
    if not config.is_file():
        return [f"its dataset config {config} is no longer there"]
    if path.name.startswith("scores_first"):
        setting = replace(setting, max_samples=int(path.stem[len("scores_first"):]))
    no_clean = recorded.get("settings", {}).get("clean") is False  # as evaluate was told
    return scores_problems(Experiment(setting, str(config), no_clean), scores)


def record(scores: dict, setting: Setting, folder: str, embedding_model: str, multi_prompt: bool) -> dict:
    """One table row group from a folder's (checked) scores: each column's value, Smoothie's found
    by the label its manifest records for ``embedding_model``'s runs."""
    recorded = scores[manifest.KEY]
    labels = recorded["settings"].get("labels", {})
    metric, s = _headline(metric_entries(scores))
    smoothie = s.get("smoothie", {})

    def by_label(type_, k=None):
        want = label({"method": "smoothie", "type": type_, "k": k, "embedding_model": embedding_model})
        return next((v for stem, v in smoothie.items() if labels.get(stem) == want), None)

    ensemble = s["ensemble"]
    labelled = s.get("labeled_smoothie", s.get(f"labeled_smoothie_{LABELLED_N}"))
    return {
        "config": setting.config, "metric": metric, "multi_prompt": multi_prompt,
        "folder": folder + (f" (first {recorded.get('rows')} rows)" if recorded["settings"].get("partial") else ""),
        "setting": setting, "embedding_model": embedding_model,
        "values": {
            **{m.column: s.get(m.name) for m in BASELINES},
            "Labeled-Smoothie": labelled,
            "Random": s.get("pick_random", sum(ensemble.values()) / len(ensemble)),
            "Ensemble mean": sum(ensemble.values()) / len(ensemble),
            "Smoothie-Global": by_label("sample_independent"),
            "Smoothie-Local": by_label("sample_dependent", 1),
            "Best-Model": s.get("best_single"),
            "Oracle": s.get("oracle"),
        },
        "ensemble": ensemble,
    }


def collect(results: Path, embedding_model: str = DEFAULT_EMBEDDER, allow_partial: bool = False,
            data_dir: Path | None = None) -> list[dict]:
    """One record per results folder that has scores; Smoothie rows are the runs made with
    ``embedding_model``, found by the labels their manifests give them. Partial results (a
    ``--max_samples`` run) only with ``allow_partial``, marked as such; stale scores are refused."""
    records, stale = [], []
    data_dir = data_dir or datasets_dir()
    for folder in sorted(p for p in results.glob("*/*") if p.is_dir()):
        path = _scores_file(folder, allow_partial)
        if path is None:
            continue
        config = folder.parent.name
        multi_prompt = (folder / "individual_test.json").exists()
        setting = Setting(config=config, results_dir=results, data_dir=data_dir,
                          **({"model": folder.name} if multi_prompt else {"group": folder.name}))
        scores = read_json(path)
        problems = _problems(path, scores, setting)
        if problems:
            stale.append(f"{path} ({'; '.join(problems)})")
            continue
        records.append(record(scores, setting, folder.name, embedding_model, multi_prompt))
    if stale:
        raise cli.UserError(f"{len(stale)} scores file(s) no longer match their folders: {' | '.join(stale)}; rerun "
                            "python -m src.evaluate.evaluate there")
    return records


def _cell(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _render(title: str, header: list[str], rows: list[list[str]]) -> tuple[str, str]:
    md = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    tex = ["\\begin{tabular}{" + "l" * 2 + "r" * (len(header) - 2) + "}", "\\toprule",
           " & ".join(h.replace("_", "\\_") for h in header) + " \\\\", "\\midrule"]
    tex += [" & ".join(c.replace("_", "\\_") for c in r) + " \\\\" for r in rows]
    tex += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(md) + "\n", "\n".join(tex) + "\n"


def _grid(records, columns, column_of, methods, title, label):
    """Rows (folder, method) x columns; records placed by ``column_of(record)``."""
    cells, folders = {}, []
    for r in records:
        col = column_of(r)
        if col not in columns:
            continue
        if r["folder"] not in folders:
            folders.append(r["folder"])
        for m in methods:
            cells[(r["folder"], m, col)] = r["values"].get(m)
    rows = [[f, m] + [_cell(cells.get((f, m, c))) for c in columns] for f in folders for m in methods]
    return _render(title, [label, "method"] + columns, rows) if rows else None


def build_tables(records: list[dict]) -> dict[str, tuple[str, str]]:
    multi_model = [r for r in records if not r["multi_prompt"]]
    single = [r for r in multi_model if not _is_group(r["config"])]
    groups = [r for r in multi_model if _is_group(r["config"])]
    prompts = [r for r in records if r["multi_prompt"]]
    extra_tasks = sorted({r["config"] for r in single} - set(TABLE1_TASKS))
    tables = {
        "table1": _grid(single, TABLE1_TASKS + extra_tasks, lambda r: r["config"],
                        ["Random", "Smoothie-Global", "Best-on-Val", "Labeled-Smoothie"],
                        "Table 1: Smoothie-Global selects one generator per dataset", "ensemble"),
        "table2": _grid(groups, sorted({r["config"] for r in groups}), lambda r: r["config"],
                        ["Random", "PairRM", "Labeled-KNN", "Best-Model", "Smoothie-Global", "Smoothie-Local",
                         "Labeled-Smoothie"],
                        "Table 2: routing per sample on task groups", "ensemble"),
        "table3": _grid(prompts, TABLE1_TASKS + sorted({r["config"] for r in prompts} - set(TABLE1_TASKS)),
                        lambda r: r["config"], ["Random", "Smoothie-Global", "Smoothie-Local", "Best-on-Val",
                                                "Labeled-Smoothie"],
                        "Table 3: prompt selection", "model"),
    }
    return {k: v for k, v in tables.items() if v is not None}


def weights_figure(records: list[dict], out: Path) -> Path | None:
    """Smoothie-Global weight against true score, one point per generator, a colour per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = []
    for r in records:
        path = r["setting"].smoothie_file("sample_independent", embedding_model=r["embedding_model"])
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        weights = dict(zip(data["generators"], data["smoothie_weights"][0]))
        xs = [weights[g] for g in r["ensemble"] if g in weights]
        ys = [100 * r["ensemble"][g] for g in r["ensemble"] if g in weights]
        points.append((f"{r['config']}/{r['folder']}", xs, ys))
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, xs, ys in points:
        ax.scatter(xs, ys, label=name, s=28)
    ax.set_xlabel("Smoothie-Global weight")
    ax.set_ylabel("generator's true score (x100)")
    ax.set_title("Does Smoothie weigh better generators higher?")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser("src.paper.tables", "Build the paper's tables and a weights figure from a results folder.")
    p.add_argument("--results_dir", default=None, help="results root (default $RESULTS_DIR or results)")
    p.add_argument("--out_dir", default=None, help="default: <results_dir>/paper")
    p.add_argument("--embedding_model", default=DEFAULT_EMBEDDER, help="show the Smoothie runs made with this embedder")
    p.add_argument("--data_dir", default=None, help="where the split files are (default $HF_DATASETS_DIR/datasets)")
    p.add_argument("--allow_partial", action="store_true",
                   help="also show --max_samples runs (scores_first<N>.json) where a folder has no full one, marked "
                        "'(first N rows)'")
    args = p.parse_args(argv)
    results = results_root(args.results_dir)
    records = collect(results, args.embedding_model, args.allow_partial,
                      Path(args.data_dir) if args.data_dir else None)
    if not records:
        raise cli.UserError(f"{results}: no */*/scores.json found (run `python -m src.evaluate.evaluate` first"
                            f"{'' if args.allow_partial else '; partial runs show with --allow_partial'})")
    out_dir = Path(args.out_dir) if args.out_dir else results / "paper"
    used = [_scores_file(r["setting"].folder, args.allow_partial) for r in records]
    recorded = json.dumps(manifest.build(used, {"embedding_model": args.embedding_model,
                                                "allow_partial": args.allow_partial}, kind="tables",
                                         base=results))
    for name, (md, tex) in build_tables(records).items():
        atomic_write_text(out_dir / f"{name}.md", md + f"\n<!-- {manifest.KEY}: {recorded} -->\n")
        atomic_write_text(out_dir / f"{name}.tex", tex + f"% {manifest.KEY}: {recorded}\n")
        print(md)
    fig = weights_figure(records, out_dir / "smoothie_weights.png")
    print(f"wrote tables{' and ' + str(fig) if fig else ''} to {out_dir}")


if __name__ == "__main__":
    cli.run(main)
