"""Alpaca: Smoothie and random-pick predictions over ensembles of leaderboard models (SPEC 3.6).

    python -m src.generate_predictions --n_trials 10 --k 5

Reads ``alpaca/downloaded_outputs/*.json`` (AlpacaEval format, aligned by instruction) and
writes ``pick_random_{i}.json``, ``smoothie_{i}.json`` (Smoothie-Local) and
``smoothie_independent_{i}.json`` (Smoothie-Global) to ``alpaca/algorithm_outputs/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from src import cli
from src.alpaca import PAIRINGS, draw_trials, load_outputs, predictions, read_ensembles
from src.embeddings import Embedder
from src.io import write_json
from src.paths import DEFAULT_EMBEDDER, alpaca_downloaded_dir, alpaca_outputs_dir, alpaca_prediction_file
from src.route import add_precision_flag


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser("src.generate_predictions", "Route among AlpacaEval leaderboard outputs with Smoothie.")
    p.add_argument("--n_trials", type=cli.positive_int, default=10)
    p.add_argument("--k", type=cli.positive_int, default=5, help="models per trial")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--ensembles", default=None, help="JSON list of fixed ensembles (lists of model names)")
    p.add_argument("--n_neighbors", type=int, default=1, help="neighbours for Smoothie-Local (1 = the sample)")
    p.add_argument("--embedding_model", default=DEFAULT_EMBEDDER)
    p.add_argument("--device", default=None)
    add_precision_flag(p)
    p.add_argument("--downloaded_dir", default=None, help="default: alpaca/downloaded_outputs")
    p.add_argument("--outputs_dir", default=None, help="default: alpaca/algorithm_outputs")
    p.add_argument("--max_instructions", type=cli.positive_int, default=None,
                   help="only the first N instructions (quick runs)")
    p.add_argument("--pairing", choices=PAIRINGS, default="instruction",
                   help="match files' rows by instruction text (right), or by position as the paper's script did")
    p.add_argument("--model_names", choices=("file", "generator"), default="file",
                   help="name models by file stem or by the files' generator field")
    args = p.parse_args(argv)

    downloaded = alpaca_downloaded_dir(args.downloaded_dir)
    if not downloaded.is_dir():
        raise cli.UserError(f"--downloaded_dir {downloaded}: not a folder (put the leaderboard's model_outputs.json "
                            "files there, one <model>.json each)")
    if args.n_neighbors < 1:
        raise cli.UserError("--n_neighbors must be at least 1")
    data = load_outputs(downloaded, args.max_instructions, args.pairing, args.model_names)
    trials = (read_ensembles(Path(args.ensembles), data.models) if args.ensembles
              else draw_trials(data.models, args.n_trials, args.k, args.seed))
    print(f"{len(data.models)} models, {len(data.instructions)} instructions, {len(trials)} trials")
    result = predictions(data, trials, Embedder(args.embedding_model, device=args.device, precision=args.embedding_precision), args.n_neighbors,
                         args.seed)
    out_dir = alpaca_outputs_dir(args.outputs_dir)
    for (method, trial), rows in result.items():
        write_json(alpaca_prediction_file(out_dir, method, trial), rows)
    for t, members in enumerate(trials):
        pick = result[("smoothie_independent", t)][0]["selected_model"]
        print(f"trial {t}: {', '.join(members)} -> Smoothie-Global picks {pick}")
    print(f"wrote {len(result)} files to {out_dir}")


if __name__ == "__main__":
    cli.run(main)
