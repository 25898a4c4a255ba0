"""The paper's AlpacaEval table from the authors' own inputs (SPEC 3.6, PAPER_NUMBERS.md).

    python -m src.paper.alpaca --inputs ../shared/data/alpaca_paper

``--inputs`` holds the ten leaderboard output files the authors' script read
(``downloaded_outputs/``), the paper's ten 5-model trials (``ensembles.json``) and each model's
public leaderboard win rate (``leaderboard.json``). Smoothie-Global picks one model per trial, so
its quality is that model's leaderboard win rate; Smoothie-Local (k=1) is reported as how often it
picks each member (per-instruction verdicts for these models are not public).

Both pairings run by default: ``instruction`` (rows matched by instruction text: right) and
``position`` (files stacked row by row, as the authors' script did: gemini-pro's file lists the
instructions in another order from row 131, so its outputs are paired with the wrong
instructions there). Writes ``<results>/paper/alpaca.md`` and ``alpaca.csv``, and the
per-instruction predictions to ``alpaca/algorithm_outputs/paper_<pairing>/``.
"""

from __future__ import annotations

import csv
import io
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from src import cli
from src.alpaca import PAIRINGS, load_outputs, misaligned_rows, predictions, read_ensembles
from src.embeddings import Embedder
from src.io import atomic_write_text, read_json, write_json
from src.paths import (
    DEFAULT_EMBEDDER,
    alpaca_paper_inputs,
    alpaca_paper_outputs_dir,
    alpaca_prediction_file,
    paper_dir,
)
from src.route import add_precision_flag

PAPER = {"best_picked": 8, "smoothie_global": 50.6, "best_member": 55.5, "mean_member": 37.7}


def run_pairing(inputs: Path, pairing: str, embedder: Embedder, max_instructions: int | None,
                outputs_dir: str | None) -> dict:
    """Route the paper's ten trials under one pairing; returns per-trial records and a summary."""
    data = load_outputs(inputs / "downloaded_outputs", max_instructions, pairing, names="generator")
    trials = read_ensembles(inputs / "ensembles.json", data.models)
    board = read_json(inputs / "leaderboard.json", what="leaderboard.json")
    missing = sorted({m for t in trials for m in t} - set(board))
    if missing:
        raise cli.UserError(f"{inputs / 'leaderboard.json'}: no win rate for {', '.join(missing)}")
    rate = {m: float(board[m]["leaderboard_win_rate"]) for m in board}
    result = predictions(data, trials, embedder, n_neighbors=1)
    out_dir = alpaca_paper_outputs_dir(pairing, outputs_dir)
    for (method, trial), rows in result.items():
        write_json(alpaca_prediction_file(out_dir, method, trial), rows)
    records = []
    for t, members in enumerate(trials):
        pick = result[("smoothie_independent", t)][0]["selected_model"]
        best = max(members, key=rate.get)
        local = Counter(r["selected_model"] for r in result[("smoothie", t)])
        records.append({"trial": t, "members": members, "rates": [rate[m] for m in members], "best": best,
                        "pick": pick, "pick_rate": rate[pick], "picked_best": pick == best,
                        "mean_member": sum(rate[m] for m in members) / len(members),
                        "local_counts": [local.get(m, 0) for m in members],
                        "global_weights": result[("smoothie_independent", t)][0]["smoothie_weights"]})
    n = len(records)
    summary = {"picked_best": sum(r["picked_best"] for r in records), "n_trials": n,
               "smoothie_global": sum(r["pick_rate"] for r in records) / n,
               "best_member": sum(rate[r["best"]] for r in records) / n,
               "mean_member": sum(r["mean_member"] for r in records) / n, "n_instructions": len(data.instructions)}
    return {"pairing": pairing, "records": records, "summary": summary, "out_dir": out_dir}


