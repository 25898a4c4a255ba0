"""What one results folder holds: its dataset rows, generation tables and per-sample scores,
loaded lazily and once. The baselines, MBR and evaluate all start from here."""

from __future__ import annotations

from functools import cached_property

import numpy as np

from src import cli
from src.evaluate.scoring import row_metrics, score_table
from src.generations import GenerationTable, load_generations
from src.io import read_dataset, write_json
from src.paths import Setting
from src.tasks.config import DatasetConfig, load_config


class Experiment:
    def __init__(self, setting: Setting, dataset_config: str):
        self.setting = setting
        self.config_path = dataset_config

    @cached_property
    def config(self) -> DatasetConfig:
        return load_config(self.config_path)

    @cached_property
    def metric_overrides(self) -> dict[str, str]:
        return {tc.task.name: tc.metrics[0] for tc in self.config.tasks}

    def rows(self, split: str) -> list[dict]:
        return read_dataset(self.setting.split_file(split), required=("embedding_input", "reference"))

    @cached_property
    def test_rows(self) -> list[dict]:
        return self.rows("test")

    @cached_property
    def train_rows(self) -> list[dict]:
        return self.rows("train")

    @cached_property
    def test_metrics(self) -> list[str]:
        return row_metrics(self.test_rows, self.metric_overrides)

    @cached_property
    def train_metrics(self) -> list[str]:
        return row_metrics(self.train_rows, self.metric_overrides)

    @cached_property
    def test_table(self) -> GenerationTable:
        return load_generations(self.setting, "test", len(self.test_rows))

    @cached_property
    def train_table(self) -> GenerationTable:
        table = load_generations(self.setting, "train", len(self.train_rows))
        if table.names != self.test_table.names:
            raise cli.UserError(f"{self.setting.folder}: train and test generations come from different generators")
        return table

    @cached_property
    def test_scores(self) -> np.ndarray:
        return score_table(self.test_table.first(), self.test_rows, self.test_metrics)

    @cached_property
    def train_scores(self) -> np.ndarray:
        return score_table(self.train_table.first(), self.train_rows, self.train_metrics)

    def selections_to_texts(self, picks: np.ndarray) -> list:
        """Generator indices (N,) or (trials, N) -> the selected raw generations."""
        first = self.test_table.first()
        picks = np.asarray(picks)
        if picks.ndim == 1:
            return [str(first[i, p]) for i, p in enumerate(picks)]
        return [[str(first[i, p]) for i, p in enumerate(trial)] for trial in picks]

    def write_method(self, method: str, picks: np.ndarray, **extra) -> None:
        """A routing method's output file: selected texts (per trial where picks is 2-D), indices, names."""
        out = self.setting.method_file(method)
        write_json(out, {"generations": self.selections_to_texts(picks), "selected": np.asarray(picks).tolist(),
                         "generators": self.test_table.names, **extra})
        print(f"wrote {out}")


def open_experiment(p, argv, method: str) -> tuple[object, Experiment] | None:
    """Parse a method command's flags (the shared setting flags and --redo are added here).
    None when the method's output exists and --redo was not given: finished work is reused."""
    cli.add_setting_flags(p)
    cli.add_redo_flag(p)
    args = p.parse_args(argv)
    exp = Experiment(Setting.from_args(args), args.dataset_config)
    if cli.already_done(exp.setting.method_file(method), args.redo):
        return None
    return args, exp
