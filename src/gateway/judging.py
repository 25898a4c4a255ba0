"""The judge's part in routing: which answers it compares, when a single call becomes a duel,
and the judging itself, all after the response (``src.gateway.judge`` holds the prompt, the
verdicts and their aggregation, with no I/O).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

import numpy as np

from src.gateway.backends import OUTCOME, BackendError
from src.gateway.config import JUDGE_NAME
from src.gateway.judge import MAX_VERDICTS, NO_VERDICT, Verdict, pairs_to_judge, peer_for
from src.gateway.protocol import CHAT, Request, answer_text, usage_of, usage_sum
from src.gateway.store import StoreUnavailable

if TYPE_CHECKING:
    from src.gateway.core import _Call

log = logging.getLogger("src.serve")


class Judging:
    """The core's judge work (a mixin of ``Core``): with ``--judge``, fan-outs and duels whose
    contenders agreement cannot separate are judged pairwise off the response path; a judge
    that fails or hangs costs its verdict and a log line, never a response."""

    def _judge_set(self, seq: int, shares: dict[str, float]) -> list[str]:
        """The backends the judge compares for request ``seq``: the contenders, and at least
        ``--judge_among`` best by Smoothie-Global (best first). Agreement's bootstrap measures
        how settled its ranking is, not whether it is right: a weak consensus can be settled."""
        ranking = self.router.ranked(self.router.global_estimate(seq))
        return [*shares, *[b for b in ranking[: self.settings.judge_among] if b not in shares]]

    def _judge_budget_left(self, seq: int) -> bool:
        """``--judge_budget``: the requests whose verdicts request ``seq`` sees stay below that
        share of the requests before it (what it sees, so a replay decides the same)."""
        budget = self.settings.judge_budget
        if budget >= 1:
            return True
        judged = len({v.seq for v in self.router.seen_verdicts(seq)})
        return judged < budget * max(seq - self.settings.lag, 1)

    def _to_judge(self, seq: int) -> list[str]:
        """The backends whose answers fan-out ``seq`` asks the judge about (the first is the
        one select would call): none without a judge, outside ``--judge_budget``'s draw, or
        before there is a Global estimate."""
        s = self.settings
        if self.judge is None or s.policy not in ("select", "adaptive"):  # only their single calls follow verdicts
            return []
        if self.router.global_estimate(seq) is None or not self._judge_budget_left(seq):
            return []
        judged = self._judge_set(seq, self.router.contenders(seq, s.contenders))  # {} at 0: Global's top alone
        return judged if len(judged) >= 2 else []

    async def _judge_call(self, name: str, body: dict) -> tuple[dict, float]:
        """A judge call is a backend call: counted in the metrics, tokens and the dashboard."""
        try:
            data, ms = await self._backend(name, CHAT, body, role="judge", deadline=self.settings.judge_timeout)
        except BackendError as exc:
            self._count(name, OUTCOME[exc.fault])
            self.metrics.judge_calls.labels(name, "failed").inc()
            raise
        self._count(name, "ok", ms, usage_of(data))
        self.metrics.judge_calls.labels(name, "ok").inc()
        return data, ms

    def _duel(self, call: _Call) -> list[str]:
        """The backends the judge compares (``_judge_set``) when a single call's request is a
        duel: after its response one other of them answers it too, drawn by seed and request
        number, and the judge compares the two. With a judge, while its verdicts do not single
        out one backend, for a non-streamed request, on ``--judge_duels``' draw."""
        s = self.settings
        judged = call.smoothie.get("judged") or {}
        if self.judge is None or len(judged.get("among") or []) < 2 or call.req.stream:
            return []
        if judged.get("separated") or judged.get("overrules"):  # decided: calls there would change nothing
            return []
        if judged.get("attempts", 0) >= MAX_VERDICTS or not self._judge_budget_left(call.seq):
            return []
        if judged.get("attempts", 0) >= 20 and judged.get("verdicts", 0) < judged["attempts"] / 2:
            return []  # a judge that answers fewer than half of its judgements without a verdict: not worth calls
        if np.random.default_rng([s.seed, call.seq, 10]).random() >= s.judge_duels:
            return []
        return list(judged["among"])

    def _opponent(self, seq: int, chosen: str, among: list[str]) -> str:
        """Whom a duel sets against ``chosen``: the other backend the verdicts request ``seq``
        sees rate strongest (the likeliest to beat it; before any verdict, the next by Global),
        so calls go where they can change the decision."""
        rest = [b for b in among if b != chosen]
        judged = self.router.judged(seq, among, self.settings.judge_kind == "peers")
        if not judged.strengths:
            return rest[0]
        return max(rest, key=lambda b: (judged.strengths[b], -rest.index(b)))

    async def _duel_then_settled(self, seq: int, rid: str, req: Request, chosen: str, answer: str,
                                 contenders: list[str]) -> None:
        """A duel: the other contenders answer the request too (off the response path), and the
        judge compares every pair. No row is stored: nothing is embedded."""
        try:
            answers = {chosen: answer}
            others = [self._opponent(seq, chosen, contenders)]
            results = await asyncio.gather(*(self._backend(b, req.kind, req.body, role="duel") for b in others),
                                           return_exceptions=True)
            for b, result in zip(others, results):
                if isinstance(result, BackendError):
                    self._count(b, OUTCOME[result.fault])
                elif isinstance(result, BaseException):
                    raise result
                else:
                    self._count(b, "ok", result[1], usage_of(result[0]))
                    answers[b] = answer_text(req.kind, result[0])
            await self._judge_fanout(seq, rid, req.text, answers, [chosen, *others], duel=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a lost duel must not take the gateway down
            log.error(self.redact(json.dumps({"event": "duel_failed", "id": rid, "seq": seq,
                                              "error": f"{type(exc).__name__}: {exc}"[:300]})))
        finally:
            self._settle(seq)

    async def _judged_then_settled(self, seq: int, rid: str, text: str, answers: dict[str, str],
                                   contenders: list[str]) -> None:
        try:
            await self._judge_fanout(seq, rid, text, answers, contenders)
        finally:
            self._settle(seq)

    async def _judge_fanout(self, seq: int, rid: str, text: str, answers: dict[str, str],
                            contenders: list[str], duel: bool = False) -> None:
        """Ask the judge about the first of ``contenders`` that answered against each other one
        (the position drawn: ``judge.pairs_to_judge``), store the verdicts with the request and
        give them to the router. Off the response path: a judge that fails or hangs (past
        ``--judge_timeout`` from dispatch) costs its verdict and a log line, nothing else. A judge
        call that never got a slot (it queues behind users' calls) judged nothing: it is logged
        but kept out of the judgements, so a busy judge is not taken for one that cannot judge."""
        s = self.settings
        names = [b for b in contenders if b in answers]
        jobs = []
        for a, b in (pairs_to_judge(names[0], names[1:], s.seed, seq) if names else []):
            judge = peer_for((a, b), self.names, names, s.seed, seq) if s.judge_kind == "peers" else \
                (JUDGE_NAME if s.judge_kind == "url" else s.judge)
            if judge is not None and judge not in (a, b):
                jobs.append((judge, a, b))

        async def one(judge: str, a: str, b: str):
            """((outcome, usage), why it gave none, whether the judge was asked at all)."""
            bound = s.judge_timeout + s.max_queue_wait  # a judge that does not call through the pool, too
            try:
                async with asyncio.timeout(bound):
                    return await self.judge.compare(judge, seq, text, (a, answers[a]), (b, answers[b])), None, True
            except BackendError as exc:
                return (None, None), str(exc)[:200], exc.fault != "queue"
            except TimeoutError:
                return (None, None), f"timed out after {bound:g} s (--judge_timeout and --max_queue_wait)", True

        with self.tracing.span("judge", attributes={"smoothie.seq": seq, "smoothie.pairs": len(jobs)}):
            results = await asyncio.gather(*(one(*job) for job in jobs))
        # a judgement that gave no verdict is kept too, as NO_VERDICT: duels stop for a judge that cannot answer;
        # a call that never got a slot is no judgement at all
        made = [Verdict(seq, judge, a, b, outcome or NO_VERDICT) for (judge, a, b), ((outcome, _), _, asked)
                in zip(jobs, results) if asked]
        verdicts = [v for v in made if v.outcome != NO_VERDICT]
        failed = {f"{judge}: {a} vs {b}": why or "no verdict ([[A]], [[B]] or [[C]]) in its reply"
                  for (judge, a, b), ((outcome, _), why, _) in zip(jobs, results) if outcome is None}
        stored = True
        if made:
            try:
                await self._db(self.store.add_verdicts, seq, [v.to_json() for v in made])
            except StoreUnavailable:
                stored = False  # kept out of the router too: a restart must see what this process sees
        if stored:
            self.router.add_verdicts(made)
        for v in made:
            self.metrics.verdicts.labels(v.outcome).inc()
        usage = [u for (_, u), _, _ in results if u]
        log.info(self.redact(json.dumps({"event": "judged", "id": rid, "seq": seq, "duel": duel,
                                         "judge_calls": len(jobs),
                                         "verdicts": [v.to_json() for v in verdicts], "failed": failed,
                                         "stored": stored, "usage": usage_sum(usage) if usage else None})))
