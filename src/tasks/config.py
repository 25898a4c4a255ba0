"""Dataset configs (``dataset_configs/*.yaml``) and their prompt templates, validated on load."""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path

from src.cli import UserError
from src.io import read_yaml
from src.paths import dataset_config_path, shipped, shipped_path
from src.tasks.registry import Task, custom_task, get_task

TEMPLATE_DIR = shipped("prompt_templates")
SINGLE_KEYS = {"dataset", "multi_prompt_template", "multi_model_prompt_template", "max_new_tokens",
               "train_size", "test_size", "metrics", "source", "input_column", "reference_column", "clean"}
GROUP_KEYS = {"tasks", "max_new_tokens"}


@dataclass
class Template:
    path: Path
    text: str

    def fields(self) -> set[str]:
        return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(self.text) if name}

    def render(self, fields: dict) -> str:
        return self.text.format(**fields)


@dataclass
class TaskConfig:
    path: Path
    task: Task
    multi_model_template: Template | None
    multi_prompt_templates: list[Template]
    max_new_tokens: int
    train_size: int | None
    test_size: int | None
    metrics: list[str]
    source: Path | None
    clean: bool | None = None  # None: the task's own rule (first line, except gsm8k, mix_instruct, alpaca)


@dataclass
class DatasetConfig:
    path: Path
    tasks: list[TaskConfig]
    max_new_tokens: int
    is_group: bool

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def metric_overrides(self) -> dict[str, str]:
        """Each task's primary metric as the config names it (its first ``metrics`` entry): the
        one labelled methods learn from and the group average uses."""
        return {tc.task.name: tc.metrics[0] for tc in self.tasks}

    @property
    def task_metrics(self) -> dict[str, list[str]]:
        """Every metric each task's rows are scored with (its whole ``metrics`` list)."""
        return {tc.task.name: list(tc.metrics) for tc in self.tasks}

    @property
    def files(self) -> list[Path]:
        """The config's own file, its tasks' files and every prompt template it reads: what a
        result computed under this config depends on (its manifest's inputs)."""
        out = [self.path]
        for tc in self.tasks:
            out += [tc.path] + ([tc.multi_model_template.path] if tc.multi_model_template else [])
            out += [t.path for t in tc.multi_prompt_templates]
        return list(dict.fromkeys(Path(p) for p in out))

    def clean(self, no_clean_flag: bool = False) -> bool:
        """Whether outputs are cleaned before embedding and scoring: ``--no_clean`` wins, then
        the config's ``clean`` key, then the tasks' own rule (True)."""
        if no_clean_flag:
            return False
        return all(tc.clean is not False for tc in self.tasks)


def _resolve(path: str, base: Path) -> Path:
    for candidate in (Path(path), shipped_path(path), base / path, base / Path(path).name):
        if candidate is not None and candidate.exists():
            return candidate
    return Path(path)


def _template_path(name: str, suffix: str, config: Path) -> Path:
    path = Path(name)
    if path.suffix == suffix:
        return _resolve(name, config.parent)
    return TEMPLATE_DIR / f"{name}{suffix}"


def _load_template(name: str | None, suffix: str, config: Path, key: str) -> list[Template] | None:
    if name is None:
        return None
    path = _template_path(name, suffix, config)
    if not path.is_file():
        raise UserError(f"{config}: {key} {name!r}: template file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if suffix == ".txt":
        return [Template(path, text)]
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not (isinstance(items, list) and items and all(isinstance(t, str) for t in items)):
        raise UserError(f"{path}: a multi-prompt template file must be a non-empty JSON list of strings")
    return [Template(path, t) for t in items]


def _size(value, key: str, path: Path) -> int | None:
    if value in (None, 0, "all"):
        return None
    if not isinstance(value, int) or value < 0:
        raise UserError(f"{path}: {key} must be a positive integer, 0 or 'all'")
    return value


def _load_task(path: Path, data: dict) -> TaskConfig:
    unknown = set(data) - SINGLE_KEYS
    if unknown:
        raise UserError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    if "dataset" not in data:
        raise UserError(f"{path}: missing key 'dataset'")
    own = "input_column" in data or "reference_column" in data
    if own:
        missing = [k for k in ("input_column", "reference_column", "metrics") if k not in data]
        if missing:
            raise UserError(f"{path}: your own task needs {', '.join(missing)} too (docs/own_task.md)")
        if not isinstance(data["metrics"], list) or not data["metrics"]:
            raise UserError(f"{path}: metrics must be a non-empty list of metric names")
        task = custom_task(str(data["dataset"]), str(data["input_column"]), str(data["reference_column"]),
                           str(data["metrics"][0]))
    else:
        task = get_task(str(data["dataset"]))
    if "clean" in data and not isinstance(data["clean"], bool):
        raise UserError(f"{path}: clean must be true or false")
    mm = _load_template(data.get("multi_model_prompt_template"), ".txt", path, "multi_model_prompt_template")
    mp = _load_template(data.get("multi_prompt_template"), ".json", path, "multi_prompt_template") or []
    metrics = data.get("metrics") or [task.metric]
    from src.evaluate.metrics import METRICS

    unknown_metrics = [m for m in metrics if m not in METRICS]
    if unknown_metrics:
        raise UserError(f"{path}: unknown metric(s) {', '.join(map(str, unknown_metrics))} "
                        f"(known: {', '.join(sorted(METRICS))})")
    source = data.get("source")
    return TaskConfig(
        path=path,
        task=task,
        multi_model_template=mm[0] if mm else None,
        multi_prompt_templates=mp,
        max_new_tokens=int(data.get("max_new_tokens", 64)),
        train_size=_size(data.get("train_size"), "train_size", path),
        test_size=_size(data.get("test_size"), "test_size", path),
        metrics=list(metrics),
        source=_resolve(str(source), path.parent) if source else None,
        clean=data.get("clean"),
    )


def load_config(path: str | Path) -> DatasetConfig:
    path = dataset_config_path(path)
    data = read_yaml(path)
    if "tasks" in data:
        unknown = set(data) - GROUP_KEYS
        if unknown:
            raise UserError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} in a group config")
        if not isinstance(data["tasks"], list) or not data["tasks"]:
            raise UserError(f"{path}: 'tasks' must be a non-empty list of config files")
        tasks = []
        for entry in data["tasks"]:
            sub = _resolve(str(entry), path.parent)
            sub_data = read_yaml(sub)
            if "tasks" in sub_data:
                raise UserError(f"{path}: groups cannot nest ({sub} is itself a group)")
            tasks.append(_load_task(sub, sub_data))
        return DatasetConfig(path, tasks, int(data.get("max_new_tokens", tasks[0].max_new_tokens)), True)
    task = _load_task(path, data)
    return DatasetConfig(path, [task], task.max_new_tokens, False)
