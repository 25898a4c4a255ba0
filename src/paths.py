"""Every file-name and folder convention of the pipeline (SPEC section 3), in one place.

Nothing else in the project builds a result or dataset path: commands ask a :class:`Setting`
for the file they need, so a naming rule changes here or nowhere.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from src.cli import UserError

DEFAULT_EMBEDDER = "all-mpnet-base-v2"
SPLITS = ("train", "test")
# File-name prefixes of routing-method outputs; anything else ending in _test.json in a group
# folder is a generator's generations.
METHOD_PREFIXES = ("smoothie_", "pick_random_", "labeled_oracle_", "labeled_knn_", "pair_rm_", "mbr_")
TRIAL_METHODS = ("pick_random", "labeled_oracle", "labeled_knn")
_N_GENS = re.compile(r"_\d+_gens$")


def config_stem(dataset_config: str | os.PathLike) -> str:
    """``dataset_configs/squad.yaml`` -> ``squad``."""
    return Path(dataset_config).stem


def datasets_dir(data_dir: str | os.PathLike | None = None) -> Path:
    if data_dir:
        return Path(data_dir)
    return Path(os.environ.get("HF_DATASETS_DIR", "smoothie_data")) / "datasets"


def split_file(config: str, split: str, data_dir: str | os.PathLike | None = None) -> Path:
    """``<datasets dir>/<config>_<split>.jsonl``."""
    return datasets_dir(data_dir) / f"{config}_{split}.jsonl"


def results_root(results_dir: str | os.PathLike | None = None) -> Path:
    return Path(results_dir or os.environ.get("RESULTS_DIR", "results"))


def model_slug(model: str) -> str:
    """Folder-safe name for a model given as short name, hub id, local folder or GGUF file."""
    name = model.rstrip("/").split("/")[-1]
    if name.endswith(".gguf"):
        name = name[: -len(".gguf")]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def embedder_slug(embedding_model: str) -> str:
    return model_slug(embedding_model)


def n_gens_suffix(n_generations: int) -> str:
    return f"_{n_generations}_gens" if n_generations > 1 else ""


@dataclass(frozen=True)
class Setting:
    """One results folder: a dataset config with a model group (multi-model) or one model
    (multi-prompt)."""

    config: str
    results_dir: Path
    group: str | None = None
    model: str | None = None
    data_dir: Path | None = None

    @classmethod
    def from_args(cls, args) -> Setting:
        """Validate the setting flags shared by every pipeline command."""
        if args.multi_model == args.multi_prompt:
            raise UserError("give exactly one of --multi_model or --multi_prompt")
        if args.multi_model and not args.model_group:
            raise UserError("--multi_model needs --model_group (the group of models to route among)")
        if args.multi_prompt and not args.model:
            raise UserError("--multi_prompt needs --model (the model whose prompts are compared)")
        if args.multi_prompt and args.model_group:
            raise UserError("--model_group goes with --multi_model, not --multi_prompt")
        return cls(
            config=config_stem(args.dataset_config),
            results_dir=results_root(args.results_dir),
            group=args.model_group if args.multi_model else None,
            model=args.model if args.multi_prompt else None,
            data_dir=Path(args.data_dir) if args.data_dir else None,
        )

    @property
    def multi_model(self) -> bool:
        return self.group is not None

    @property
    def folder(self) -> Path:
        """``R/<config>/<G>`` or ``R/<config>/<M>``."""
        return self.results_dir / self.config / (self.group if self.multi_model else model_slug(self.model))

    def split_file(self, split: str) -> Path:
        return split_file(self.config, split, self.data_dir)

    def generations_file(self, split: str, generator: str | None = None, n_generations: int = 1) -> Path:
        """Multi-model: ``<model>[_<n>_gens]_<split>.json``; multi-prompt: ``individual...``."""
        stem = generator if self.multi_model else "individual"
        if self.multi_model and not generator:
            raise ValueError("multi-model generation files are per generator")
        return self.folder / f"{stem}{n_gens_suffix(n_generations)}_{split}.json"

    def discover_generators(self) -> list[str]:
        """Generators found as ``<model>_test.json`` in the group folder, sorted by name."""
        if not self.folder.is_dir():
            return []
        names = []
        for path in self.folder.glob("*_test.json"):
            stem = path.name[: -len("_test.json")]
            if path.name.startswith(METHOD_PREFIXES) or _N_GENS.search(stem):
                continue
            names.append(stem)
        return sorted(names)

    def _method_stem(self, method: str) -> str:
        return f"{method}_{self.group}" if self.multi_model else method

    def smoothie_file(
        self,
        type_: str,
        k: int | None = None,
        regime: str = "test_time",
        embedding_model: str = DEFAULT_EMBEDDER,
        n_generations: int = 1,
        full_text: bool = False,
    ) -> Path:
        """``smoothie_<type>[_<G>][_<k>][_train_time][_<embedder>][_<n>_gens][_full_text]_test.json``."""
        name = self._method_stem(f"smoothie_{type_}")
        if type_ == "sample_dependent":
            name += f"_{k}"
        if regime != "test_time":
            name += f"_{regime}"
        if embedder_slug(embedding_model) != DEFAULT_EMBEDDER:
            name += f"_{embedder_slug(embedding_model)}"
        name += n_gens_suffix(n_generations)
        if full_text:
            name += "_full_text"
        return self.folder / f"{name}_test.json"

    def method_file(self, method: str) -> Path:
        """Baseline outputs: ``<method>[_<G>]_test.json``."""
        return self.folder / f"{self._method_stem(method)}_test.json"

    def method_files(self) -> list[Path]:
        """Every routing-method output in the folder, sorted."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.glob("*_test.json") if p.name.startswith(METHOD_PREFIXES))

    def scores_file(self) -> Path:
        return self.folder / "scores.json"


