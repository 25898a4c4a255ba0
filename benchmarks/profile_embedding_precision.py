"""Where mpnet's time goes on this CPU, fp32 against bf16: the operators that limit bf16's speed-up.

    python benchmarks/profile_embedding_precision.py [--texts 48]

Embeds the same AlpacaEval answers (../shared/data/alpaca_paper) with ``encode_unpadded`` under
torch.profiler, once per precision after a warm-up, and prints each precision's operators by
self CPU time, with the share of the total.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.embeddings import Embedder, encode_unpadded  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.environ.get("SMOOTHIE_SHARED_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--texts", type=int, default=48)
    ap.add_argument("--top", type=int, default=8)
    args = ap.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    rows = json.loads((Path(args.shared) / "alpaca_paper" / "downloaded_outputs" / "claude_2.json").read_text())
    texts = [r["output"] for r in rows[: args.texts]]
    model = Embedder("all-mpnet-base-v2", show_progress=False).model
    print(f"{len(texts)} AlpacaEval answers, all-mpnet-base-v2, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, oneDNN ISA: {torch.backends.mkldnn.is_available()}")
    for precision in ("fp32", "bf16"):
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else nullcontext
        with ctx():
            encode_unpadded(model, texts[:4])  # warm-up: kernels chosen, weights cast
        with profile(activities=[ProfilerActivity.CPU]) as prof, ctx():
            encode_unpadded(model, texts)
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        print(f"\n{precision}: {total / 1e6:.2f} s of operator time")
        print("| operator | self CPU (s) | share |")
        print("|---|---|---|")
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
            print(f"| {e.key} | {e.self_cpu_time_total / 1e6:.2f} | {100 * e.self_cpu_time_total / total:.0f}% |")


if __name__ == "__main__":
    main()
