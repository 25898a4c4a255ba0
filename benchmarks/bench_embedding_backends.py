"""Embedding on CPU: torch against ONNX Runtime and OpenVINO, in speed and in Smoothie's picks.

    python benchmarks/bench_embedding_backends.py [--speed_texts 200] [--rows 500] [--mpnet_rows 100]

Real texts from ../shared/data: GSM8K solutions (long, ~150 tokens) and WebNLG 2020 outputs
(short, ~30 tokens). Speed: each backend embeds the same sample (half GSM8K, half WebNLG) into a
fresh cache, after a warm-up, through ``Embedder`` exactly as the pipeline embeds (unpadded
batches of one token length). Picks: Smoothie-Global's pick and Smoothie-Local k=1's per-row
picks on the first ``--rows`` rows of each set (``--mpnet_rows`` for the slower mpnet), each
backend against torch. The issue's bar for a new CPU default: >= 1.5x faster, the same Global
picks and >= 99% of Local picks the same.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.embedding_backends import BACKENDS  # noqa: E402
from src.embeddings import Embedder  # noqa: E402
from src.route import route_generations  # noqa: E402

SETS = {"gsm8k_solutions": "gsm8k", "webnlg2020": "web_nlg"}
EMBEDDERS = ("all-MiniLM-L6-v2", "all-mpnet-base-v2")


def load_set(shared: Path, source: str, rows: int) -> list[list[str]]:
    files = sorted((shared / source / "generations").glob("*_test.json"))
    return [json.loads(f.read_text())["generations"][:rows] for f in files]


def speed(name: str, backend: str, texts: list[str]) -> float:
    with tempfile.TemporaryDirectory() as cache:
        embedder = Embedder(name, cache_dir=cache, show_progress=False, backend=backend)
        embedder.embed(texts[:8])  # load, export where needed, warm up; not timed
        start = time.perf_counter()
        embedder.embed(texts[8:])
        return (len(texts) - 8) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.environ.get("SMOOTHIE_SHARED_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--speed_texts", type=int, default=200)
    ap.add_argument("--rows", type=int, default=500, help="rows per set for MiniLM's picks")
    ap.add_argument("--mpnet_rows", type=int, default=100, help="rows per set for mpnet's picks")
    ap.add_argument("--embedders", nargs="+", default=list(EMBEDDERS))
    args = ap.parse_args()
    shared = Path(args.shared)
    if not shared.is_dir():
        sys.exit(f"{shared}: the real data folder is needed (../shared/data or $SMOOTHIE_SHARED_DATA)")
    half = args.speed_texts // 2
    sample = [t for source in SETS for t in load_set(shared, source, half)[0]][: args.speed_texts]
    print("| embedder | backend | texts/s | vs torch | Global pick same (GSM8K, WebNLG) | Local k=1 same (GSM8K, WebNLG) |")
    print("|---|---|---|---|---|---|")
    for name in args.embedders:
        rows = args.mpnet_rows if "mpnet" in name else args.rows
        base_speed, base_picks = None, None
        for backend in BACKENDS:
            rate = speed(name, backend, sample)
            picks = {}
            for source, task in SETS.items():
                gens = load_set(shared, source, rows)
                embedder = Embedder(name, show_progress=False, backend=backend)
                glob = route_generations(gens, k=None, task=task, embedder=embedder).selected[0]
                local = route_generations(gens, k=1, task=task, embedder=embedder).selected
                picks[source] = (int(glob), np.asarray(local))
            if backend == "torch":
                base_speed, base_picks = rate, picks
            same_global = ", ".join("yes" if picks[s][0] == base_picks[s][0] else "NO" for s in SETS)
            agree = ", ".join(f"{100 * (picks[s][1] == base_picks[s][1]).mean():.1f}%" for s in SETS)
            print(f"| {name} | {backend} | {rate:.1f} | {rate / base_speed:.2f}x | {same_global} | {agree} |",
                  flush=True)
    print(f"\nspeed: {args.speed_texts} texts (half GSM8K, half WebNLG); picks: first {args.rows} rows per set "
          f"(mpnet: {args.mpnet_rows}); torch threads: {__import__('torch').get_num_threads()}")


if __name__ == "__main__":
    main()
