"""Step 4 of the pipeline: score every generator and every routing method in a results folder
(SPEC 3.5), write ``scores.json`` beside them and print the table.

    python -m src.evaluate.evaluate --dataset_config dataset_configs/squad.yaml \
        --model_group 3b --multi_model

Besides the methods, every table shows the headroom: ``oracle`` (the best generator per
sample) and ``best_single`` (the best generator on test, named in ``best_generator``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from src import cli
from src.evaluate.metrics import LOWER_IS_BETTER
from src.evaluate.scoring import score_rows
from src.experiment import Experiment
from src.io import read_json, write_json
from src.methods.baselines import oracle_and_best
from src.methods.registry import BASELINES, method_keys
from src.paths import TRIAL_METHODS, Setting, method_of
from src.provenance import KEY as PROVENANCE
from src.provenance import changed_inputs


def _method_scores(exp: Experiment, texts: list[str], path) -> np.ndarray:
    """Per-sample scores of selected texts: looked up in the generators' scores when the text is
    one of the sample's generations, scored directly otherwise."""
    n = len(exp.test_rows)
    if len(texts) != n or not all(isinstance(t, str) for t in texts):
        raise cli.UserError(f"{path}: holds {len(texts)} selections but the dataset has {n} test rows")
    first, table_scores = exp.test_table.first(), exp.test_scores
    out = np.empty(n)
    unknown = []
    for i, t in enumerate(texts):
        hits = np.flatnonzero(first[i] == t)
        if len(hits):
            out[i] = table_scores[i, hits[0]]
        else:
            unknown.append(i)
    if unknown:
        out[unknown] = score_rows([texts[i] for i in unknown], [exp.test_rows[i] for i in unknown],
                                  [exp.test_metrics[i] for i in unknown], exp.clean)
    return out


def evaluate(exp: Experiment) -> dict:
    metrics = np.array(exp.test_metrics)
    groups = {m: np.flatnonzero(metrics == m) for m in dict.fromkeys(exp.test_metrics)}
    if len(groups) > 1:
        groups["average"] = np.arange(len(metrics))
    per_sample = {}  # name -> (N,) scores, trial files averaged over trials
    current = exp.input_files(("train", "test"))  # what the method files must have been computed from
    for path in exp.setting.method_files():
        data = read_json(path, what="method file")
        gens = data.get("generations") if isinstance(data, dict) else None
        if not isinstance(gens, list):
            raise cli.UserError(f"{path}: expected an object with a 'generations' list")
        stale = changed_inputs(data.get(PROVENANCE), current)
        if stale:
            raise cli.UserError(f"{path} is stale: {stale}; rerun the command that made it (it recomputes stale "
                                "outputs), or delete the file")
        method = method_of(path)
        if method in TRIAL_METHODS:
            if not gens or not all(isinstance(g, list) for g in gens):
                raise cli.UserError(f"{path}: expected a list of trials, each a list of selections")
            per_sample[path.name[: -len("_test.json")]] = np.mean([_method_scores(exp, g, path) for g in gens], axis=0)
        else:
            per_sample[path.name[: -len("_test.json")]] = _method_scores(exp, gens, path)

    names = exp.test_table.names
    result = {}
    for key, idx in groups.items():
        metric_names = metrics[idx]
        oracle, best = oracle_and_best(exp.test_scores[idx], metric_names)
        entry = {
            "ensemble": {n: float(exp.test_scores[idx, j].mean()) for j, n in enumerate(names)},
            "smoothie": {},
            "oracle": oracle,
            "best_single": float(exp.test_scores[idx, best].mean()),
            "best_generator": names[best],
        }
        files_of: dict[str, int] = {}
        for stem in per_sample:
            files_of[method_of(stem)] = files_of.get(method_of(stem), 0) + 1
        for stem, scores in sorted(per_sample.items()):
            value = float(scores[idx].mean())
            method = method_of(stem)
            if method == "smoothie":
                entry["smoothie"][stem] = value
            elif files_of[method] == 1:
                entry[method] = value
            else:  # several variants of one method (labeled_smoothie at several n): one entry each
                group = exp.setting.group
                entry[stem.replace(f"{method}_{group}_", f"{method}_", 1) if group else stem] = value
        result[key] = entry
    return result


def format_table(result: dict) -> str:
    keys = list(result)
    rows: list[tuple[str, list]] = []
    first = result[keys[0]]
    for name in first["ensemble"]:
        rows.append((name, [result[k]["ensemble"][name] for k in keys]))
    for name in ("oracle", "best_single"):
        rows.append((f"{name} ({first['best_generator']})" if name == "best_single" else name,
                     [result[k][name] for k in keys]))
    for stem in first["smoothie"]:
        rows.append((stem, [result[k]["smoothie"][stem] for k in keys]))
    for method in (m.name for m in BASELINES):
        for key in method_keys(first, method):
            rows.append((key, [result[k][key] for k in keys]))
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
    print(f"wrote {out}")


if __name__ == "__main__":
    cli.run(main)
