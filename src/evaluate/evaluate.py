"""Step 4 of the pipeline: score every generator and every routing method in a results folder
(SPEC 3.5), write ``scores.json`` beside them and print the table.

    python -m src.evaluate.evaluate --dataset_config dataset_configs/squad.yaml \
        --model_group 3b --multi_model

Besides the methods, every table shows the headroom: ``oracle`` (the best generator per
sample) and ``best_single`` (the best generator on test, named in ``best_generator``). One entry
per metric the config lists (the original code scored every listed metric), plus ``average``
for groups whose tasks differ in metric. Beside SPEC 3.5's entries, ``scores.json`` holds a
``manifest`` (``src/manifest.py``): what was scored, the methods' display names, and whether it
is partial. A ``--max_samples N`` run writes ``scores_first<N>.json`` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from src import cli, manifest
from src.evaluate.metrics import LOWER_IS_BETTER
from src.evaluate.scoring import score_rows, score_table
from src.experiment import Experiment
from src.io import read_json, write_json
from src.methods.baselines import oracle_and_best
from src.methods.registry import BASELINES, BY_NAME, label, method_keys
from src.paths import Setting

SCORES_KIND = "scores"


def metric_entries(scores: dict) -> dict:
    """A ``scores.json``'s per-metric entries, without its manifest."""
    return {k: v for k, v in scores.items() if k != manifest.KEY}


class _Group:
    """The rows one scores entry covers and the metric each is scored with there."""

    def __init__(self, exp: Experiment, idx: np.ndarray, metrics: list[str]):
        self.exp, self.idx, self.metrics = exp, idx, metrics
        self._table = None

    @property
    def table(self) -> np.ndarray:
        """(len(idx), m) generator scores; the primary metric's are reused, not recomputed."""
        if self._table is None:
            exp = self.exp
            if self.metrics == [exp.test_metrics[i] for i in self.idx]:
                self._table = exp.test_scores[self.idx]
            else:
                rows = [exp.test_rows[i] for i in self.idx]
                self._table = score_table(exp.test_table.first()[self.idx], rows, self.metrics, exp.clean)
        return self._table

    def method_scores(self, texts: list[str]) -> np.ndarray:
        """Scores of selected texts on these rows: looked up among the generators' where the text
        is one of the row's generations, scored directly otherwise."""
        first = self.exp.test_table.first()
        out = np.empty(len(self.idx))
        unknown = []
        for pos, i in enumerate(self.idx):
            hits = np.flatnonzero(first[i] == texts[i])
            if len(hits):
                out[pos] = self.table[pos, hits[0]]
            else:
                unknown.append(pos)
        if unknown:
            rows = [self.exp.test_rows[self.idx[p]] for p in unknown]
            out[unknown] = score_rows([texts[self.idx[p]] for p in unknown], rows,
                                      [self.metrics[p] for p in unknown], self.exp.clean)
        return out


def _groups(exp: Experiment) -> dict[str, _Group]:
    """One entry per metric the config lists (each task's rows under each of its metrics), and
    ``average`` over every row's primary metric when tasks' primary metrics differ."""
    per_task = exp.config.task_metrics
    lists = [per_task.get(r.get("task_name")) or [m] for r, m in zip(exp.test_rows, exp.test_metrics)]
    names = list(dict.fromkeys(m for lst in lists for m in lst))
    groups = {}
    for name in names:
        idx = np.array([i for i, lst in enumerate(lists) if name in lst])
        groups[name] = _Group(exp, idx, [name] * len(idx))
    primary = exp.test_metrics
    if len(set(primary)) > 1:
        groups["average"] = _Group(exp, np.arange(len(primary)), list(primary))
    return groups


def _checked_method_files(exp: Experiment) -> list[tuple[Path, dict]]:
    """Every method file with its manifest, after checking them all against what they would be
    scored with now; every file that cannot be scored is named at once, each with its reasons."""
    problems, checked = [], []
    for path in exp.setting.method_files():
        recorded = manifest.read(path)
        reasons = manifest.check_recorded(recorded, [], None)[:1] if recorded is None else []
        if recorded is not None:
            settings = recorded.get("settings", {})
            if settings.get("max_samples") != exp.setting.max_samples:
                reasons.append(f"it was made with --max_samples {settings.get('max_samples')}, this run has "
                               f"{exp.setting.max_samples}")
            splits = tuple(settings.get("splits") or ("test",))
            reasons += manifest.check_recorded(recorded, exp.input_files(splits), exp.setting.results_dir)
        if reasons:
            problems.append(f"{path.name} ({'; '.join(reasons)})")
        else:
            checked.append((path, recorded))
    if problems:
        raise cli.UserError(f"{exp.setting.folder}: {len(problems)} method file(s) cannot be scored: "
                            f"{' | '.join(problems)}; rerun the commands that made them (they recompute stale "
                            "outputs) or delete them")
    return checked


