"""Replay a gateway policy over generation files before deploying it.

    python -m src.replay --generations a.json b.json c.json --inputs inputs.jsonl \\
                         --policy select --explore 0.1 --concurrency 8 --output replay.json

Each row of the files is one request, in file order, sent as a chat message holding the row's
input. The gateway's own request core (``src.gateway.core``) serves it, with backends that answer
from the files at once and the server's defaults for every setting, so what the replay selects,
calls and fans out is what ``src.serve`` would do with these answers from its backends, with
``--concurrency`` requests in flight. The output says what was selected and which backends were
asked, so a policy's cost (``backend_calls``) and, where labels exist, its quality can be read
before a single live request (``benchmarks/gateway_policies.py``). It needs no web framework.

Timing. One request at a time (``--concurrency 1``), the replay is exact: it equals a server
that received the same requests one after another. A loaded server decides each request by the
fan-outs stored when it is numbered, and which those are depends on how fast its backends were;
``--concurrency N`` gives the replay N requests in flight against backends that answer at once,
which models that only approximately. To reproduce a loaded server's decisions exactly, give
its log (``--server_log``): each request is then decided by exactly the rows the server's was
(its log line names the fan-outs that were still running, ``unseen``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from contextvars import ContextVar
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from src import cli, manifest
from src.gateway import config
from src.gateway.backends import BackendError
from src.gateway.config import Backend, Settings
from src.gateway.core import Core, Seen
from src.gateway.protocol import CHAT, answer_text
from src.gateway.store import FanoutStore
from src.generations import tables_from_files
from src.io import write_json
from src.route import read_generation_files

_ROW: ContextVar[int] = ContextVar("replay_row")  # the file row a request (and its fan-out) stands for


class FileBackends:
    """The backends of a replay: backend j answers the request of row i with ``answers[i, j]``,
    at once; an empty one is a failed answer, as from a live backend. Counts every call."""

    def __init__(self, names: list[str], answers: np.ndarray):
        self.names, self.answers = list(names), answers
        self._col = {b: j for j, b in enumerate(names)}
        self.waiting = dict.fromkeys(names, 0)
        self.calls: dict[int, list[str]] = {}

    async def call(self, name: str, kind: str, body: dict, background: bool = False,
                   deadline: float | None = None) -> tuple[dict, float]:
        row = _ROW.get()
        self.calls.setdefault(row, []).append(name)
        text = str(self.answers[row, self._col[name]])
        if not text.strip():
            raise BackendError("empty answer (no text)", "empty")
        message = {"message": {"role": "assistant", "content": text}} if kind == CHAT else {"text": text}
        return {"object": "chat.completion", "created": 0, "model": name,
                "choices": [{"index": 0, **message, "finish_reason": "stop"}]}, 0.0

    def cooling(self, name: str) -> None:
        return None

    def state(self, name: str) -> str:
        return "ok"

    def retry_after(self, name: str) -> int:
        return 1

    def in_flight(self, name: str) -> int:
        return 0

    def redact(self, text: str) -> str:
        return text

    async def probe(self) -> dict:
        return {}

    async def aclose(self) -> None:
        return None


class TableEmbedder:
    """Vectors looked up by text (computed beforehand, in the server's embedding mode); texts not
    in the table go to ``fallback``."""

    def __init__(self, texts: Sequence[str], vecs: np.ndarray, fallback=None, identity: str = "replay"):
        self.table = dict(zip(texts, np.asarray(vecs, np.float32)))
        self.fallback, self.identity = fallback, identity

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in texts if t not in self.table]
        if missing:
            if self.fallback is None:
                raise KeyError(f"no vector for {missing[0][:60]!r}")
            self.table.update(zip(missing, self.fallback.embed(missing)))
        return np.stack([self.table[t] for t in texts])


def replay_settings(names: list[str], **values) -> Settings:
    """The server's settings for backends called ``names`` (``values`` as the flags would give)."""
    backends = [Backend(n, "http://replay.invalid/v1") for n in names]
    return Settings(backends=backends, **values).check()


def texts_to_embed(answers: np.ndarray, inputs: Sequence[str], clean: bool) -> list[str]:
    """Every text the core will embed for these rows: inputs, and answers as the server embeds them."""
    from src.cleaning import clean_generation

    out = list(inputs)
    for a in answers.ravel():
        text = str(a)
        out.append(clean_generation(text) if clean else text)
    return list(dict.fromkeys(out))


def read_server_log(path: str | Path) -> dict[int, Seen]:
    """From a gateway's log (its JSON lines; other lines are skipped): the routed requests, in
    the order they were numbered, each with the positions of the requests it did not see
    (``unseen``), counted in that same order from 0, as a replay numbers its rows, and the
    contenders its draw was among (``among``: which had free capacity then)."""
    found: dict[int, list[int]] = {}
    among: dict[int, list[str]] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise cli.UserError(f"--server_log {path}: cannot read it ({exc.strerror or exc})") from None
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("seq"), int) and "unseen" in entry:
            found[entry["seq"]] = [int(q) for q in entry["unseen"]]
            if isinstance(entry.get("among"), list):
                among[entry["seq"]] = [str(b) for b in entry["among"]]
    if not found:
        raise cli.UserError(f"--server_log {path}: no routed request's log line in it (lines with \"seq\" and "
                            "\"unseen\", written by src.serve)")
    position = {seq: i for i, seq in enumerate(sorted(found))}
    return {position[seq]: Seen(sorted(position[q] for q in unseen if q in position), among.get(seq))
            for seq, unseen in found.items()}


