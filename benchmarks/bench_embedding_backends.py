"""Embedding on CPU: torch against ONNX Runtime and OpenVINO, in speed and in Smoothie's picks.

    python benchmarks/bench_embedding_backends.py [--speed_texts 200] [--rows 500] [--mpnet_rows 100]
    python benchmarks/bench_embedding_backends.py --precision [--instructions 100]

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


# (precision, backend, tokens per pass, how bf16 is reached): autocast at the default and a 4x budget,
# the model's weights cast to bf16, and OpenVINO's bf16 hint
PRECISION_RUNS = {
    "fp32": ("fp32", "torch", None, "autocast"),
    "autocast": ("bf16", "torch", None, "autocast"),
    "autocast2048": ("bf16", "torch", 2048, "autocast"),
    "weights": ("bf16", "torch", None, "weights"),
    "openvino": ("bf16", "openvino", None, "autocast"),
}


def alpaca_trials(shared: Path, n_instructions: int) -> tuple[list[list[str]], dict[str, list[str]]]:
    """The paper's ten AlpacaEval trials and each model's outputs on the first ``n_instructions``
    instructions, paired by instruction text."""
    folder = shared / "alpaca_paper"
    board = json.loads((folder / "leaderboard.json").read_text())
    trials = json.loads((folder / "ensembles.json").read_text())
    rows = {m: {r["instruction"]: r["output"] for r in json.loads((folder / "downloaded_outputs" / v["file"]).read_text())}
            for m, v in board.items()}
    order = [r["instruction"] for r in json.loads((folder / "downloaded_outputs" / "claude_2.json").read_text())]
    keep = order[:n_instructions]
    return trials, {m: [rows[m][i] for i in keep] for m in rows}


def precision_report(shared: Path, n_instructions: int, gsm8k_rows: int, webnlg_rows: int,
                     runs: list[str]) -> None:
    """mpnet at each precision, each into a fresh cache: texts/s against fp32 in the same run, the
    worst cosine against fp32, and the picks: Smoothie-Global's per AlpacaEval trial and per set,
    Smoothie-Local k=1's rows."""
    name = "all-mpnet-base-v2"
    trials, outputs = alpaca_trials(shared, n_instructions)
    sets = {"AlpacaEval": [[outputs[m] for m in t] for t in trials],
            "GSM8K": [load_set(shared, "gsm8k_solutions", gsm8k_rows)],
            "WebNLG": [load_set(shared, "webnlg2020", webnlg_rows)]}
    task = {"AlpacaEval": None, "GSM8K": "gsm8k", "WebNLG": "web_nlg"}
    clean = {"AlpacaEval": False, "GSM8K": True, "WebNLG": True}
    texts = list(dict.fromkeys(t for groups in sets.values() for g in groups for gen in g for t in gen))
    base_vecs, base_rate, base_picks = None, None, None
    print("| precision | how | backend | tokens per pass | texts/s | vs fp32 | worst cosine vs fp32 | Global picks same "
          "(AlpacaEval trials, GSM8K, WebNLG) | Local k=1 rows same (AlpacaEval, GSM8K, WebNLG) |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as root:
        for run in ["fp32"] + [r for r in runs if r != "fp32"]:  # fp32 first: the baseline
            precision, backend, tokens, mode = PRECISION_RUNS[run]
            cache = Path(root) / run
            embedder = Embedder(name, cache_dir=cache, show_progress=False, precision=precision,
                                tokens_per_batch=tokens, backend=backend, bf16_mode=mode)
            embedder.embed(texts[:4])  # load and warm up, not timed
            start = time.perf_counter()
            vecs = embedder.embed(texts)
            rate = (len(texts) - 4) / (time.perf_counter() - start)
            picks = {}
            for label, groups in sets.items():
                glob, local = [], []
                for gens in groups:
                    glob.append(int(route_generations(gens, k=None, task=task[label], clean=clean[label],
                                                      embedder=embedder).selected[0]))
                    local.append(route_generations(gens, k=1, task=task[label], clean=clean[label],
                                                   embedder=embedder).selected)
                picks[label] = (glob, np.concatenate(local))
            if base_vecs is None:
                base_vecs, base_rate, base_picks = vecs, rate, picks
            cos = (vecs * base_vecs).sum(1) / np.linalg.norm(vecs, axis=1) / np.linalg.norm(base_vecs, axis=1)
            same_global = ", ".join(f"{sum(a == b for a, b in zip(picks[k][0], base_picks[k][0]))}/{len(picks[k][0])}"
                                    for k in sets)
            same_local = ", ".join(f"{100 * (picks[k][1] == base_picks[k][1]).mean():.1f}%" for k in sets)
            how = "" if precision == "fp32" else ("compile hint" if backend == "openvino" else mode)
            print(f"| {precision} | {how} | {backend} | {tokens or 512} | {rate:.2f} | {rate / base_rate:.2f}x | {cos.min():.6f} | "
                  f"{same_global} | {same_local} |", flush=True)
    print(f"\n{len(texts)} distinct texts: AlpacaEval's ten trials on the first {n_instructions} instructions (paired "
          f"by instruction), GSM8K's first {gsm8k_rows} rows (4 systems), WebNLG's first {webnlg_rows} rows "
          f"(16 systems); torch threads: {__import__('torch').get_num_threads()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.environ.get("SMOOTHIE_SHARED_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--speed_texts", type=int, default=200)
    ap.add_argument("--rows", type=int, default=500, help="rows per set for MiniLM's picks")
    ap.add_argument("--mpnet_rows", type=int, default=100, help="rows per set for mpnet's picks")
    ap.add_argument("--embedders", nargs="+", default=list(EMBEDDERS))
    ap.add_argument("--precision", action="store_true", help="mpnet in fp32 against bf16 instead (issue #21)")
    ap.add_argument("--instructions", type=int, default=100, help="AlpacaEval instructions for --precision")
    ap.add_argument("--runs", nargs="+", choices=list(PRECISION_RUNS), default=list(PRECISION_RUNS),
                    help="which ways to bf16 --precision measures (fp32, the baseline, always runs)")
    ap.add_argument("--gsm8k_rows", type=int, default=60)
    ap.add_argument("--webnlg_rows", type=int, default=30)
    args = ap.parse_args()
    shared = Path(args.shared)
    if not shared.is_dir():
        sys.exit(f"{shared}: the real data folder is needed (../shared/data or $SMOOTHIE_SHARED_DATA)")
    if args.precision:
        precision_report(shared, args.instructions, args.gsm8k_rows, args.webnlg_rows, args.runs)
        return
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
