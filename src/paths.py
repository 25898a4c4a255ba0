"""Every file-name and folder convention of the pipeline (SPEC section 3), in one place.

Nothing else in the project builds a result or dataset path: commands ask a :class:`Setting`
for the file they need, so a naming rule changes here or nowhere.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from src.cli import UserError

DEFAULT_EMBEDDER = "all-mpnet-base-v2"
SPLITS = ("train", "test")
# File-name prefixes of routing-method outputs; anything else ending in _test.json in a group
# folder is a generator's generations.
_N_GENS = re.compile(r"_\d+_gens$")
_N_GENS_ANY = re.compile(r"_(\d+)_gens(?=_|$)")


_CLONE = Path(__file__).resolve().parents[1]
SHIPPED = ("dataset_configs", "prompt_templates")  # folders a wheel carries inside the package, as src/_data/


def shipped(folder: str) -> Path:
    """A folder that ships with the project (``dataset_configs``, ``prompt_templates``): the
    clone's own when running from one, else the copy a wheel installs inside the package."""
    here = _CLONE / folder
    if here.is_dir():
        return here
    return Path(str(resources.files("src") / "_data" / folder))


def shipped_path(path: str | os.PathLike) -> Path | None:
    """``dataset_configs/demo.yaml`` (any path under a shipped folder) in the shipped copy, if it is there."""
    parts = Path(path).parts
    if parts and parts[0] in SHIPPED:
        candidate = shipped(parts[0]).joinpath(*parts[1:])
        if candidate.exists():
            return candidate
    return None


def dataset_config_path(text: str | os.PathLike) -> Path:
    """What ``--dataset_config`` names: a file as given, else a shipped config by path or by name
    (``demo`` or ``demo.yaml`` for ``dataset_configs/demo.yaml``), from any working folder."""
    path = Path(text)
    if path.exists():
        return path
    found = shipped_path(path)
    if found is None and len(path.parts) == 1:
        named = shipped("dataset_configs") / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
        found = named if named.is_file() else None
    return found or path


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
    n_generations: int = 1  # sampled generations per sample: files named *_<n>_gens_*
    max_samples: int | None = None  # a quick run on the first rows of each split

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
        if args.multi_model and args.model:
            from src.constants import MODEL_GROUPS

            members = MODEL_GROUPS.get(args.model_group)
            if members is not None and args.model not in members:
                raise UserError(f"--model {args.model} is not a member of --model_group {args.model_group} "
                                f"({', '.join(members)}); its outputs would land in that group's folder")
        return cls(
            config=config_stem(args.dataset_config),
            results_dir=results_root(args.results_dir),
            group=args.model_group if args.multi_model else None,
            model=args.model if args.multi_prompt else None,
            data_dir=Path(args.data_dir) if args.data_dir else None,
            n_generations=getattr(args, "n_generations", 1) or 1,
            max_samples=getattr(args, "max_samples", None),
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

    def generations_file(self, split: str, generator: str | None = None, n_generations: int | None = None) -> Path:
        """Multi-model: ``<model>[_<n>_gens]_<split>.json``; multi-prompt: ``individual...``."""
        stem = generator if self.multi_model else "individual"
        if self.multi_model and not generator:
            raise ValueError("multi-model generation files are per generator")
        n = self.n_generations if n_generations is None else n_generations
        return self.folder / f"{stem}{n_gens_suffix(n)}_{split}.json"

    def discover_generators(self) -> list[str]:
        """Generators found as ``<model>[_<n>_gens]_test.json`` in the group folder (for this
        setting's n), sorted by name: every such file that is not a routing method's output by
        its content (``src.manifest.method_name``), whatever its name."""
        from src.manifest import method_name

        if not self.folder.is_dir():
            return []
        tail = f"{n_gens_suffix(self.n_generations)}_test.json"
        names = []
        for path in self.folder.glob(f"*{tail}"):
            stem = path.name[: -len(tail)]
            if _N_GENS.search(stem) or not stem or method_name(path) is not None:
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
        n_generations: int | None = None,
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
        name += n_gens_suffix(self.n_generations if n_generations is None else n_generations)
        if full_text:
            name += "_full_text"
        return self.folder / f"{name}_test.json"

    def method_file(self, method: str, suffix: str = "") -> Path:
        """Baseline outputs: ``<method>[_<G>][<suffix>][_<n>_gens]_test.json``."""
        return self.folder / f"{self._method_stem(method)}{suffix}{n_gens_suffix(self.n_generations)}_test.json"

    def method_files(self) -> list[Path]:
        """Every routing-method output in the folder made for this setting's n, sorted: told
        apart from generators' files by content, not by name."""
        from src.manifest import method_name

        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.glob("*_test.json")
                      if n_generations_of(p) == self.n_generations and method_name(p) is not None)

    def scores_file(self) -> Path:
        """``scores.json`` (``scores_<n>_gens.json`` for sampled generations); a ``--max_samples N``
        run writes ``scores_first<N>.json`` instead, so a partial result never takes a full one's name."""
        partial = f"_first{self.max_samples}" if self.max_samples else ""
        return self.folder / f"scores{n_gens_suffix(self.n_generations)}{partial}.json"


