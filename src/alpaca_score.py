"""Score Alpaca predictions offline from cached AlpacaEval judge verdicts.

The public leaderboard publishes the judge's preference for every output of every model it
lists. Every prediction Smoothie (or the random pick) makes is one of those outputs, so its
verdict is already known: no judge, no API key. These numbers come from the leaderboard's
cached annotations, not from a new judge run.

    python -m src.alpaca_score --annotations_dir DIR [--downloaded_dir D] [--outputs_dir O]

``DIR`` holds one file per model: the leaderboard's ``annotations.json`` (a list with
``instruction``, ``output_2`` and ``preference``; name it ``<model>.json``), or the compact
``{"preference": [...]}`` in the order of that model's downloaded outputs file. Win rate is
mean(preference - 1) x 100, with its standard error.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from src import cli
from src.io import atomic_write_text, read_json
from src.paths import (
    alpaca_downloaded_dir,
    alpaca_leaderboard,
    alpaca_outputs_dir,
    alpaca_prediction_files,
    alpaca_trial_summary,
)

Key = tuple[str, str]


def load_verdicts(annotations_dir: Path, downloaded_dir: Path) -> dict[Key, float]:
    """(instruction, output) -> the judge's preference for that output over the reference."""
    verdicts: dict[Key, float] = {}
    files = sorted(annotations_dir.glob("*.json"))
    if not files:
        raise cli.UserError(f"--annotations_dir {annotations_dir}: no cached annotation files (*.json)")
    for path in files:
        data = read_json(path, what="annotations file")
        if isinstance(data, dict) and isinstance(data.get("preference"), list):
            source = downloaded_dir / path.name
            rows = read_json(source, what=f"downloaded outputs matching {path.name}")
            if len(rows) != len(data["preference"]):
                raise cli.UserError(f"{path}: {len(data['preference'])} preferences for {len(rows)} outputs in {source}")
            pairs = [((r["instruction"], r["output"]), p) for r, p in zip(rows, data["preference"])]
        elif isinstance(data, list) and all(isinstance(a, dict) and {"instruction", "output_2", "preference"} <= set(a)
                                            for a in data):
            pairs = [((a["instruction"], a["output_2"]), a["preference"]) for a in data]
        else:
            raise cli.UserError(f"{path}: neither AlpacaEval annotations nor a {{'preference': [...]}} file")
        for key, pref in pairs:
            if pref is not None:
                verdicts.setdefault(key, float(pref))
    return verdicts


def win_rate(preferences: Sequence[float]) -> tuple[float, float]:
    """(win rate, standard error), both x100."""
    wins = np.asarray(preferences, dtype=float) - 1.0
    se = wins.std(ddof=1) / np.sqrt(len(wins)) if len(wins) > 1 else 0.0
    return 100 * float(wins.mean()), 100 * float(se)


def _lookup(verdicts: dict[Key, float], rows: list[dict], where: Path) -> list[float]:
    missing = [r for r in rows if (r["instruction"], r["output"]) not in verdicts]
    if missing:
        raise cli.UserError(
            f"{where}: no cached judge verdict for {len(missing)} of {len(rows)} outputs (first: "
            f"{missing[0]['instruction'][:50]!r}); add that model's annotations to --annotations_dir"
        )
    return [verdicts[(r["instruction"], r["output"])] for r in rows]


def score(downloaded_dir: Path, outputs_dir: Path, annotations_dir: Path) -> tuple[list[dict], list[dict]]:
    """(leaderboard rows, per-trial summary rows)."""
    verdicts = load_verdicts(annotations_dir, downloaded_dir)
    board, model_rates = [], {}
    for path in sorted(downloaded_dir.glob("*.json")):
        rows = read_json(path, what="downloaded outputs file")
        prefs = [verdicts.get((r["instruction"], r["output"])) for r in rows]
        prefs = [p for p in prefs if p is not None]
        if not prefs:
            continue  # no cached verdicts for this model: it is not on the board
        rate, se = win_rate(prefs)
        model_rates[path.stem] = rate
        board.append({"name": path.stem, "kind": "model", "trial": "", "win_rate": rate, "standard_error": se,
                      "n": len(prefs)})
    trials: dict[int, dict] = {}
    for method, trial, path in alpaca_prediction_files(outputs_dir):
        rows = read_json(path, what="prediction file")
        rate, se = win_rate(_lookup(verdicts, rows, path))
        board.append({"name": path.stem, "kind": method, "trial": trial, "win_rate": rate, "standard_error": se,
                      "n": len(rows)})
        entry = trials.setdefault(trial, {"trial": trial, "models_in_trial": " ".join(rows[0]["models_in_trial"])})
        entry[f"{method}_win_rate"] = rate
        if method == "smoothie_independent":
            entry["smoothie_global_pick"] = Counter(r["selected_model"] for r in rows).most_common(1)[0][0]
    summary = []
    for t in sorted(trials):
        entry = trials[t]
        members = entry["models_in_trial"].split()
        known = {m: model_rates[m] for m in members if m in model_rates}
        if known:
            best = max(known, key=known.get)
            entry.update(best_model=best, best_member_win_rate=known[best],
                         mean_member_win_rate=float(np.mean(list(known.values()))))
            if "smoothie_global_pick" in entry:
                entry["picked_best"] = entry["smoothie_global_pick"] == best
        summary.append(entry)
    board.sort(key=lambda r: -r["win_rate"])
    return board, summary


def _csv(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in r.items()})
    return buf.getvalue()


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser("src.alpaca_score", "Win rates of Alpaca predictions from cached judge verdicts (no judge).")
    p.add_argument("--annotations_dir", required=True, help="cached AlpacaEval annotations, one file per model")
    p.add_argument("--downloaded_dir", default=None, help="default: alpaca/downloaded_outputs")
    p.add_argument("--outputs_dir", default=None, help="default: alpaca/algorithm_outputs")
    p.add_argument("--leaderboard_dir", default=None, help="where leaderboard.csv and trial_summary.csv go (alpaca/)")
    args = p.parse_args(argv)
    downloaded, outputs = alpaca_downloaded_dir(args.downloaded_dir), alpaca_outputs_dir(args.outputs_dir)
    for flag, folder in (("--downloaded_dir", downloaded), ("--outputs_dir", outputs),
                         ("--annotations_dir", Path(args.annotations_dir))):
        if not folder.is_dir():
            raise cli.UserError(f"{flag} {folder}: not a folder")
    board, summary = score(downloaded, outputs, Path(args.annotations_dir))
    atomic_write_text(alpaca_leaderboard(args.leaderboard_dir), _csv(board))
    atomic_write_text(alpaca_trial_summary(args.leaderboard_dir), _csv(summary))
    print(f"{'name':<28} {'win rate':>9} {'s.e.':>6}")
    for r in board:
        print(f"{r['name']:<28} {r['win_rate']:>9.2f} {r['standard_error']:>6.2f}")
    picked = [s.get("picked_best") for s in summary if "picked_best" in s]
    if picked:
        print(f"Smoothie-Global picked the trial's best model in {sum(picked)} of {len(picked)} trials "
              "(win rates from cached judge annotations)")
    print(f"wrote {alpaca_leaderboard(args.leaderboard_dir)} and {alpaca_trial_summary(args.leaderboard_dir)}")


if __name__ == "__main__":
    cli.run(main)

