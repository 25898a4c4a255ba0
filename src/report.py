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
from src.io import atomic_write_text, read_json
from src.paths import Setting
from src.tasks.config import load_config

LABELS = {"pick_random": "Random pick (per sample)", "labeled_oracle": "Best-on-Val (labelled)",
          "labeled_knn": "Labelled kNN (labelled)", "mbr": "MBR (label-free)", "pair_rm": "PairRM",
          "oracle": "Oracle (best per sample)", "best_single": "Best single generator"}


def method_rows(entry: dict) -> list[tuple[str, float]]:
    rows = []
    for stem, value in entry["smoothie"].items():
        kind = "Smoothie-Global" if "sample_independent" in stem else "Smoothie-Local"
        rows.append((f"{kind} ({stem})", value))
    rows += [(LABELS[k], entry[k]) for k in ("pick_random", "labeled_oracle", "labeled_knn", "mbr", "pair_rm")
             if k in entry]
    rows += [(LABELS["best_single"] + f" ({entry['best_generator']})", entry["best_single"]),
             (LABELS["oracle"], entry["oracle"])]
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


def render(setting: Setting, config_path: str, scores: dict, png_name: str) -> str:
    metric = next(iter(scores))
    entry = scores[metric]
    lines = [f"# Smoothie report: {setting.config} / {setting.folder.name}", "",
             f"Metric: `{metric}` on {setting.split_file('test').name}, x100. Smoothie and MBR use no labels; "
             "Best-on-Val and labelled kNN see labelled train samples (50 per trial by default, or the whole "
             "train split when it is smaller; 10 trials).", "",
             "| generator or method | score |", "|---|---|"]
    lines += [f"| {g} | {100 * v:.1f} |" for g, v in entry["ensemble"].items()]
    lines += [f"| **{m}** | {100 * v:.1f} |" for m, v in method_rows(entry)]
    lines += ["", f"![scores]({png_name})", ""]
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
    png = out.with_suffix(".png")
    figure(scores[next(iter(scores))], next(iter(scores)), png)
    atomic_write_text(out, render(setting, args.dataset_config, scores, png.name))
    print(f"wrote {out} and {png}")


if __name__ == "__main__":
    cli.run(main)
