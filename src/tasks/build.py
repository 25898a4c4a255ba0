"""Turn a task's raw rows into the pipeline's split files (SPEC 3.1): fixed-seed samples with
rendered prompts, references and the text that locates neighbours."""

from __future__ import annotations

import ast
import json
import warnings
from collections import Counter

from src.cli import UserError
from src.paths import model_slug
from src.tasks.config import DatasetConfig, TaskConfig, Template
from src.tasks.sources import load_split, part_indices

SEED = 42


def sample_indices(n: int, size: int | None, what: str, seed: int = SEED) -> list[int]:
    """Row positions to keep, drawn as pandas' ``sample(n, random_state=42)`` draws them (the
    paper's splits); ``size=None`` keeps every row in order."""
    import pandas as pd

    if size is None:
        return list(range(n))
    if size > n:
        warnings.warn(f"{what}: asked for {size} rows but only {n} exist; using {n}", stacklevel=2)
        size = n
    return pd.RangeIndex(n).to_series().sample(n=size, random_state=seed).tolist()


def single_file_rows(n: int, tc: TaskConfig, split: str) -> list[int]:
    """A one-file source (a user's own task) is split in file order: the first ``train_size`` rows
    are the labelled train split, the next ``test_size`` (default: all the rest) the test split.
    File order, not a shuffle, so that answers a user already has, one per row in the same order,
    line up with the split files."""
    if tc.train_size is None:
        raise UserError(f"{tc.path}: a one-file source needs train_size (the first rows, labelled for baselines)")
    if tc.train_size >= n:
        raise UserError(f"{tc.path}: train_size {tc.train_size} leaves no test rows of the {n} in {tc.source}")
    if split == "train":
        return list(range(tc.train_size))
    end = n if tc.test_size is None else min(n, tc.train_size + tc.test_size)
    if tc.test_size is not None and tc.train_size + tc.test_size > n:
        warnings.warn(f"{tc.task.name} test: asked for {tc.test_size} rows but only {n - tc.train_size} remain",
                      stacklevel=2)
    return list(range(tc.train_size, end))


def _check_template(template: Template, available: set[str]) -> None:
    unknown = template.fields() - available
    if unknown:
        raise UserError(
            f"{template.path}: names field(s) {', '.join(sorted(unknown))} that the data lacks "
            f"(available: {', '.join(sorted(available))})"
        )


def _has_comparisons(cmp_results) -> bool:
    return cmp_results not in (None, "null", "", {})


def _ranks(cmp_results) -> dict[str, int]:
    """Candidates ranked by pairwise wins over the ChatGPT comparisons; ties share a rank."""
    if isinstance(cmp_results, str):
        try:
            cmp_results = json.loads(cmp_results)
        except json.JSONDecodeError:
            cmp_results = ast.literal_eval(cmp_results)
    wins: Counter = Counter()
    for pair, verdict in cmp_results.items():
        a, b = pair.split(",")
        wins[a] += verdict == "A is better"
        wins[b] += verdict == "B is better"
    ordered = sorted(wins.items(), key=lambda kv: -kv[1])
    ranks, previous = {}, None
    for position, (model, w) in enumerate(ordered, 1):
        if w != previous:
            rank = position
        ranks[model], previous = rank, w
    return ranks


def build_task_split(tc: TaskConfig, split: str, with_prompt_variants: bool = True):
    """(rows, generations) for one task and split; generations is {model: texts} for tasks that
    ship their candidates (MixInstruct), else None."""
    task = tc.task
    hub_split = task.test_split if split == "test" else task.train_split
    part = task.test_part if split == "test" else task.train_part
    ds = load_split(task, hub_split, tc.source)
    size = tc.test_size if split == "test" else tc.train_size
    if tc.source is not None and tc.source.is_file():
        keep = single_file_rows(len(ds), tc, split)
    else:
        positions = list(part_indices(part, len(ds)))
        keep = [positions[i] for i in sample_indices(len(positions), size, f"{task.name} {split}")]
    if task.name == "mix_instruct" and split == "test":
        # as the paper's code: sample first, then drop the rows ChatGPT did not compare
        keep = [p for p in keep if _has_comparisons(ds[p]["cmp_results"])]
    raw = ds.select(keep) if keep else []

    rows, generations = [], {} if task.name == "mix_instruct" else None
    for idx, r in enumerate(raw):
        fields = task.fields(r)
        if idx == 0:
            for t in ([tc.multi_model_template] if tc.multi_model_template else []) + tc.multi_prompt_templates:
                _check_template(t, set(fields))
        row = {"idx": idx, "task_name": task.name, "reference": task.reference(r),
               "embedding_input": task.embedding_input(r)}
        row["multi_model_prompt"] = (tc.multi_model_template.render(fields) if tc.multi_model_template
                                     else row["embedding_input"])
        if with_prompt_variants:
            for i, t in enumerate(tc.multi_prompt_templates):
                row[f"multi_prompt_{i}"] = t.render(fields)
        if generations is not None:
            texts = {model_slug(c["model"]): c["text"] for c in r["candidates"]}
            for model, text in texts.items():
                generations.setdefault(model, []).append(text)
            row["reference"] = None  # train rows without comparisons have no ranks
            if _has_comparisons(r["cmp_results"]):
                by_model = _ranks(r["cmp_results"])
                ref: dict[str, int] = {}
                for c in r["candidates"]:
                    rank = by_model.get(c["model"], len(by_model) + 1)
                    ref[c["text"]] = min(rank, ref.get(c["text"], rank))
                row["reference"] = ref
        rows.append(row)
    return rows, generations


def build_split(config: DatasetConfig, split: str, progress=print):
    """All rows of a config's split: one task, or a group's tasks concatenated in order."""
    rows, generations = [], None
    for tc in config.tasks:
        task_rows, gens = build_task_split(tc, split, with_prompt_variants=not config.is_group)
        progress(f"  {tc.task.name} {split}: {len(task_rows)} rows")
        rows.extend(task_rows)
        if gens is not None:
            generations = gens
    for i, row in enumerate(rows):
        row["idx"] = i
    return rows, generations
