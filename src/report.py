"""A short human-readable report of one results folder: the scores table and a bar chart.

    python -m src.report --dataset_config dataset_configs/demo.yaml --model smollm2-135m \
        --multi_prompt --output results/demo/report.md

Reads the folder's ``scores.json`` (run ``python -m src.evaluate.evaluate`` first) and writes
the Markdown report and a PNG figure beside it: each generator's score (per prompt, or per
model) and each routing method's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from src import cli, manifest
from src.evaluate.evaluate import metric_entries, scores_problems
from src.evaluate.metrics import LOWER_IS_BETTER
from src.experiment import Experiment
from src.io import atomic_write_text, read_json
from src.methods.registry import BASELINES, method_keys
from src.paths import Setting
from src.tasks.config import load_config

EXTRA_LABELS = {"oracle": "Oracle (best per sample)", "best_single": "Best single generator"}


def method_rows(entry: dict, labels: dict[str, str]) -> list[tuple[str, float]]:
    """(display name, score) of each method in a scores entry; names come from the method files'
    manifests, as ``evaluate`` recorded them."""
    rows = [(labels.get(stem, stem), value) for stem, value in entry["smoothie"].items()]
    rows += [(labels.get(key, key), entry[key]) for m in BASELINES for key in method_keys(entry, m.name)]
    rows += [(EXTRA_LABELS["best_single"] + f" ({entry['best_generator']})", entry["best_single"]),
             (EXTRA_LABELS["oracle"], entry["oracle"])]
    return rows


def figure(entry: dict, metric: str, out: Path, labels: dict[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gens = list(entry["ensemble"].items())
    methods = method_rows(entry, labels)
    names = [g for g, _ in gens] + [m for m, _ in methods]
    values = [100 * v for _, v in gens] + [100 * v for _, v in methods]
    colours = ["#9bb7d4"] * len(gens) + ["#e07b39" if n.startswith("Smoothie") else "#7f7f7f" for n in names[len(gens):]]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.2))
    ax.barh(range(len(names)), values, color=colours)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric} (x100)")
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.1f}", va="center", fontsize=7)
    ax.set_title("Generators (blue) and routing methods (orange: Smoothie, no labels)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def render(setting: Setting, config_path: str, scores: dict, png_names: dict[str, str]) -> str:
    recorded = scores.get(manifest.KEY, {})
    labels = recorded.get("settings", {}).get("labels", {})
    partial = (f" (partial: the first {recorded.get('rows')} test rows only, --max_samples)"
               if recorded.get("settings", {}).get("partial") else "")
    lines = [f"# Smoothie report: {setting.config} / {setting.folder.name}{partial}", "",
             f"Scores on {setting.split_file('test').name}, x100. Smoothie and MBR use no labels; "
             "Best-on-Val and labelled kNN see labelled train samples (50 per trial by default, or the whole "
             "train split when it is smaller; 10 trials).", ""]
    for metric, entry in metric_entries(scores).items():
        direction = " (lower is better)" if metric in LOWER_IS_BETTER else ""
        lines += [f"## `{metric}`{direction}", "", "| generator or method | score |", "|---|---|"]
        lines += [f"| {g} | {100 * v:.1f} |" for g, v in entry["ensemble"].items()]
        lines += [f"| **{m}** | {100 * v:.1f} |" for m, v in method_rows(entry, labels)]
        lines += ["", f"![{metric}]({png_names[metric]})", ""]
    config = load_config(config_path)
    templates = config.tasks[0].multi_prompt_templates
    if not setting.multi_model and templates:
        lines += ["## The prompts", ""]
        for i, t in enumerate(templates):
            lines += [f"`prompt_{i}`:", "", "```", t.text, "```", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser("src.report", "Write a Markdown report with a figure for one results folder.")
    cli.add_setting_flags(p)
    p.add_argument("--output", default=None, help="report path (default: <results folder>/report.md)")
    args = p.parse_args(argv)
    setting = Setting.from_args(args)
    scores_path = setting.scores_file()
    scores = read_json(scores_path, what="scores file (run `python -m src.evaluate.evaluate` first)")
    problems = scores_problems(Experiment(setting, args.dataset_config, args.no_clean), scores)
    if problems:
        raise cli.UserError(f"{scores_path} is stale ({'; '.join(problems)}); rerun python -m src.evaluate.evaluate "
                            "with the same flags")
    labels = scores.get(manifest.KEY, {}).get("settings", {}).get("labels", {})
    out = Path(args.output) if args.output else setting.folder / "report.md"
    pngs = {}
    for i, (metric, entry) in enumerate(metric_entries(scores).items()):
        png = out.with_suffix(".png") if i == 0 else out.with_name(f"{out.stem}_{metric}.png")
        figure(entry, metric, png, labels)
        pngs[metric] = png.name
    text = render(setting, args.dataset_config, scores, pngs)
    recorded = manifest.build([scores_path], {"partial": bool(setting.max_samples)}, kind="report",
                              base=setting.results_dir)
    atomic_write_text(out, text + f"\n<!-- {manifest.KEY}: {json.dumps(recorded)} -->\n")
    print(f"wrote {out} and {', '.join(pngs.values())}")


if __name__ == "__main__":
    cli.run(main)
