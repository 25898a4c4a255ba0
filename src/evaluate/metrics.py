"""Per-sample metrics (SPEC section 5), each a function over lists, registered by name.

Every function takes generations and references of the same length and returns one float per
sample; averaging is the caller's job, so per-sample scores can feed the labelled baselines and
the oracle as well as the tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

Metric = Callable[[Sequence[str], Sequence], list[float]]
METRICS: dict[str, Metric] = {}
LOWER_IS_BETTER = {"mix_instruct_rank"}


def metric(name: str):
    def register(fn: Metric) -> Metric:
        METRICS[name] = fn
        return fn

    return register


@lru_cache(maxsize=1)
def _rouge2_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge2"], use_stemmer=False)


@metric("rouge2")
def rouge2(generations: Sequence[str], references: Sequence) -> list[float]:
    """ROUGE-2 F-measure, no stemming; with several references, the best one."""
    scorer = _rouge2_scorer()
    out = []
    for gen, refs in zip(generations, references, strict=True):
        refs = [refs] if isinstance(refs, str) else list(refs)
        out.append(max((scorer.score(r, gen)["rouge2"].fmeasure for r in refs), default=0.0))
    return out


def _contains(generations: Sequence[str], references: Sequence) -> list[float]:
    out = []
    for gen, refs in zip(generations, references, strict=True):
        refs = [refs] if isinstance(refs, str) else refs
        low = gen.lower()
        out.append(float(any(r.lower() in low for r in refs)))
    return out


@metric("squad_acc")
def squad_acc(generations: Sequence[str], references: Sequence[str]) -> list[float]:
    """1 if the reference, lower-cased, occurs in the lower-cased generation."""
    return _contains(generations, references)


@metric("definition_extraction_acc")
def definition_extraction_acc(generations: Sequence[str], references: Sequence[str]) -> list[float]:
    return _contains(generations, references)


@metric("trivia_qa_acc")
def trivia_qa_acc(generations: Sequence[str], references: Sequence[Sequence[str]]) -> list[float]:
    """1 if any alias, lower-cased, occurs in the lower-cased generation."""
    return _contains(generations, references)


@metric("gsm8k_acc")
def gsm8k_acc(generations: Sequence[str], references: Sequence[str]) -> list[float]:
    """The paper's rule: the first '.'-separated sentence containing "the answer is" (as written,
    case-sensitive) must contain the reference number; commas are removed from both."""
    out = []
    for gen, ref in zip(generations, references, strict=True):
        sentence = next((s for s in gen.split(".") if "the answer is" in s), None)
        out.append(float(sentence is not None and ref.replace(",", "").lower() in sentence.lower().replace(",", "")))
    return out


@metric("mix_instruct_rank")
def mix_instruct_rank(generations: Sequence[str], references: Sequence[dict]) -> list[float]:
    """The ChatGPT-derived rank of the chosen candidate (1 is best)."""
    from src.cli import UserError

    out = []
    for i, (gen, ranks) in enumerate(zip(generations, references, strict=True)):
        if not isinstance(ranks, dict):
            raise UserError(f"row {i} has no MixInstruct rank table (only rows with ChatGPT comparisons can be scored)")
        if gen not in ranks:
            raise UserError(f"row {i}: the selected text is not one of the sample's MixInstruct candidates, so it "
                            "has no rank (mix_instruct_rank scores only the shipped candidates)")
        out.append(float(ranks[gen]))
    return out


TASK_METRIC = {
    "cnn_dailymail": "rouge2", "xsum": "rouge2", "e2e_nlg": "rouge2", "web_nlg": "rouge2",
    "squad": "squad_acc", "trivia_qa": "trivia_qa_acc", "definition_extraction": "definition_extraction_acc",
    "gsm8k": "gsm8k_acc", "mix_instruct": "mix_instruct_rank", "demo": "trivia_qa_acc",
}


def better(metric_name: str, a: float, b: float) -> bool:
    return a < b if metric_name in LOWER_IS_BETTER else a > b
