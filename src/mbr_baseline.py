"""Label-free baseline: minimum-Bayes-risk selection (the generation closest to the others)."""

from __future__ import annotations

from collections.abc import Sequence

from src import cli
from src.embeddings import Embedder
from src.experiment import embedder_model, open_experiment
from src.methods.mbr import mbr_cosine, mbr_rouge
from src.paths import DEFAULT_EMBEDDER
from src.route import add_precision_flag, embed_table


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser("src.mbr_baseline", "Pick, per sample, the generation that agrees most with the others.")
    p.add_argument("--similarity", choices=("cosine", "rouge"), default="cosine",
                   help="cosine over the embeddings Smoothie uses (default), or ROUGE-2 between texts")
    p.add_argument("--embedding_model", default=DEFAULT_EMBEDDER)
    p.add_argument("--device", default=None)
    add_precision_flag(p)
    if (opened := open_experiment(p, argv, "mbr", models=embedder_model)) is None:
        return
    args, exp, out, recorded = opened
    table = exp.test_table
    if args.similarity == "cosine":
        emb = embed_table(Embedder(args.embedding_model, device=args.device, precision=args.embedding_precision), table,
                          [r.get("task_name") for r in exp.test_rows], clean=exp.clean)
        picks = mbr_cosine(emb[:, 0])
    else:
        picks = mbr_rouge(table.first())
    exp.write_method(out, picks, recorded)


if __name__ == "__main__":
    cli.run(main)