def render(runs: list[dict], inputs: Path, embedder_name: str, seconds: float) -> tuple[str, str]:
    """The Markdown report and the CSV (one row per pairing and trial)."""
    lines = ["# AlpacaEval: the paper's ten trials, from the authors' inputs", "",
             f"Inputs: `{inputs}`. Embedder: `{embedder_name}`. Instructions: {runs[0]['summary']['n_instructions']}. "
             f"Win rates are the public AlpacaEval 2.0 leaderboard's (GPT-4-Turbo judge), x100. "
             f"Computed in {seconds:.0f} s (embedding included; cached embeddings make reruns fast).", ""]
    lines += ["## Summary", "", "| | picks the best model | Smoothie-Global | best member | mean member |",
              "|---|---|---|---|---|"]
    for run in runs:
        s = run["summary"]
        lines.append(f"| this project, paired by {run['pairing']} | {s['picked_best']}/{s['n_trials']} | "
                     f"{s['smoothie_global']:.1f} | {s['best_member']:.1f} | {s['mean_member']:.1f} |")
    lines += [f"| the paper (PAPER_NUMBERS.md) | {PAPER['best_picked']}/10 | {PAPER['smoothie_global']} | "
              f"{PAPER['best_member']} | {PAPER['mean_member']} |", ""]
    if len(runs) == 2:
        a, b = runs
        changed = [ra["trial"] for ra, rb in zip(a["records"], b["records"]) if ra["pick"] != rb["pick"]]
        lines += ["## What the pairing changes", ""]
        if changed:
            lines += [f"Smoothie-Global's pick differs in trial(s) {', '.join(map(str, changed))}: " + "; ".join(
                f"trial {t}: {a['records'][t]['pick']} ({a['pairing']}) vs {b['records'][t]['pick']} ({b['pairing']})"
                for t in changed) + "."]
        else:
            lines += ["Smoothie-Global picks the same model in every trial under both pairings."]
        wrong = {k: v for k, v in misaligned_rows(inputs / "downloaded_outputs").items() if v}
        lines += ["", "Rows that pairing by position puts beside another instruction: " + (
            ", ".join(f"{k}: {v}" for k, v in wrong.items()) if wrong else "none") +
            ". Those outputs answer other questions, so they sit far from the other members' answers; "
            "Smoothie then sees that file's model as noisier than it is.", ""]
    for run in runs:
        lines += [f"## Per trial, paired by {run['pairing']}", "",
                  "| trial | members (win rate) | best member | Smoothie-Global pick | its win rate | "
                  "Smoothie-Local k=1 picks per member |", "|---|---|---|---|---|---|"]
        for r in run["records"]:
            members = ", ".join(f"{m} ({x:.1f})" for m, x in zip(r["members"], r["rates"]))
            local = ", ".join(f"{m}: {c}" for m, c in zip(r["members"], r["local_counts"]))
            mark = " (best)" if r["picked_best"] else ""
            lines.append(f"| {r['trial']} | {members} | {r['best']} | {r['pick']}{mark} | {r['pick_rate']:.1f} | "
                         f"{local} |")
        lines += ["", f"Per-instruction predictions (SPEC 3.6 format): `{run['out_dir']}`.", ""]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["pairing", "trial", "members", "best_member", "best_win_rate", "smoothie_global_pick",
                "pick_win_rate", "picked_best", "mean_member_win_rate", "local_k1_counts"])
    for run in runs:
        for r in run["records"]:
            w.writerow([run["pairing"], r["trial"], ";".join(r["members"]), r["best"], max(r["rates"]), r["pick"],
                        r["pick_rate"], int(r["picked_best"]), round(r["mean_member"], 3),
                        ";".join(map(str, r["local_counts"]))])
    return "\n".join(lines), buf.getvalue()


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser("src.paper.alpaca", "The paper's AlpacaEval table, from the authors' own inputs.")
    p.add_argument("--inputs", default=None, help="folder with downloaded_outputs/, ensembles.json, leaderboard.json "
                   "(default: alpaca/paper_inputs)")
    p.add_argument("--pairings", nargs="+", choices=PAIRINGS, default=list(PAIRINGS))
    p.add_argument("--embedding_model", default=DEFAULT_EMBEDDER)
    p.add_argument("--device", default=None)
    add_precision_flag(p)
    p.add_argument("--max_instructions", type=cli.positive_int, default=None,
                   help="only the first N instructions (a quick run)")
    p.add_argument("--results_dir", default=None, help="the report goes to <results>/paper/ (default results)")
    p.add_argument("--outputs_dir", default=None, help="predictions go under it (default alpaca/algorithm_outputs)")
    args = p.parse_args(argv)
    inputs = alpaca_paper_inputs(args.inputs)
    for need in ("downloaded_outputs", "ensembles.json", "leaderboard.json"):
        if not (inputs / need).exists():
            raise cli.UserError(f"--inputs {inputs}: lacks {need} (see alpaca/README.md)")
    embedder = Embedder(args.embedding_model, device=args.device, precision=args.embedding_precision)
    started = time.perf_counter()
    runs = [run_pairing(inputs, pairing, embedder, args.max_instructions, args.outputs_dir)
            for pairing in args.pairings]
    md, table = render(runs, inputs, args.embedding_model, time.perf_counter() - started)
    out = paper_dir(args.results_dir)
    atomic_write_text(out / "alpaca.md", md + "\n")
    atomic_write_text(out / "alpaca.csv", table)
    for run in runs:
        s = run["summary"]
        print(f"paired by {run['pairing']}: picks the best model in {s['picked_best']}/{s['n_trials']} trials; "
              f"mean win rate Smoothie-Global {s['smoothie_global']:.1f}, best member {s['best_member']:.1f}, "
              f"mean member {s['mean_member']:.1f}")
    print(f"wrote {out / 'alpaca.md'} and {out / 'alpaca.csv'}")


if __name__ == "__main__":
    cli.run(main)
