"""Label-free baseline: minimum-Bayes-risk selection (the generation closest to the others)."""

from __future__ import annotations

from collections.abc import Sequence

from src import cli
from src.embeddings import Embedder
from src.experiment import Experiment
from src.io import write_json
from src.methods.mbr import mbr_cosine, mbr_rouge
from src.paths import DEFAULT_EMBEDDER, Setting
from src.route import embed_table


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser("src.mbr_baseline", "Pick, per sample, the generation that agrees most with the others.")
    cli.add_setting_flags(p)
    p.add_argument("--similarity", choices=("cosine", "rouge"), default="cosine",
                   help="cosine over the embeddings Smoothie uses (default), or ROUGE-2 between texts")
    p.add_argument("--embedding_model", default=DEFAULT_EMBEDDER)
    p.add_argument("--device", default=None)
    cli.add_redo_flag(p)
    args = p.parse_args(argv)
    exp = Experiment(Setting.from_args(args), args.dataset_config)
    if cli.already_done(exp.setting.method_file("mbr"), args.redo):
        return
    table = exp.test_table
    if args.similarity == "cosine":
        emb = embed_table(Embedder(args.embedding_model, device=args.device), table,
                          [r.get("task_name") for r in exp.test_rows])
        picks = mbr_cosine(emb[:, 0])
    else:
        picks = mbr_rouge(table.first())
    out = exp.setting.method_file("mbr")
    write_json(out, {"generations": exp.selections_to_texts(picks), "selected": picks.tolist(),
                     "generators": table.names})
    print(f"wrote {out}")


if __name__ == "__main__":
    cli.run(main)
