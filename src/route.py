"""Route with Smoothie: the Python entry point, and a command for files a user brings.

    python -m src.route --inputs data.jsonl --generations a.json b.json c.json --output out.json

``--inputs`` is a JSONL file with one object per sample (its ``embedding_input`` field, or the
field named by ``--input_field``, locates neighbours for Smoothie-Local with k > 1); each
generation file is ``{"generations": [N strings]}`` in the same order.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src import cli, manifest
from src.cleaning import clean_for_task
from src.embedding_backends import BACKENDS as EMBEDDING_BACKENDS
from src.embedding_backends import DEFAULT_BACKEND as DEFAULT_EMBEDDING_BACKEND
from src.embeddings import PRECISIONS, Embedder
from src.generations import GenerationTable, tables_from_files
from src.io import read_dataset, read_generations, write_json
from src.neighbours import EXACT_MAX_ROWS
from src.neighbours import METHODS as NEIGHBOUR_METHODS
from src.paths import DEFAULT_EMBEDDER
from src.smoothie import ON_INVALID, smoothie_weights, stable_argmax

TYPES = ("sample_dependent", "sample_independent")


@dataclass
class Routed:
    weights: np.ndarray  # (N, m)
    selected: np.ndarray  # (N,) generator index
    generations: list[str]  # the selected raw generation per sample
    generators: list[str]

    def to_json(self) -> dict:
        """The documented output schema (SPEC 3.3)."""
        return {
            "generations": self.generations,
            "smoothie_weights": self.weights.tolist(),
            "selected": self.selected.tolist(),
            "generators": self.generators,
        }


def embed_table(
    embedder: Embedder,
    table: GenerationTable,
    task_names: Sequence[str | None] | None = None,
    inputs: Sequence[str] | None = None,
    clean: bool = True,
    dtype: str = "float32",
) -> np.ndarray:
    """(N, n, m, d) embeddings of a table's generations, cleaned per task, as a memmap of an
    on-disk array (see ``Embedder.embed_array``); with ``inputs``, each text is embedded as
    input + " " + generation (the full-text variant)."""
    n, g, m = table.texts.shape
    tasks = task_names if task_names is not None else [None] * n
    texts = []
    for i in range(n):
        for text in table.texts[i].ravel():
            t = clean_for_task(text, tasks[i]) if clean else text
            texts.append(f"{inputs[i]} {t}" if inputs is not None else t)
    return embedder.embed_array(texts, dtype).reshape(n, g, m, -1)


def route_table(
    table: GenerationTable,
    embedder: Embedder,
    *,
    type_: str = "sample_dependent",
    k: int = 1,
    rows: Sequence[dict] | None = None,
    input_field: str = "embedding_input",
    clean: bool = True,
    full_text: bool = False,
    train: tuple[GenerationTable, Sequence[dict]] | None = None,
    on_invalid: str = "parity",
    neighbours: str = "auto",
    embedding_dtype: str = "float32",
) -> Routed:
    """Smoothie weights and selections for a table. ``rows`` are the samples' dataset rows
    (task names for cleaning, inputs for neighbours); ``train`` switches to the train_time regime.
    Embeddings stay in on-disk arrays and are read in chunks, so a million rows route in little
    memory; ``neighbours`` and ``embedding_dtype`` are the scale knobs (``src.neighbours``)."""
    if type_ not in TYPES:
        raise cli.UserError(f"--type must be one of {', '.join(TYPES)}")
    local = type_ == "sample_dependent"
    if local and k < 1:
        raise cli.UserError("--k must be at least 1")

    def tasks(rs):
        return [r.get("task_name") for r in rs] if rs is not None else None

    def inputs(rs):
        if rs is None:
            raise cli.UserError(f"Smoothie-Local with k={k} needs the samples' inputs (--inputs)")
        missing = [i for i, r in enumerate(rs) if not isinstance(r.get(input_field), str)]
        if missing:
            raise cli.UserError(f"input row {missing[0]} has no text field {input_field!r} (--input_field)")
        return [r[input_field] for r in rs]

    needs_inputs = full_text or (local and (k > 1 or train is not None))
    test_inputs = inputs(rows) if needs_inputs else None
    # the train_time regime estimates on the train split alone: the test generations are not embedded
    emb = None if train is not None else embed_table(embedder, table, tasks(rows), test_inputs if full_text else None,
                                                     clean, embedding_dtype)
    input_emb = embedder.embed_array(test_inputs, embedding_dtype) if local and test_inputs is not None else None

    kwargs = {}
    if train is not None:
        train_table, train_rows = train
        if train_table.names != table.names:
            raise cli.UserError("train and test generations come from different generators")
        train_inputs = inputs(train_rows) if (full_text or local) else None
        kwargs["train_embeddings"] = embed_table(
            embedder, train_table, tasks(train_rows), train_inputs if full_text else None, clean, embedding_dtype
        )
        if local:
            kwargs["train_input_embeddings"] = embedder.embed_array(train_inputs, embedding_dtype)
    weights = smoothie_weights(emb, input_emb, k=k if local else None, on_invalid=on_invalid, neighbours=neighbours,
                               n_queries=table.n_samples, **kwargs)
    selected = stable_argmax(weights)
    first = table.first()
    return Routed(
        weights=weights,
        selected=selected,
        generations=[str(first[i, s]) for i, s in enumerate(selected)],
        generators=list(table.names),
    )


def route_generations(
    generations: Sequence[Sequence[str]],
    inputs: Sequence[str] | None = None,
    *,
    k: int | None = None,
    embedding_model: str = DEFAULT_EMBEDDER,
    clean: bool = True,
    task: str | None = None,
    embedder: Embedder | None = None,
    on_invalid: str = "parity",
    precision: str = "fp32",
) -> Routed:
    """Smoothie from Python, exactly as the commands do it.

    ``generations`` holds one list per generator, each with one output per input, in the same
    input order (as the generation files hold them). Outputs are cleaned as the commands clean
    them (special tokens dropped, first line kept; ``clean=False`` or ``task="gsm8k"`` keeps them
    whole), embedded with a cached sentence-transformers model, and routed: ``k=None`` is
    Smoothie-Global, an int Smoothie-Local over the k nearest ``inputs`` (k=1 needs none).
    ``precision="bf16"`` embeds under bfloat16 autocast (faster on CPUs with AMX; its own cache).
    Returns weights (N, m), the selected index per input and the selected raw outputs.
    """
    if len(generations) < 3:
        raise ValueError(f"Smoothie needs at least 3 generators, got {len(generations)}")
    lengths = {len(g) for g in generations}
    if len(lengths) != 1:
        raise ValueError(f"every generator needs one output per input; lengths differ: {sorted(lengths)}")
    n = lengths.pop()
    if n == 0:
        raise ValueError("no inputs to route")
    if inputs is not None and len(inputs) != n:
        raise ValueError(f"{len(inputs)} inputs for {n} outputs per generator")
    if k is not None and k > 1 and inputs is None:
        raise ValueError(f"Smoothie-Local with k={k} needs the inputs to find neighbours")
    texts = np.empty((n, 1, len(generations)), dtype=object)
    for j, gens in enumerate(generations):
        texts[:, 0, j] = list(gens)
    table = GenerationTable(names=[f"generator_{j}" for j in range(len(generations))], texts=texts)
    rows = [{"task_name": task, "embedding_input": inputs[i] if inputs is not None else None} for i in range(n)]
    return route_table(table, embedder or Embedder(embedding_model, show_progress=False, precision=precision),
                       type_="sample_independent" if k is None else "sample_dependent", k=k or 1, rows=rows,
                       clean=clean, on_invalid=on_invalid)


def add_smoothie_flags(p, type_required: bool = False) -> None:
    p.add_argument("--type", choices=TYPES, required=type_required, default=None if type_required else "sample_dependent",
                   help="sample_dependent = Smoothie-Local, sample_independent = Smoothie-Global")
    p.add_argument("--k", type=cli.positive_int, default=1,
                   help="neighbours for Smoothie-Local (1 = the sample alone)")
    p.add_argument("--embedding_model", default=DEFAULT_EMBEDDER,
                   help="sentence-transformers short name, hub id or local folder")
    p.add_argument("--device", default=None, help="embedding device (default: cuda, mps or cpu)")
    p.add_argument("--on_invalid", choices=ON_INVALID, default="parity",
                   help="rule for rows with a non-positive error estimate (see src/smoothie.py)")
    p.add_argument("--neighbours", choices=NEIGHBOUR_METHODS, default="auto",
                   help=f"Smoothie-Local's neighbour search: exact, approximate (FAISS HNSW), or auto (exact up to "
                        f"{EXACT_MAX_ROWS:,} samples)")
    p.add_argument("--embedding_dtype", choices=("float32", "float16"), default="float32",
                   help="precision of the on-disk embedding arrays (float16 halves disk and reads at large N)")
    add_precision_flag(p)
    p.add_argument("--embedding_backend", choices=EMBEDDING_BACKENDS, default=DEFAULT_EMBEDDING_BACKEND,
                   help="runtime for the embedder: torch, or its exported graph under ONNX Runtime or OpenVINO "
                        "(CPU); each has its own cache (docs/scale.md)")
    p.add_argument("--ray_replicas", type=cli.positive_int, default=None, metavar="N",
                   help="embed cache misses on N Ray replicas, one GPU each where there are GPUs (RAY_ADDRESS: a "
                        "running cluster); same vectors as without")


def add_precision_flag(p, default: str = "fp32") -> None:
    p.add_argument("--embedding_precision", choices=PRECISIONS, default=default,
                   help="fp32 (the authors' weights to 1e-6) or bf16 (autocast: about 2x faster on CPUs with AMX or "
                        "AVX-512 BF16, the same picks in docs/scale.md's benchmark); each has its own cache")


def check_k(args, n_rows: int, n_generations: int = 1, regime: str = "test_time") -> None:
    """Flag combinations that would silently mean something else, refused or flagged at the edge."""
    if args.type == "sample_independent":
        if args.k != 1:
            print(f"warning: --k {args.k} has no effect with --type sample_independent (Smoothie-Global)")
        return
    if args.k > n_rows:
        where = "train" if regime == "train_time" else "test"
        raise cli.UserError(f"--k {args.k} is more than the {n_rows} {where} samples to draw neighbours from")
    if args.k > 1 and n_generations > 1 and regime == "test_time":
        raise cli.UserError(
            f"--k {args.k} with --n_generations {n_generations}: Smoothie-Local estimates each sample's errors from "
            "its own sampled generations (SPEC 4), so --k must be 1 (or use --regime train_time)"
        )


def route_with_flags(table: GenerationTable, args, **kwargs) -> Routed:
    """``route_table`` configured by the flags of :func:`add_smoothie_flags`."""
    embedder = Embedder(args.embedding_model, device=args.device, ray_replicas=args.ray_replicas or 0,
                        backend=args.embedding_backend, precision=args.embedding_precision)
    return route_table(table, embedder, type_=args.type, k=args.k, on_invalid=args.on_invalid,
                       neighbours=args.neighbours, embedding_dtype=args.embedding_dtype, **kwargs)


def add_file_flags(p) -> None:
    """The flags that name a user's own generation files (``src.route``, ``src.replay``)."""
    p.add_argument("--generations", nargs="+", required=True, help="one JSON file per generator")
    p.add_argument("--inputs", default=None, help="JSONL of the samples (needed for --k > 1)")
    p.add_argument("--input_field", default="embedding_input", help="field of --inputs holding the input text")
    p.add_argument("--names", nargs="+", default=None, help="generator names (default: file stems)")
    p.add_argument("--output", required=True, help="where to write the routed JSON")
    p.add_argument("--no_clean", action="store_true",
                   help="embed generations as they are (default: special tokens dropped, first line kept)")