def method_of(name: str | Path) -> str:
    """The method a method file (or its stem) belongs to: ``labeled_knn`` for ``labeled_knn_3b_test.json``."""
    base = Path(name).name + "_"  # a multi-prompt stem has no _<group> after the method's name
    for prefix in METHOD_PREFIXES:
        if base.startswith(prefix):
            return prefix.rstrip("_")
    raise ValueError(f"{name} is not a method file")


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """Where embeddings and assembled models are cached: argument, $SMOOTHIE_CACHE_DIR, ~/.cache/smoothie."""
    if cache:
        return Path(cache)
    env = os.environ.get("SMOOTHIE_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "smoothie"


def generation_checkpoint(final: Path) -> Path:
    """Resumable generation writes finished samples here, beside the final file."""
    return final.with_name(final.name + ".partial.jsonl")


# --- Alpaca (SPEC 3.6) ---------------------------------------------------------------------
ALPACA_DIR = Path("alpaca")
ALPACA_METHODS = ("pick_random", "smoothie", "smoothie_independent")


def alpaca_downloaded_dir(folder: str | os.PathLike | None = None) -> Path:
    return Path(folder) if folder else ALPACA_DIR / "downloaded_outputs"


def alpaca_outputs_dir(folder: str | os.PathLike | None = None) -> Path:
    return Path(folder) if folder else ALPACA_DIR / "algorithm_outputs"


def alpaca_prediction_file(outputs_dir: Path, method: str, trial: int) -> Path:
    """``pick_random_{i}.json``, ``smoothie_{i}.json`` (Local), ``smoothie_independent_{i}.json`` (Global)."""
    return outputs_dir / f"{method}_{trial}.json"


def alpaca_prediction_files(outputs_dir: Path) -> list[tuple[str, int, Path]]:
    """(method, trial, path) of every prediction file, in method then trial order."""
    found = []
    for method in ALPACA_METHODS:
        for path in outputs_dir.glob(f"{method}_*.json"):
            suffix = path.stem[len(method) + 1:]
            if suffix.isdigit():
                found.append((method, int(suffix), path))
    return sorted(found, key=lambda t: (ALPACA_METHODS.index(t[0]), t[1]))


def alpaca_leaderboard(folder: str | os.PathLike | None = None) -> Path:
    return (Path(folder) if folder else ALPACA_DIR) / "leaderboard.csv"


def alpaca_trial_summary(folder: str | os.PathLike | None = None) -> Path:
    return (Path(folder) if folder else ALPACA_DIR) / "trial_summary.csv"
