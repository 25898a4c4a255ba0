"""Lay the third-party data of ../shared/data out as the pipeline's files (tests and benchmarks)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple


class Tree(NamedTuple):
    """A results tree in the pipeline's layout, and what tests need to know of it."""

    config: Path
    results: Path
    data_dir: Path
    group: str
    stem: str  # the config's stem: results/<stem>/<group>
    task: str
    generators: list[str]
    n_train: int
    n_test: int

    @property
    def folder(self) -> Path:
        return self.results / self.stem / self.group

    def setting_args(self, *extra) -> list:
        return ["--dataset_config", self.config, "--results_dir", self.results, "--data_dir", self.data_dir,
                "--model_group", self.group, "--multi_model", *extra]


def real_tree(shared: Path, root: Path, source: str, stem: str, task: str, metric: str, group: str,
              n_train: int, n_test: int):
    """Real third-party rows in the pipeline's layout. The source has a test split only, so its
    first ``n_train`` rows become the labelled train split and the next ``n_test`` the test split.
    Returns a :class:`Tree`."""
    import json

    from src.paths import Setting

    src_dir = shared / source
    data_dir, results = root / "data", root / "results"
    data_dir.mkdir(parents=True)
    lines = (src_dir / f"{source}_test.jsonl").read_text().splitlines()
    parts = {"train": slice(0, n_train), "test": slice(n_train, n_train + n_test)}
    setting = Setting(config=stem, results_dir=results, group=group)
    for split, part in parts.items():
        (data_dir / f"{stem}_{split}.jsonl").write_text("\n".join(lines[part]) + "\n")
        for f in sorted((src_dir / "generations").glob("*_test.json")):
            gens = json.loads(f.read_text())["generations"][part]
            out = setting.generations_file(split, f.name[: -len("_test.json")])
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"generations": gens}))
    config = root / f"{stem}.yaml"
    config.write_text(f"dataset: {task}\nmetrics: [{metric}]\n")
    generators = sorted(f.name[: -len("_test.json")] for f in (src_dir / "generations").glob("*_test.json"))
    return Tree(config, results, data_dir, group, stem, task, generators, n_train, n_test)