def warn_identical(paths: Sequence[Path], generations: Sequence[list]) -> None:
    """Say which generator files hold exactly the same outputs: Smoothie reads two identical
    generators as two error-free ones (they agree perfectly), which is rarely what a user meant."""
    seen: dict[str, Path] = {}
    for path, gens in zip(paths, generations):
        twin = seen.setdefault(json.dumps(gens), path)
        if twin is not path:
            warnings.warn(f"--generations {twin} and {path} are identical: Smoothie sees two generators that agree "
                          "perfectly and gives them the weight; drop one of them unless that is intended",
                          stacklevel=2)


def read_generation_files(args) -> tuple[list[str], list[Path], int, list[dict] | None]:
    """Generator names, their files, the row count and the input rows (or None), checked against each other:
    at least 3 distinct files of equal, non-zero length, and inputs of the same length."""
    paths = [Path(g) for g in args.generations]
    names = args.names or [g.name.removesuffix(".json").removesuffix("_test") for g in paths]
    if len(names) != len(paths):
        raise cli.UserError(f"--names gives {len(names)} names for {len(paths)} --generations files")
    if len(paths) < 3:
        raise cli.UserError(f"--generations: Smoothie needs at least 3 generators, got {len(paths)}")
    resolved = [p.resolve() for p in paths]
    repeated = next((p for i, p in enumerate(paths) if resolved[i] in resolved[:i]), None)
    if repeated is not None:
        raise cli.UserError(f"--generations names {repeated} more than once; each generator is one file")
    if len(set(names)) != len(names):
        raise cli.UserError(f"--names: generator names must differ ({', '.join(names)})")
    generations = [read_generations(p) for p in paths]
    lengths = [len(g) for g in generations]
    if len(set(lengths)) != 1:
        short = paths[lengths.index(min(lengths))]
        raise cli.UserError(f"--generations files differ in length ({', '.join(map(str, lengths))}); {short} has "
                            f"{min(lengths)} entries")
    n_rows = lengths[0]
    if n_rows == 0:
        raise cli.UserError(f"--generations: {paths[0]} holds no generations; nothing to route")
    warn_identical(paths, generations)
    rows = read_dataset(args.inputs, required=()) if args.inputs else None
    if rows is not None and len(rows) != n_rows:
        raise cli.UserError(f"--inputs {args.inputs} has {len(rows)} rows but the generation files hold {n_rows} "
                            "each; the inputs must list the same samples in the same order")
    return names, paths, n_rows, rows


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser("src.route", "Route among your own generation files with Smoothie (no labels).")
    add_file_flags(p)
    add_smoothie_flags(p)
    args = p.parse_args(argv)

    names, paths, n_rows, rows = read_generation_files(args)
    check_k(args, n_rows)
    table = tables_from_files(paths, n_rows, names)
    routed = route_with_flags(table, args, rows=rows, input_field=args.input_field, clean=not args.no_clean)
    settings = {k: v for k, v in vars(args).items() if k not in ("output", "device", "ray_replicas")}
    embedder = Embedder(args.embedding_model, backend=args.embedding_backend,
                        precision=args.embedding_precision, device=args.device).identity
    recorded = manifest.build([*paths, *([args.inputs] if args.inputs else [])], settings | {"method": "smoothie"},
                              kind="routed", base=Path(args.output).parent, models={"embedder": embedder}, rows=n_rows)
    write_json(args.output, {**routed.to_json(), manifest.KEY: recorded})
    counts = np.bincount(routed.selected, minlength=len(names))
    print(f"wrote {args.output}: " + ", ".join(f"{n} {c}" for n, c in zip(names, counts)))


if __name__ == "__main__":
    cli.run(main)
