"""A judge that breaks ties where agreement cannot (``--judge``): pairwise verdicts on the
answers of a fan-out's contenders, aggregated by Bradley–Terry with intervals.

The prompt follows the convention of MT-Bench's pairwise judge (Zheng et al., 2023): the user's
request, then two answers labelled A and B (A's text first), and a verdict ``[[A]]``, ``[[B]]``
or ``[[C]]`` (a tie) on the reply's last line. Which contender is shown as A alternates with a
draw keyed by seed, request and pair, and the fit below gives the first position an advantage of
its own, so a judge that favours one position separates nothing.

Verdicts become a ranking with uncertainty: Bradley–Terry strengths (P(i beats j) =
sigmoid(s_i - s_j + h) with i shown as A, h the judge's position advantage, fitted beside them; a
tie is half a win each) by Newton's method with a weak Gaussian prior, and their covariance from
the curvature at the fit. The verdicts *separate* the
contenders when the best one's strength exceeds every other's by more than Z standard errors
of their difference (which the fit's covariance gives for pairs never compared directly, through
the others); then select follows the judge, otherwise agreement decides. In ``peers``
mode each judge's verdicts are weighted by its reliability, in the spirit of Dawid–Skene: how
often it agrees with what the other judges' verdicts predict (a judge no better than a coin
counts for nothing).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from src.gateway.protocol import CHAT, answer_text, usage_of

JUDGE_SYSTEM = (
    "You compare two answers to the same request and say which one serves the person who asked better. "
    "Weigh correctness first, then how helpful, relevant and clear each answer is. The order in which the answers "
    "appear and their length say nothing about their quality. Give one short sentence of reasoning, then end your "
    "reply with the verdict alone on the last line: [[A]] if answer A is better, [[B]] if answer B is better, "
    "[[C]] if neither is better.")
MAX_ANSWER_CHARS = 4000  # each answer shown to the judge is cut here: a judge call stays bounded
JUDGE_MAX_TOKENS = 256
Z = 1.645  # standard errors by which the judged best must lead each other contender
MIN_VERDICTS = 4  # verdicts on the best's answers before it can be separated
MAX_VERDICTS = 400  # verdicts among the compared backends past which duels stop: what they cannot separate is a tie
PRIOR = 0.1  # the Gaussian prior's precision on each strength (keeps a clean sweep finite)
NO_VERDICT = "X"  # a judgement that gave no verdict (a failed call, or no marker in the reply): kept, not counted
_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")


def judge_messages(request: str, answer_a: str, answer_b: str) -> list[dict]:
    """The chat messages of one pairwise judgement (answers cut at MAX_ANSWER_CHARS)."""
    def cut(text: str) -> str:
        return text if len(text) <= MAX_ANSWER_CHARS else text[:MAX_ANSWER_CHARS] + " [...]"

    user = f"[The request]\n{request}\n\n[Answer A]\n{cut(answer_a)}\n\n[Answer B]\n{cut(answer_b)}"
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def parse_verdict(reply: str) -> str | None:
    """"A", "B" or "C" from the reply's last ``[[X]]``; None when it gives none."""
    found = _VERDICT.findall(reply or "")
    return found[-1] if found else None


@dataclass(frozen=True)
class Verdict:
    """One judgement of fan-out ``seq``: ``first`` was shown as A, ``second`` as B; ``outcome``
    is "A", "B" or "C"."""

    seq: int
    judge: str
    first: str
    second: str
    outcome: str

    def score(self) -> float:
        """``first``'s share of the win: 1, 0 or one half."""
        return {"A": 1.0, "B": 0.0}.get(self.outcome, 0.5)

    def to_json(self) -> dict:
        return {"seq": self.seq, "judge": self.judge, "first": self.first, "second": self.second,
                "outcome": self.outcome}