class CountingJudge:
    """A judge (``compare``, as ``src.gateway.judge.LiveJudge``) whose calls are counted and
    whose verdicts are kept: (request number, backend shown first, second, outcome)."""

    def __init__(self, judge):
        self.judge, self.calls, self.verdicts = judge, 0, []

    async def compare(self, judge: str, seq: int, request: str, a: tuple[str, str], b: tuple[str, str]):
        self.calls += 1
        outcome, usage = await self.judge.compare(judge, seq, request, a, b)
        self.verdicts.append((seq, a[0], b[0], outcome))
        return outcome, usage


def url_judge(settings: Settings):
    """--judge URL for a replay: a live judge over a pool of that one endpoint; and the pool."""
    from src.gateway.backends import BackendPool
    from src.gateway.judge import LiveJudge

    pool = BackendPool([settings.judge_backend()], timeout=settings.judge_timeout, max_failures=10**9, cooldown=0,
                       max_queue_wait=settings.judge_timeout)
    return LiveJudge(lambda name, body: pool.call(name, CHAT, body)), pool


def replay(answers: np.ndarray, inputs: Sequence[str], names: list[str], settings: Settings, embedder, *,
           concurrency: int = 1, progress: bool = False, recorded: dict[int, Seen] | None = None,
           judge=None) -> dict:
    """Serve N requests (row i: ``inputs[i]``, answered by ``answers[i]``) through the request
    core with ``concurrency`` in flight. Returns the replay's record. ``recorded`` (from
    :func:`read_server_log`): decide each request by exactly what the server's saw; the requests
    then go one at a time, each fan-out stored before the next is numbered. ``judge``: an object
    with ``compare`` (``src.gateway.judge.LiveJudge``'s signature; a benchmark's simulated one),
    in place of ``--judge URL``'s; with a judge, each request's judging ends before the next
    one is numbered, as at a server whose judge keeps up."""
    n = len(inputs)
    if recorded is not None:
        if len(recorded) != n:
            raise cli.UserError(f"--server_log: it has {len(recorded)} routed requests, the files {n} rows")
        concurrency = 1
    pool = FileBackends(names, answers)
    bodies = [json.dumps({"model": settings.router_name, "messages": [{"role": "user", "content": t}]},
                         ensure_ascii=False).encode() for t in inputs]

    final: dict = {}

    judge_pool = None
    if judge is None and settings.judge_kind == "url":
        judge, judge_pool = url_judge(settings)
    counted = CountingJudge(judge) if judge is not None else None

    async def run() -> list[dict]:
        core = Core(settings, embedder, pool, FanoutStore(":memory:", embedder.identity, settings.store_max_rows),
                    recorded=recorded, judge=counted)
        await core.start(probe=False)
        gate = asyncio.Semaphore(concurrency)
        bar = tqdm(total=n, desc=f"replay ({settings.policy})", unit="request", disable=not progress)

        async def one(i: int) -> dict:
            async with gate:
                _ROW.set(i)
                reply = await core.handle(CHAT, bodies[i], "/v1/chat/completions")
                if recorded is not None or counted is not None:
                    await core.drain()  # every fan-out (and verdict) the server may have seen is stored before the next
            bar.update()
            if reply.status != 200:
                raise RuntimeError(f"row {i}: the core answered {reply.status}: {json.dumps(reply.body)[:300]}")
            return reply.body

        try:
            replies = await asyncio.gather(*(one(i) for i in range(n)))
            await core.drain()
            final.update(core.router.global_ranking())  # what /health would say once the stream has passed
            return replies
        finally:
            await core.drain()
            bar.close()
            await core.close()
            if judge_pool is not None:
                await judge_pool.aclose()

    replies = asyncio.run(run())
    order = sorted(range(n), key=lambda i: replies[i]["smoothie"]["seq"])
    if order != list(range(n)):
        raise RuntimeError("requests were numbered out of file order")
    smoothies = [r["smoothie"] for r in replies]
    return {
        "policy": settings.policy,
        "settings": {name: getattr(settings, name) for name in ("k", "explore", "explore_answer", "window", "lag",
                                                              "seed", "clean", "fanout_rule", "budget", "contenders",
                                                              "contender_spread", "judge", "judge_budget")} | {"warmup": settings.warmup_rows},
        "concurrency": concurrency,
        "generators": list(names),
        "selected": [s["chosen"] for s in smoothies],
        "generations": [answer_text(CHAT, r) for r in replies],
        "called": [s["called"] for s in smoothies],
        "modes": [s["mode"] for s in smoothies],
        "estimators": [s.get("estimator") for s in smoothies],
        "uncertainty": [s.get("uncertainty") for s in smoothies],
        "unseen": [s.get("unseen") for s in smoothies],
        "timing": "server log" if recorded is not None else ("exact" if concurrency == 1 else "approximate"),
        "backend_calls": int(sum(len(c) for c in pool.calls.values())),  # generation calls only
        "judge_calls": counted.calls if counted is not None else 0,
        "verdicts": [list(v) for v in counted.verdicts] if counted is not None else [],
        "calls_per_request": (sum(len(c) for c in pool.calls.values()) + (counted.calls if counted else 0)) / n,
        "global_ranking": final,
    }


