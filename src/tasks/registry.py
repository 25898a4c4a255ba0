"""The task registry: one declarative entry per dataset (SPEC section 7).

Each entry says where the rows come from (hub id, subset, which split and which part of it
serves as test and as train), which columns a row must have, and three small functions: the
fields a prompt template may use, the text embedded to find neighbours, and the reference.
Adding a task is adding an entry here plus a config and templates; no other code changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from src.paths import shipped  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Task:
    name: str
    hub_id: str | None  # None: the rows ship inside the repo (see ``builtin_source``)
    subset: str | None
    test_split: str
    train_split: str
    columns: tuple[str, ...]  # required top-level columns of a raw row
    fields: Callable[[dict], dict]  # template fields, all strings
    embedding_input: Callable[[dict], str]
    reference: Callable[[dict], str | list | dict]
    metric: str
    # Which part of the loaded split is used: "all", ":N" / "N:" (first N / from N on),
    # ":P%" (first P percent), "half1" / "half2" (first / second half).
    test_part: str = "all"
    train_part: str = "all"
    builtin_source: Path | None = None
    parquet_export: bool = False  # the hub repo still has a loading script: read its Parquet conversion
    extra: dict = field(default_factory=dict)


def _text(row: dict, key: str) -> str:
    value = row[key]
    return "" if value is None else str(value)


def _webnlg_triples(row: dict) -> str:
    """The first modified triple set, one ``subject | property | object`` per line."""
    return "\n".join(row["modified_triple_sets"]["mtriple_set"][0])


def _webnlg_good_lex(row: dict) -> list[str]:
    lex = row["lex"]
    return [t for t, c in zip(lex["text"], lex["comment"]) if c == "good"]


def _gsm8k_number(row: dict) -> str:
    return row["answer"].split("####")[-1].strip()


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    TASKS[task.name] = task
    return task


register(Task(
    name="cnn_dailymail", hub_id="cnn_dailymail", subset="3.0.0", test_split="test", train_split="train",
    columns=("article", "highlights"), fields=lambda r: {"article": _text(r, "article")},
    embedding_input=lambda r: _text(r, "article"), reference=lambda r: _text(r, "highlights"), metric="rouge2",
))
register(Task(
    name="xsum", hub_id="EdinburghNLP/xsum", subset=None, test_split="test", train_split="train",
    columns=("document", "summary"), fields=lambda r: {"document": _text(r, "document")},
    embedding_input=lambda r: _text(r, "document"), reference=lambda r: _text(r, "summary"), metric="rouge2",
))
register(Task(
    name="e2e_nlg", hub_id="e2e_nlg", subset=None, test_split="test", train_split="train",
    columns=("meaning_representation", "human_reference"),
    fields=lambda r: {"meaning_representation": _text(r, "meaning_representation")},
    embedding_input=lambda r: _text(r, "meaning_representation"),
    reference=lambda r: _text(r, "human_reference"), metric="rouge2",
))
register(Task(
    name="web_nlg", hub_id="web_nlg", subset="release_v3.0_en", test_split="dev", train_split="train",
    columns=("modified_triple_sets", "lex"), fields=lambda r: {"triples": _webnlg_triples(r)},
    embedding_input=_webnlg_triples, reference=_webnlg_good_lex, metric="rouge2",
))
register(Task(
    name="squad", hub_id="hazyresearch/based-squad", subset=None, test_split="validation",
    train_split="validation", test_part="half2", train_part="half1",
    columns=("context", "question", "value"),
    fields=lambda r: {"context": _text(r, "context"), "question": _text(r, "question")},
    embedding_input=lambda r: f"{_text(r, 'context')}\n{_text(r, 'question')}",
    reference=lambda r: _text(r, "value"), metric="squad_acc",
))
register(Task(
    name="trivia_qa", hub_id="mandarjoshi/trivia_qa", subset="rc", test_split="validation",
    train_split="train", train_part=":10%", columns=("question", "answer"),
    fields=lambda r: {"question": _text(r, "question")}, embedding_input=lambda r: _text(r, "question"),
    reference=lambda r: list(r["answer"]["normalized_aliases"]), metric="trivia_qa_acc",
))
register(Task(
    name="definition_extraction", hub_id="nguha/legalbench", subset="definition_extraction",
    test_split="test", train_split="test", test_part="100:", train_part=":100", columns=("text", "answer"),
    parquet_export=True,  # nguha/legalbench still ships legalbench.py (its issue #54)
    fields=lambda r: {"text": _text(r, "text")}, embedding_input=lambda r: _text(r, "text"),
    reference=lambda r: _text(r, "answer"), metric="definition_extraction_acc",
))
register(Task(
    name="gsm8k", hub_id="gsm8k", subset="main", test_split="test", train_split="train",
    columns=("question", "answer"), fields=lambda r: {"question": _text(r, "question")},
    embedding_input=lambda r: _text(r, "question"), reference=_gsm8k_number, metric="gsm8k_acc",
))
register(Task(
    name="mix_instruct", hub_id="llm-blender/mix-instruct", subset=None, test_split="test", train_split="train",
    columns=("instruction", "input", "candidates", "cmp_results"),
    fields=lambda r: {"instruction": _text(r, "instruction"), "input": _text(r, "input")},
    embedding_input=lambda r: f"{_text(r, 'instruction').strip()}\n\n{_text(r, 'input').strip()}".strip(),
    reference=lambda r: None,  # per-candidate ranks, built in src/tasks/mix_instruct.py
    metric="mix_instruct_rank",
))
register(Task(
    name="demo", hub_id=None, subset=None, test_split="test", train_split="train",
    columns=("question", "answers"), fields=lambda r: {"question": _text(r, "question")},
    embedding_input=lambda r: _text(r, "question"), reference=lambda r: list(r["answers"]),
    metric="trivia_qa_acc", builtin_source=shipped("dataset_configs") / "demo_data",
))


def _column(row: dict, key: str):
    value = row[key]
    return [str(v) for v in value] if isinstance(value, list) else ("" if value is None else str(value))


def custom_task(name: str, input_column: str, reference_column: str, metric: str) -> Task:
    """A user's own task, declared in its config (``input_column``, ``reference_column``,
    ``metrics``): rows come from ``source`` (a file or a folder of split files). Every string
    column of a row is a template field, so templates may use any of them."""
    return Task(
        name=name, hub_id=None, subset=None, test_split="test", train_split="train",
        columns=(input_column, reference_column),
        fields=lambda r: {k: "" if v is None else str(v) for k, v in r.items() if not isinstance(v, (list, dict))},
        embedding_input=lambda r: _text(r, input_column), reference=lambda r: _column(r, reference_column),
        metric=metric,
    )


def get_task(name: str) -> Task:
    from src.cli import UserError

    if name not in TASKS:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(sorted(TASKS))}; for your own data, "
                        "give the config input_column, reference_column, metrics and source (docs/own_task.md)")
    return TASKS[name]