def n_generations_of(name: str | Path) -> int:
    """n of a file made from n sampled generations per sample (1 when its name says none)."""
    found = _N_GENS_ANY.search(Path(name).name)
    return int(found.group(1)) if found else 1


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    """Where embeddings and assembled models are cached: argument, $SMOOTHIE_CACHE_DIR, ~/.cache/smoothie."""
    if cache:
        return Path(cache)
    env = os.environ.get("SMOOTHIE_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "smoothie"


def data_dir() -> Path:
    """Where the gateway keeps what it learns (its store): $SMOOTHIE_DATA_DIR, else
    $XDG_DATA_HOME/smoothie, else ~/.local/share/smoothie. A per-user folder, never the working
    one: the store holds users' prompts, and a repository checkout is no place for them."""
    env = os.environ.get("SMOOTHIE_DATA_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "smoothie"


def gateway_store() -> Path:
    """The gateway's default SQLite store (``--store`` not given)."""
    return data_dir() / "gateway.sqlite"


def generation_checkpoint(final: Path) -> Path:
    """Resumable generation writes finished samples here, beside the final file."""
    return final.with_name(final.name + ".partial.jsonl")


def shard_checkpoint(checkpoint: Path, i: int, n: int) -> Path:
    """``--shard i/n`` writes its finished batches here, beside the run's own checkpoint."""
    return checkpoint.with_name(checkpoint.name.replace(".partial.jsonl", f".shard-{i}-of-{n}.partial.jsonl"))


def shard_checkpoints(checkpoint: Path) -> list[Path]:
    """Every shard's checkpoint of a run, whatever its shard count."""
    return sorted(checkpoint.parent.glob(checkpoint.name.replace(".partial.jsonl", ".shard-*-of-*.partial.jsonl")))


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


def paper_dir(results_dir: str | os.PathLike | None = None) -> Path:
    """``<results>/paper``: the paper's tables and figures."""
    return results_root(results_dir) / "paper"


def alpaca_paper_inputs(folder: str | os.PathLike | None = None) -> Path:
    """The paper's AlpacaEval inputs: ``downloaded_outputs/``, ``ensembles.json``, ``leaderboard.json``."""
    return Path(folder) if folder else ALPACA_DIR / "paper_inputs"


def alpaca_paper_outputs_dir(pairing: str, folder: str | os.PathLike | None = None) -> Path:
    """Per-instruction predictions of the paper's trials, one folder per pairing."""
    return alpaca_outputs_dir(folder) / f"paper_{pairing}"


def alpaca_leaderboard(folder: str | os.PathLike | None = None) -> Path:
    return (Path(folder) if folder else ALPACA_DIR) / "leaderboard.csv"


def alpaca_trial_summary(folder: str | os.PathLike | None = None) -> Path:
    return (Path(folder) if folder else ALPACA_DIR) / "trial_summary.csv"