def bradley_terry(names: list[str], verdicts: list[Verdict], weights: dict[str, float] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Strengths of ``names`` (mean 0) and their covariance from the verdicts among them, with
    a position advantage fitted beside them: P(the answer shown as A wins) = sigmoid(s_A - s_B
    + h). A judge that favours A (or B) is explained by h, not by whoever happened to be shown
    first more often. ``weights``: judge -> how much its verdicts count (default 1)."""
    index = {b: i for i, b in enumerate(names)}
    used = [v for v in verdicts if v.first in index and v.second in index and v.first != v.second]
    m = len(names)
    if not used:
        return np.zeros(m), np.eye(m) / PRIOR
    x = np.zeros((len(used), m + 1))
    rows = np.arange(len(used))
    x[rows, [index[v.first] for v in used]] = 1.0
    x[rows, [index[v.second] for v in used]] = -1.0
    x[:, m] = 1.0  # the position advantage
    y = np.array([v.score() for v in used])
    w = np.array([(weights or {}).get(v.judge, 1.0) for v in used])
    theta = np.zeros(m + 1)
    hessian = np.eye(m + 1) * PRIOR
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(x @ theta)))
        grad = x.T @ (w * (y - p)) - PRIOR * theta
        hessian = (x * (w * p * (1 - p))[:, None]).T @ x + np.eye(m + 1) * PRIOR
        step = np.linalg.solve(hessian, grad)
        theta = theta + step
        if np.abs(step).max() < 1e-9:
            break
    cov = np.linalg.inv(hessian)[:m, :m]
    return theta[:m] - theta[:m].mean(), cov


def reliabilities(verdicts: list[Verdict], names: list[str]) -> dict[str, float]:
    """Peers mode: each judge's weight, 2r - 1 floored at 0, where r is the share of its
    decisive verdicts (plus one agreeing and one disagreeing, a weak prior) that agree with the
    Bradley–Terry order fitted on the other judges' verdicts alone."""
    judges = sorted({v.judge for v in verdicts})
    out = {}
    for k in judges:
        others = [v for v in verdicts if v.judge != k]
        strengths, _ = bradley_terry(names, others)
        where = {b: i for i, b in enumerate(names)}
        agree = total = 0
        for v in verdicts:
            if v.judge != k or v.outcome == "C" or v.first not in where or v.second not in where:
                continue
            total += 1
            predicted = "A" if strengths[where[v.first]] > strengths[where[v.second]] else "B"
            agree += predicted == v.outcome
        r = (agree + 1) / (total + 2)
        out[k] = max(0.0, 2 * r - 1)
    return out


@dataclass
class Judged:
    """What the verdicts say of ``names`` (the contenders): each one's strength with its
    standard error against the best, the number of verdicts, and whether they separate."""

    names: list[str]
    strengths: dict[str, float]
    leads: dict[str, tuple[float, float]]  # other -> (best's lead over it, its standard error)
    verdicts: int
    attempts: int
    best: str | None
    separated: bool
    weights: dict[str, float] | None = None
    overrules: bool = False  # the best leads the backend agreement would call (``anchor``) by Z standard errors

    @property
    def decides(self) -> bool:
        """select follows the verdicts: they separate the best from every other, or at least
        from the backend agreement would call."""
        return self.separated or self.overrules

    def to_json(self) -> dict:
        return {"best": self.best, "separated": self.separated, "overrules": self.overrules,
                "verdicts": self.verdicts, "attempts": self.attempts,
                "strengths": {b: round(v, 3) for b, v in self.strengths.items()},
                "leads": {b: {"lead": round(d, 3), "se": round(se, 3)} for b, (d, se) in self.leads.items()},
                **({"judge_weights": {k: round(v, 3) for k, v in self.weights.items()}} if self.weights else {})}


def judge_contenders(names: list[str], verdicts: list[Verdict], peers: bool = False, anchor: str | None = None
                     ) -> Judged:
    """Bradley–Terry over the verdicts among ``names``: the best, whether it leads every other
    by Z standard errors (direct or through a third) with MIN_VERDICTS verdicts on it, and
    whether it leads ``anchor`` (the backend agreement would call) so."""
    tried = [v for v in verdicts if v.first in names and v.second in names]
    among = [v for v in tried if v.outcome != NO_VERDICT]
    weights = reliabilities(among, names) if peers and among else None
    strengths, cov = bradley_terry(names, among, weights)
    if not among:
        return Judged(names, {}, {}, 0, len(tried), None, False, weights)
    b = int(np.argmax(strengths))
    best = names[b]
    leads = {}
    for o, other in enumerate(names):
        if o == b:
            continue
        lead = float(strengths[b] - strengths[o])
        # the covariance carries indirect evidence: best > x > other separates best from other too
        se = float(np.sqrt(max(cov[b, b] + cov[o, o] - 2 * cov[b, o], 1e-12)))
        leads[other] = (lead, se)
    enough = sum(1 for v in among if best in (v.first, v.second)) >= MIN_VERDICTS
    separated = enough and all(lead > Z * se for lead, se in leads.values())
    overrules = enough and anchor in leads and leads[anchor][0] > Z * leads[anchor][1]
    return Judged(names, dict(zip(names, map(float, strengths))), leads, len(among), len(tried), best, separated,
                  weights, overrules)


def pairs_to_judge(anchor: str, others: list[str], seed: int, seq: int) -> list[tuple[str, str]]:
    """``anchor`` (the backend select would call) against each of ``others``: what separation
    needs, one judge call each. Each pair in the order it is shown (A first), alternated by a
    draw keyed by (seed, seq, pair), so each position gets half of a pair's judgements."""
    rng = np.random.default_rng([seed, seq, 7])
    return [(anchor, b) if rng.random() < 0.5 else (b, anchor) for b in others if b != anchor]


def peer_for(pair: tuple[str, str], backends: list[str], contenders: list[str], seed: int, seq: int) -> str | None:
    """Peers mode: the backend that judges ``pair`` on request ``seq``, never one of the two;
    another contender when there is one, else any other backend, drawn by (seed, seq, pair)."""
    pool = [b for b in contenders if b not in pair] or [b for b in backends if b not in pair]
    if not pool:
        return None
    rng = np.random.default_rng([seed, seq, 8, backends.index(pair[0]), backends.index(pair[1])])
    return pool[int(rng.integers(len(pool)))]


class LiveJudge:
    """Asks a model: ``call(name, body) -> (response, ms)`` sends one chat request to the judge
    named (a backend, or --judge URL's) and raises ``BackendError`` when it fails."""

    def __init__(self, call: Callable[[str, dict], Awaitable[tuple[dict, float]]]):
        self.call = call

    async def compare(self, judge: str, seq: int, request: str, a: tuple[str, str], b: tuple[str, str]
                      ) -> tuple[str | None, dict | None]:
        """The verdict ("A": ``a`` is better, "B", "C", or None: no verdict in the reply) and the
        call's usage. ``a`` and ``b`` are (backend, answer); ``a`` is shown first."""
        body = {"messages": judge_messages(request, a[1], b[1]), "max_tokens": JUDGE_MAX_TOKENS, "temperature": 0}
        data, _ = await self.call(judge, body)
        return parse_verdict(answer_text(CHAT, data)), usage_of(data)
