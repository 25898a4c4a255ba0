"""Write the generation files of a run done in ``--shard i/n`` pieces (SLURM and other schedulers).

    python -m src.get_generations ... --shard 0/4     # on four machines or jobs, i = 0..3
    python -m src.merge_shards ...                    # the same flags, without --shard

No model is loaded: every batch is taken from the shards' checkpoints, which must all be finished
and made with the same settings. The result is byte-identical to a single-process run.
"""

from __future__ import annotations

from collections.abc import Sequence

from src import cli
from src.get_generations import main as generate


def main(argv: Sequence[str] | None = None) -> None:
    generate(argv, merge=True)


if __name__ == "__main__":
    cli.run(main)
