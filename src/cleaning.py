"""Post-processing of raw generations before they are embedded or scored (SPEC section 4).

Base models run on past the answer; the first line is what the task asked for. GSM8K keeps its
whole chain of thought, MixInstruct and Alpaca their whole answers, so they are not cleaned.
"""

from __future__ import annotations

import re

SPECIAL_TOKENS = (
    "<pad>", "<s>", "</s>", "<eos>", "</eos>", "<|endoftext|>", "<|im_end|>", "<|im_start|>",
    "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>", "<start_of_turn>", "<unk>",
)
UNCLEANED_TASKS = frozenset({"gsm8k", "mix_instruct", "alpaca"})
_SPECIAL = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))


def clean_generation(text: str) -> str:
    """Drop special tokens, turn a literal backslash-n into a newline, strip, keep line one."""
    text = _SPECIAL.sub("", text).replace("\\n", "\n").strip()
    return text.split("\n", 1)[0]


def needs_cleaning(task_name: str | None) -> bool:
    return task_name not in UNCLEANED_TASKS


def clean_for_task(text: str, task_name: str | None) -> str:
    return clean_generation(text) if needs_cleaning(task_name) else text
