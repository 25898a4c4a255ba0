"""Labelled Smoothie: Smoothie-Global's label-free ranking, corrected by a handful of labelled rows.

    python -m src.labeled_smoothie --dataset_config C --model_group G --multi_model --n_labels 5

Each of ``--n_trials`` seeded trials labels ``--n_labels`` train rows and routes every test row to
one generator: Smoothie's pick unless the labels put another ahead by more than the rule's
margin (``src/methods/labeled_smoothie.py`` says why). ``--n_labels 0`` is Smoothie-Global.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from src import cli
from src.embeddings import Embedder
from src.experiment import embedder_model, open_experiment
from src.methods.baselines import orient
from src.methods.labeled_smoothie import ALPHA, labeled_smoothie_trials
from src.paths import DEFAULT_EMBEDDER
from src.route import add_precision_flag, route_table


def _level(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < 0.5:
        raise argparse.ArgumentTypeError(f"a test level is between 0 and 0.5, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser("src.labeled_smoothie", "Smoothie-Global corrected by a few labelled train samples.")
    p.add_argument("--n_labels", type=cli.non_negative_int, default=5,
                   help="labelled train samples drawn per trial (0 = Smoothie-Global)")
    p.add_argument("--n_trials", type=cli.positive_int, default=10)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--embedding_model", default=DEFAULT_EMBEDDER,
                   help="sentence-transformers short name, hub id or local folder (as run_smoothie)")
    p.add_argument("--device", default=None, help="embedding device (default: cuda, mps or cpu)")
    add_precision_flag(p)
    p.add_argument("--alpha", type=_level, default=ALPHA,
                   help="the paired test's level: lower trusts Smoothie's pick longer (the default is the level chosen "
                        "on held-out data: docs/results.md)")
    if (opened := open_experiment(p, argv, "labeled_smoothie", suffix=lambda a: f"_{a.n_labels}", models=embedder_model)) is None:
        return
    args, exp, out, recorded = opened
    table = exp.test_table
    # no labels, no train scores read: n = 0 is Smoothie-Global and needs no references
    train_scores = (orient(exp.train_scores, exp.train_metrics) if args.n_labels
                    else np.zeros((0, len(table.names))))  # every file checked before the model loads
    embedder = Embedder(args.embedding_model, device=args.device, precision=args.embedding_precision)
    routed = route_table(table, embedder, type_="sample_independent",
                         rows=exp.test_rows, clean=exp.clean)
    theta = routed.weights[0]
    picks, draws = labeled_smoothie_trials(theta, train_scores, table.n_samples, args.n_labels, args.n_trials,
                                           args.seed, alpha=args.alpha)
    exp.write_method(out, picks, recorded, labeled_train_rows=draws.tolist(), smoothie_theta=theta.tolist(),
                     alpha=args.alpha)


if __name__ == "__main__":
    cli.run(main)
