"""Baseline: labelled kNN routing. Each trial labels 50 train samples; a test sample goes to the
generator that is best on most of its 20 nearest labelled samples by input embedding (SPEC 3.4)."""

from __future__ import annotations

from collections.abc import Sequence

from src import cli
from src.embeddings import Embedder
from src.experiment import embedder_model, open_experiment
from src.methods.baselines import labeled_knn
from src.paths import DEFAULT_EMBEDDER
from src.route import add_precision_flag


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser("src.labeled_knn", "Route by the best generator among labelled nearest neighbours.")
    p.add_argument("--k", type=cli.positive_int, default=20, help="labelled neighbours per test sample")
    p.add_argument("--n_trials", type=cli.positive_int, default=10)
    p.add_argument("--n_labels", type=cli.positive_int, default=50)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--embedding_model", default=DEFAULT_EMBEDDER)
    p.add_argument("--device", default=None)
    add_precision_flag(p)
    if (opened := open_experiment(p, argv, "labeled_knn", models=embedder_model)) is None:
        return
    args, exp, out, recorded = opened
    train_scores, _ = exp.train_scores, exp.test_table  # every file checked before the model loads
    if args.k > min(args.n_labels, len(exp.train_rows)):
        print(f"note: --k {args.k} is more than the {min(args.n_labels, len(exp.train_rows))} labelled samples; "
              "every labelled sample votes")
    embedder = Embedder(args.embedding_model, device=args.device, precision=args.embedding_precision)
    train_x = embedder.embed([r["embedding_input"] for r in exp.train_rows])
    test_x = embedder.embed([r["embedding_input"] for r in exp.test_rows])
    picks, draws = labeled_knn(train_scores, exp.train_metrics, train_x, test_x, args.k, args.n_labels,
                               args.n_trials, args.seed)
    exp.write_method(out, picks, recorded, labeled_train_rows=draws.tolist())


if __name__ == "__main__":
    cli.run(main)