def evaluate(exp: Experiment) -> dict:
    """Every generator's and method's mean score per metric entry, with a manifest saying what
    was scored (its labels come from the method files' manifests, not from their names)."""
    groups = _groups(exp)
    n = len(exp.test_rows)
    files = _checked_method_files(exp)
    per_sample: dict[str, dict[str, np.ndarray]] = {}  # stem -> group -> (rows,) scores, trials averaged
    settings_of: dict[str, dict] = {}
    for path, recorded in files:
        data = read_json(path, what="method file")
        gens = data.get("generations")
        method = recorded["settings"].get("method")
        trials = BY_NAME[method].trials if method in BY_NAME else False
        selections = gens if trials else [gens]
        if not isinstance(gens, list) or not selections or not all(
                isinstance(g, list) and len(g) == n and all(isinstance(t, str) for t in g) for g in selections):
            raise cli.UserError(f"{path}: expected {'a list of trials, each ' if trials else ''}a list of {n} "
                                "selected texts (one per test row)")
        stem = path.name[: -len("_test.json")]
        per_sample[stem] = {key: np.mean([g.method_scores(sel) for sel in selections], axis=0)
                            for key, g in groups.items()}
        settings_of[stem] = recorded["settings"]

    names = exp.test_table.names
    keys, _ = _keys_and_labels(settings_of)
    result = {}
    for key, g in groups.items():
        oracle, best = oracle_and_best(g.table, g.metrics)
        entry = {
            "ensemble": {name: float(g.table[:, j].mean()) for j, name in enumerate(names)},
            "smoothie": {},
            "oracle": oracle,
            "best_single": float(g.table[:, best].mean()),
            "best_generator": names[best],
        }
        for stem in sorted(per_sample):
            value = float(per_sample[stem][key].mean())
            if settings_of[stem]["method"] == "smoothie":
                entry["smoothie"][stem] = value
            else:
                entry[keys[stem]] = value
        result[key] = entry
    result[manifest.KEY] = scores_manifest(exp, files)
    return result


def _keys_and_labels(settings_of: dict[str, dict]) -> tuple[dict[str, str], dict[str, str]]:
    """Each method file's scores key (its stem for Smoothie, its method name, or ``<method>_<n>``
    for several variants) and display label, from the settings its manifest records."""
    count: dict[str, int] = {}
    for settings in settings_of.values():
        count[settings["method"]] = count.get(settings["method"], 0) + 1
    keys, labels = {}, {}
    for stem, settings in settings_of.items():
        method = settings["method"]
        if method == "smoothie" or count[method] == 1:
            keys[stem] = stem if method == "smoothie" else method
        else:  # several variants of one method (labeled_smoothie at several n): one entry each
            keys[stem] = f"{method}_{settings.get('n_labels', stem)}"
        labels[keys[stem]] = label(settings)
    seen: dict[str, str] = {}
    for key, text in list(labels.items()):  # two variants must never read alike
        if text in seen:
            labels[key] = f"{text} ({key})"
            labels[seen[text]] = f"{text} ({seen[text]})"
        seen.setdefault(text, key)
    return keys, labels


def scores_manifest(exp: Experiment, files: list[tuple[Path, dict]]) -> dict:
    """What ``scores.json`` records: every input scored (config, splits, generations, the method
    files ``files`` with their manifests) and the labels those manifests give each method."""
    settings_of = {path.name[: -len("_test.json")]: recorded["settings"] for path, recorded in files}
    inputs = exp.input_files(("train", "test")) + [p for p, _ in files]
    return manifest.build(
        inputs, {"max_samples": exp.setting.max_samples, "n_generations": exp.setting.n_generations,
                 "partial": exp.setting.max_samples is not None, "labels": _keys_and_labels(settings_of)[1],
                 "clean": exp.clean, "dataset_config": str(Path(exp.config.path).resolve())},
        kind=SCORES_KIND, base=exp.setting.results_dir, rows=len(exp.test_rows))


def scores_problems(exp: Experiment, scores: dict) -> list[str]:
    """Why a ``scores.json`` read back no longer describes its folder (for the report and the
    tables): the same rule as every output, against what ``evaluate`` would record now."""
    files = [(p, manifest.read(p) or {"settings": {"method": ""}}) for p in exp.setting.method_files()]
    verdict = manifest.compare(scores.get(manifest.KEY), scores_manifest(exp, files))
    return verdict.reasons


def format_table(result: dict) -> str:
    labels = result.get(manifest.KEY, {}).get("settings", {}).get("labels", {})
    result = metric_entries(result)
    keys = list(result)
    rows: list[tuple[str, list]] = []
    first = result[keys[0]]
    for name in first["ensemble"]:
        rows.append((name, [result[k]["ensemble"][name] for k in keys]))
    for name in ("oracle", "best_single"):
        rows.append((f"{name} ({first['best_generator']})" if name == "best_single" else name,
                     [result[k][name] for k in keys]))
    for stem in first["smoothie"]:
        rows.append((labels.get(stem, stem), [result[k]["smoothie"][stem] for k in keys]))
    for method in (m.name for m in BASELINES):
        for key in method_keys(first, method):
            rows.append((labels.get(key, key), [result[k][key] for k in keys]))
    width = max(len(r[0]) for r in rows)
    head = " | ".join(f"{k + (' (lower is better)' if k in LOWER_IS_BETTER else ''):>12}" for k in keys)
    lines = [f"{'':<{width}} | {head}", "-" * (width + 3 + len(head))]
    for name, values in rows:
        lines.append(f"{name:<{width}} | " + " | ".join(f"{v:>12.4f}" for v in values))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser("src.evaluate.evaluate", "Score generators and routing methods; write scores.json.")
    cli.add_setting_flags(p)
    args = p.parse_args(argv)
    exp = Experiment(Setting.from_args(args), args.dataset_config, args.no_clean)
    _ = exp.config  # a broken config is reported as such, before any split is read
    result = evaluate(exp)
    out = exp.setting.scores_file()
    write_json(out, result)
    print(format_table(result))
    if exp.setting.max_samples:
        print(f"partial result: the first {len(exp.test_rows)} test rows only (--max_samples); the tables and "
              "reports show it only when asked (--allow_partial) and mark it there")
    print(f"wrote {out}")


if __name__ == "__main__":
    cli.run(main)
