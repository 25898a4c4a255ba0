"""A short human-readable report of one results folder: the scores table and a bar chart.

    python -m src.report --dataset_config dataset_configs/demo.yaml --model smollm2-135m \
        --multi_prompt --output results/demo/report.md

Reads the folder's ``scores.json`` (run ``python -m src.evaluate.evaluate`` first) and writes
the Markdown report and a PNG figure beside it: each generator's score (per prompt, or per
model) and each routing method's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from src import cli
from src.evaluate.metrics import LOWER_IS_BETTER
from src.io import atomic_write_text, read_json
from src.methods.registry import BASELINES, method_keys
from src.paths import Setting
from src.tasks.config import load_config

EXTRA_LABELS = {"oracle": "Oracle (best per sample)", "best_single": "Best single generator"}


def smoothie_label(stem: str) -> str:
    """``smoothie_sample_dependent_3b_20_train_time`` -> ``Smoothie-Local k=20, train_time``: the bar
    names say which variant they are, not only which family."""
    kind = "Smoothie-Global" if "sample_independent" in stem else "Smoothie-Local"
    rest = stem.split("sample_independent" if kind == "Smoothie-Global" else "sample_dependent", 1)[1]
    parts = [p for p in rest.split("_") if p]
    details = []
    if kind == "Smoothie-Local":
        k = next((p for p in parts if p.isdigit()), None)
        if k is not None:
            details.append(f"k={k}")
    if "train" in parts and "time" in parts:
        details.append("train_time")
    if "gens" in parts:
        details.append(f"{parts[parts.index('gens') - 1]} gens")
    if "full" in parts and "text" in parts:
        details.append("full text")
    return kind + (f" {', '.join(details)}" if details else "")


def method_rows(entry: dict) -> list[tuple[str, float]]:
    rows = [(f"{smoothie_label(stem)} ({stem})", value) for stem, value in entry["smoothie"].items()]
    rows += [(m.label + (f", n={key[len(m.name) + 1:]}" if key != m.name else ""), entry[key])
             for m in BASELINES for key in method_keys(entry, m.name)]
    rows += [(EXTRA_LABELS["best_single"] + f" ({entry['best_generator']})", entry["best_single"]),
             (EXTRA_LABELS["oracle"], entry["oracle"])]
    return rows


def figure(entry: dict, metric: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gens = list(entry["ensemble"].items())
    methods = method_rows(entry)
    names = [g for g, _ in gens] + [m.split(" (")[0] for m, _ in methods]
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
    lines = [f"# Smoothie report: {setting.config} / {setting.folder.name}", "",
             f"Scores on {setting.split_file('test').name}, x100. Smoothie and MBR use no labels; "
             "Best-on-Val and labelled kNN see labelled train samples (50 per trial by default, or the whole "
             "train split when it is smaller; 10 trials).", ""]
    for metric, entry in scores.items():
        direction = " (lower is better)" if metric in LOWER_IS_BETTER else ""
        lines += [f"## `{metric}`{direction}", "", "| generator or method | score |", "|---|---|"]
        lines += [f"| {g} | {100 * v:.1f} |" for g, v in entry["ensemble"].items()]
        lines += [f"| **{m}** | {100 * v:.1f} |" for m, v in method_rows(entry)]
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
    scores = read_json(setting.scores_file(), what="scores file (run `python -m src.evaluate.evaluate` first)")
    out = Path(args.output) if args.output else setting.folder / "report.md"
    pngs = {}
    for i, (metric, entry) in enumerate(scores.items()):
        png = out.with_suffix(".png") if i == 0 else out.with_name(f"{out.stem}_{metric}.png")
        figure(entry, metric, png)
        pngs[metric] = png.name
    atomic_write_text(out, render(setting, args.dataset_config, scores, pngs))
    print(f"wrote {out} and {', '.join(pngs.values())}")


if __name__ == "__main__":
    cli.run(main)
