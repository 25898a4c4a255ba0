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
from pathlib import Path

from src import cli
from src.io import atomic_write_text, read_json
from src.methods.registry import BASELINES
from src.paths import DEFAULT_EMBEDDER, Setting, results_root, shipped

TABLE1_TASKS = ["cnn_dailymail", "definition_extraction", "e2e_nlg", "squad", "trivia_qa", "web_nlg", "xsum"]


def _is_group(config: str) -> bool:
    path = shipped("dataset_configs") / f"{config}.yaml"
    return config.endswith("_group") or (path.is_file() and "tasks:" in path.read_text())


def _headline(scores: dict) -> tuple[str, dict]:
    """The metric a table shows: the all-rows average for mixed groups, else the only metric."""
    key = "average" if "average" in scores else next(iter(scores))
    return key, scores[key]


def collect(results: Path, embedding_model: str = DEFAULT_EMBEDDER) -> list[dict]:
    """One record per results folder that has a scores.json; Smoothie rows are the runs made
    with ``embedding_model``."""
    records = []
    for path in sorted(results.glob("*/*/scores.json")):
        folder, config = path.parent, path.parent.parent.name
        multi_prompt = (folder / "individual_test.json").exists()
        setting = Setting(config=config, results_dir=results, model=folder.name) if multi_prompt else Setting(
            config=config, results_dir=results, group=folder.name)
        metric, s = _headline(read_json(path))
        smoothie = s.get("smoothie", {})

        def stem(type_, k=None, setting=setting):
            return setting.smoothie_file(type_, k, embedding_model=embedding_model).name[: -len("_test.json")]

        ensemble = s["ensemble"]
        records.append({
            "config": config, "folder": folder.name, "multi_prompt": multi_prompt, "metric": metric,
            "setting": setting, "embedding_model": embedding_model,
            "values": {
                **{m.column: s.get(m.name) for m in BASELINES},
                "Random": s.get("pick_random", sum(ensemble.values()) / len(ensemble)),
                "Ensemble mean": sum(ensemble.values()) / len(ensemble),
                "Smoothie-Global": smoothie.get(stem("sample_independent")),
                "Smoothie-Local": smoothie.get(stem("sample_dependent", 1)),
                "Best-Model": s.get("best_single"),
                "Oracle": s.get("oracle"),
            },
            "ensemble": ensemble,
        })
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
                        ["Random", "Smoothie-Global", "Best-on-Val"],
                        "Table 1: Smoothie-Global selects one generator per dataset", "ensemble"),
        "table2": _grid(groups, sorted({r["config"] for r in groups}), lambda r: r["config"],
                        ["Random", "PairRM", "Labeled-KNN", "Best-Model", "Smoothie-Global", "Smoothie-Local"],
                        "Table 2: routing per sample on task groups", "ensemble"),
        "table3": _grid(prompts, TABLE1_TASKS + sorted({r["config"] for r in prompts} - set(TABLE1_TASKS)),
                        lambda r: r["config"], ["Random", "Smoothie-Global", "Smoothie-Local", "Best-on-Val"],
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
    for label, xs, ys in points:
        ax.scatter(xs, ys, label=label, s=28)
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
    args = p.parse_args(argv)
    results = results_root(args.results_dir)
    records = collect(results, args.embedding_model)
    if not records:
        raise cli.UserError(f"{results}: no */*/scores.json found (run `python -m src.evaluate.evaluate` first)")
    out_dir = Path(args.out_dir) if args.out_dir else results / "paper"
    for name, (md, tex) in build_tables(records).items():
        atomic_write_text(out_dir / f"{name}.md", md)
        atomic_write_text(out_dir / f"{name}.tex", tex)
        print(md)
    fig = weights_figure(records, out_dir / "smoothie_weights.png")
    print(f"wrote tables{' and ' + str(fig) if fig else ''} to {out_dir}")


if __name__ == "__main__":
    cli.run(main)