def build_parser():
    p = cli.parser("src.replay", "Replay a gateway routing policy over generation files, one row per request, "
                   "through the gateway's own request core.")
    p.add_argument("--generations", nargs="+", required=True, help="one JSON file per backend")
    p.add_argument("--inputs", required=True, help="JSONL of the requests' texts, one row per generation row")
    p.add_argument("--input_field", default="embedding_input", help="field of --inputs holding the request text")
    p.add_argument("--names", nargs="+", default=None, help="backend names (default: file stems)")
    p.add_argument("--output", required=True, help="where to write the replay's JSON")
    p.add_argument("--concurrency", type=cli.positive_int, default=1,
                   help="requests in flight against backends that answer at once: above 1 this models a loaded "
                        "server's timing only approximately (use --server_log to reproduce one exactly)")
    p.add_argument("--server_log", default=None,
                   help="a src.serve log of these requests: decide each exactly as the server did (the fan-outs "
                        "each one saw are in its log line); the rows of the files are its routed requests in the "
                        "order it numbered them")
    config.add_flags(p, replay_only=True)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    names, paths, n_rows, rows = read_generation_files(args)
    missing = [i for i, r in enumerate(rows) if not isinstance(r.get(args.input_field), str)]
    if missing:
        raise cli.UserError(f"--inputs {args.inputs}: row {missing[0]} has no text field {args.input_field!r} "
                            "(--input_field)")
    settings = replay_settings(names, **config.from_args(args, replay_only=True))
    if settings.judge_kind in ("backend", "peers"):
        raise cli.UserError(f"--judge {settings.judge}: a replay's backends are files, so its judge is an "
                            "OpenAI-compatible URL (URL[,model=ID][,key_env=VAR])")
    inputs = [r[args.input_field] for r in rows]
    answers = tables_from_files(paths, n_rows, names).first()
    if settings.policy != "fanout" and n_rows <= settings.warmup_rows + settings.lag:
        print(f"src.replay: warning: {n_rows} requests are within the warm-up (warmup {settings.warmup_rows} usable "
              f"fan-outs, seen {settings.lag} requests later: --lag): every one fans out, so this replay says nothing "
              f"about {settings.policy} yet", file=sys.stderr)
    from src.gateway.embedding import build_embedder

    embedder = build_embedder(settings, show_progress=True)  # as src.serve embeds
    texts = texts_to_embed(answers, inputs, settings.clean)
    table = TableEmbedder(texts, np.asarray(embedder.embed_array(texts)), fallback=embedder,
                          identity=embedder.identity)
    recorded = read_server_log(args.server_log) if args.server_log else None
    if recorded is None and args.concurrency > 1:
        print(f"src.replay: note: {args.concurrency} requests in flight against backends that answer at once model a "
              "loaded server's timing only approximately; --server_log reproduces a server's decisions exactly",
              file=sys.stderr)
    out = replay(answers, inputs, names, settings, table, concurrency=args.concurrency, progress=True,
                 recorded=recorded)
    out["settings"].update(embedding_model=settings.embedding_model, embedding_precision=settings.precision,
                           embedding_backend=settings.embedding_backend,
                           generations=[str(p) for p in paths], inputs=args.inputs)
    out[manifest.KEY] = manifest.build([*paths, args.inputs], out["settings"], kind="replay",
                                       base=Path(args.output).parent, models={"embedder": embedder.identity}, rows=n_rows)
    write_json(args.output, out)
    counts = {b: out["selected"].count(b) for b in names}
    judged = f" and {out['judge_calls']} judge calls" if settings.judge else ""
    print(f"wrote {args.output}: {out['backend_calls']} backend calls{judged} for {n_rows} requests "
          f"({out['calls_per_request']:.2f} each); selected " + ", ".join(f"{b} {c}" for b, c in counts.items()))
    ranking = out["global_ranking"]
    if ranking.get("agreement") is not None:
        print(f"Smoothie-Global at the end: {', '.join(ranking['order'])} (best first; {ranking['fanouts']} fan-outs, "
              f"the best kept in {ranking['agreement']:.0%} of {ranking['resamples']} resamples: /health's "
              "global_ranking)")


if __name__ == "__main__":
    cli.run(main)
