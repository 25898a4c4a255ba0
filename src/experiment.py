"""What one results folder holds: its dataset rows, generation tables and per-sample scores,
loaded lazily and once. The baselines, MBR and evaluate all start from here."""

from __future__ import annotations

import warnings
from functools import cached_property
from pathlib import Path

import numpy as np

from src import cli, manifest
from src.evaluate.scoring import row_metrics, score_table
from src.generations import GenerationTable, generation_files, load_generations
from src.io import read_dataset, write_json
from src.methods.registry import BY_NAME
from src.paths import Setting
from src.tasks.config import DatasetConfig, load_config


class Experiment:
    def __init__(self, setting: Setting, dataset_config: str, no_clean: bool = False):
        self.setting = setting
        self.config_path = dataset_config
        self.no_clean = no_clean

    @cached_property
    def clean(self) -> bool:
        return self.config.clean(self.no_clean)

    @cached_property
    def config(self) -> DatasetConfig:
        return load_config(self.config_path)

    @cached_property
    def metric_overrides(self) -> dict[str, str]:
        return self.config.metric_overrides

    def rows(self, split: str) -> list[dict]:
        rows = read_dataset(self.setting.split_file(split), required=("embedding_input", "reference"))
        return rows[: self.setting.max_samples] if self.setting.max_samples else rows

    def input_files(self, splits: tuple[str, ...] = ("test",)) -> list:
        """The files a method's output depends on: the config and its templates, the splits' rows
        and every generation file of those splits."""
        files = list(self.config.files)
        for split in splits:
            files.append(self.setting.split_file(split))
            files += generation_files(self.setting, split)
        return files

    def manifest(self, settings: dict, splits: tuple[str, ...] = ("test",), models: dict | None = None,
                 kind: str = "method") -> dict:
        """What an output computed here records; ``splits`` are the splits it read (recorded too,
        so a reader knows which files it must still match)."""
        return manifest.build(self.input_files(splits), {**settings, "max_samples": self.setting.max_samples,
                                                          "splits": list(splits)},
                              kind=kind, base=self.setting.results_dir, models=models, rows=len(self.test_rows))

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
        return score_table(self.test_table.first(), self.test_rows, self.test_metrics, self.clean)

    @cached_property
    def train_scores(self) -> np.ndarray:
        """Per-sample scores on the train split: what the labelled baselines learn from."""
        missing = [i for i, r in enumerate(self.train_rows) if r.get("reference") is None]
        if missing:
            raise cli.UserError(
                f"{self.setting.split_file('train')}: {len(missing)} of {len(self.train_rows)} train rows have no "
                f"reference (row {missing[0]} first), so labelled baselines cannot score them "
                "(MixInstruct's train split ships no ChatGPT comparisons); use label-free methods there"
            )
        return score_table(self.train_table.first(), self.train_rows, self.train_metrics, self.clean)

    def selections_to_texts(self, picks: np.ndarray) -> list:
        """Generator indices (N,) or (trials, N) -> the selected raw generations."""
        first = self.test_table.first()
        picks = np.asarray(picks)
        if picks.ndim == 1:
            return [str(first[i, p]) for i, p in enumerate(picks)]
        return [[str(first[i, p]) for i, p in enumerate(trial)] for trial in picks]

    def write_method(self, out, picks: np.ndarray, recorded: dict, **extra) -> None:
        """A routing method's output file: selected texts (per trial where picks is 2-D), indices,
        names, and its manifest."""
        write_json(out, {"generations": self.selections_to_texts(picks), "selected": np.asarray(picks).tolist(),
                         "generators": self.test_table.names, **extra, manifest.KEY: recorded})
        print(f"wrote {out}")


def embedder_model(args) -> dict[str, str]:
    """The ``models`` entry of a method that embeds with ``--embedding_model``: its cache identity,
    which names the model by the content of its files."""
    from src.embeddings import Embedder

    backend = getattr(args, "embedding_backend", "torch")
    precision = getattr(args, "embedding_precision", "fp32")
    return {"embedder": Embedder(args.embedding_model, backend=backend, precision=precision,
                                 device=getattr(args, "device", None)).identity}


# flags that do not change a method's result (where it runs, where files are)
_NOT_SETTINGS = {"redo", "device", "results_dir", "data_dir", "dataset_config", "max_samples"}


def open_experiment(p, argv, method: str, suffix=lambda args: "", models=lambda args: None
                    ) -> tuple[object, Experiment, Path, dict] | None:
    """Parse a method command's flags (the shared setting flags and --redo are added here) and
    validate them at the edge. Returns (args, experiment, output path, manifest), or None when
    the output exists and is fresh (finished work is reused; anything else is recomputed).
    ``models(args)`` names the models the method runs (an embedder), by content."""
    cli.add_setting_flags(p)
    cli.add_redo_flag(p)
    args = p.parse_args(argv)
    exp = Experiment(Setting.from_args(args), args.dataset_config, args.no_clean)
    _ = exp.config  # a broken config is reported as such, before any split is read
    n_labels = getattr(args, "n_labels", None)
    if n_labels and BY_NAME[method].labelled and n_labels > len(exp.train_rows):
        # say so, and name the output by the labels actually used, not by the ones asked for
        warnings.warn(f"--n_labels {n_labels}: the train split has only {len(exp.train_rows)} rows "
                      f"({exp.setting.split_file('train')}); using all {len(exp.train_rows)}", stacklevel=2)
        args.n_labels = len(exp.train_rows)
    out = exp.setting.method_file(method, suffix(args))
    settings = {k: v for k, v in vars(args).items() if k not in _NOT_SETTINGS} | {"clean": exp.clean,
                                                                                  "method": method}
    recorded = exp.manifest(settings, ("train", "test") if BY_NAME[method].labelled else ("test",), models(args))
    if manifest.skip_if_done(out, args.redo, recorded):
        return None
    return args, exp, out, recorded
