"""Replay a gateway policy over generation files before deploying it.

    python -m src.replay --generations a.json b.json c.json --inputs inputs.jsonl \\
                         --policy select --explore 0.1 --output replay.json

Each row of the files is one request, in file order; the gateway's own routing code
(``src.gateway.policy.Router``) decides, row by row, whether to fan out or which backend to call,
exactly as ``src.serve`` would with these answers from its backends. The output says what was
selected and which backends were asked, so a policy's cost (``backend_calls``) and, where labels
exist, its quality can be read before a single live request (``benchmarks/gateway_policies.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from src import cli, manifest
from src.cleaning import clean_for_task
from src.embedding_backends import BACKENDS as EMBEDDING_BACKENDS
from src.embeddings import Embedder
from src.gateway.config import POLICIES
from src.gateway.policy import Router
from src.gateway.store import Fanout, FanoutStore
from src.generations import tables_from_files
from src.io import write_json
from src.paths import DEFAULT_EMBEDDER
from src.route import add_file_flags, add_precision_flag, read_generation_files
from src.serve import SERVE_PRECISION


def replay(answers: np.ndarray, answer_vecs: np.ndarray, input_vecs: np.ndarray | None, names: list[str], *,
           inputs: Sequence[str] | None = None, policy: str = "fanout", k: int = 20, explore: float = 0.1,
           warmup: int | None = None, window: int = 1000, seed: int = 0, store_max_rows: int = 100_000,
           identity: str = "replay", progress: bool = False) -> dict:
    """Route N requests in order. ``answers`` (N, m) are the backends' answers, ``answer_vecs``
    (N, m, d) their embeddings and ``input_vecs`` (N, d) the inputs' (None: no inputs, so a
    fan-out is routed by Smoothie-Global over the stored rows). Returns the replay's record."""
    n, m, d = answer_vecs.shape
    store = FanoutStore(":memory:", identity, store_max_rows)
    router = Router(names, store, policy=policy, k=k, explore=explore, warmup=warmup, window=window, seed=seed)
    selected, called, modes = [], [], []
    for i in tqdm(range(n), desc=f"replay ({policy})", unit="request", disable=not progress):
        query = input_vecs[i] if input_vecs is not None else None
        decision = router.decide(i, query)
        if decision.fanout:
            vecs = {b: answer_vecs[i, j] for j, b in enumerate(names)}
            empty = frozenset(b for j, b in enumerate(names) if not str(answers[i, j]).strip())
            chosen, _ = router.choose(vecs, query, empty)
            router.record(Fanout(f"row-{i}", inputs[i] if inputs is not None else "",
                                 query if query is not None else np.zeros(d, np.float32),
                                 {b: str(answers[i, j]) for j, b in enumerate(names)}, vecs))
            called.append(list(names))
        else:
            chosen = decision.order[0]
            called.append([chosen])
        selected.append(chosen)
        modes.append(decision.reason)
    store.close()
    index = {b: j for j, b in enumerate(names)}
    return {
        "policy": policy,
        "settings": {"k": k, "explore": explore, "warmup": router.warmup, "window": window, "seed": seed},
        "generators": list(names),
        "selected": selected,
        "generations": [str(answers[i, index[b]]) for i, b in enumerate(selected)],
        "called": called,
        "modes": modes,
        "backend_calls": int(sum(len(c) for c in called)),
    }


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser("src.replay", "Replay a gateway routing policy over generation files, one row per request.")
    add_file_flags(p)
    p.add_argument("--policy", choices=POLICIES, default="fanout", help="the gateway policy to replay")
    p.add_argument("--explore", type=float, default=0.1, help="share of select/local requests that fan out")
    p.add_argument("--k", type=cli.positive_int, default=20, help="neighbours for Smoothie-Local")
    p.add_argument("--warmup", type=cli.non_negative_int, default=None,
                   help="select/local fan out until this many fan-outs are stored (default: k)")
    p.add_argument("--window", type=cli.positive_int, default=1000, help="fan-outs in select's Global weights")
    p.add_argument("--seed", type=int, default=0, help="seed of the explore draws")
    p.add_argument("--embedding_model", default=DEFAULT_EMBEDDER,
                   help="sentence-transformers short name, hub id or local folder")
    p.add_argument("--embedding_backend", choices=EMBEDDING_BACKENDS, default="torch", help="embedder runtime")
    add_precision_flag(p, SERVE_PRECISION)
    args = p.parse_args(argv)
    if not 0 <= args.explore <= 1:
        raise cli.UserError(f"--explore {args.explore}: must be between 0 and 1")
    names, paths, n_rows, rows = read_generation_files(args)
    if args.policy == "local" and rows is None:
        raise cli.UserError("--policy local finds each request's neighbours by its input: give --inputs")
    inputs = None
    if rows is not None:
        missing = [i for i, r in enumerate(rows) if not isinstance(r.get(args.input_field), str)]
        if missing:
            raise cli.UserError(f"--inputs {args.inputs}: row {missing[0]} has no text field {args.input_field!r} "
                                "(--input_field)")
        inputs = [r[args.input_field] for r in rows]
    answers = tables_from_files(paths, n_rows, names).first()
    tasks = [r.get("task_name") for r in rows] if rows is not None else [None] * n_rows
    texts = [clean_for_task(str(a), tasks[i]) if not args.no_clean else str(a)
             for i in range(n_rows) for a in answers[i]]
    embedder = Embedder(args.embedding_model, backend=args.embedding_backend, one_per_pass=True,
                        precision=args.embedding_precision)  # as src.serve
    vecs = np.asarray(embedder.embed_array(texts)).reshape(n_rows, len(names), -1)
    input_vecs = np.asarray(embedder.embed_array(inputs)) if inputs is not None else None
    out = replay(answers, vecs, input_vecs, names, inputs=inputs, policy=args.policy, k=args.k,
                 explore=args.explore, warmup=args.warmup, window=args.window, seed=args.seed,
                 identity=embedder.identity, progress=True)
    out["settings"].update(embedding_model=args.embedding_model, embedding_precision=args.embedding_precision,
                           clean=not args.no_clean,
                           generations=[str(p) for p in paths], inputs=args.inputs)
    out[manifest.KEY] = manifest.build([*paths, *([args.inputs] if args.inputs else [])], out["settings"],
                                       kind="replay", models={"embedder": embedder.identity}, rows=n_rows)
    write_json(args.output, out)
    counts = {b: out["selected"].count(b) for b in names}
    print(f"wrote {args.output}: {out['backend_calls']} backend calls for {n_rows} requests "
          f"({out['backend_calls'] / n_rows:.2f} each); selected " + ", ".join(f"{b} {c}" for b, c in counts.items()))


if __name__ == "__main__":
    cli.run(main)
