"""The embedder on a CUDA GPU against the CPU: speed per precision, and the promises that must hold there too.

    python benchmarks/gpu_check.py --model FOLDER [--texts 3000] [--out results.json]

Checks, each printed as a table row:
- every precision (fp32; bf16 by autocast; bf16 by casting the weights) on the GPU, texts/s against the CPU's fp32 in
  the same run (all the machine's cores);
- vectors stay a function of each text alone on the GPU (50 texts embedded alone equal the same texts in the full
  list, bit for bit), as ``encode_unpadded`` promises;
- how far GPU vectors are from CPU vectors (they differ in the last bits, which is why each device kind has its own
  cache), and whether Smoothie's picks move: Global per synthetic table, Local k=1 rows.
The texts are synthetic sentences of 3 to 200 words (seeded), so no data set is needed on the GPU machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.embeddings import Embedder  # noqa: E402
from src.smoothie import smoothie_weights, stable_argmax  # noqa: E402

WORDS = ("the model answer is likely correct because every step checks out while another reading of "
         "question suggests a different number city river capital france paris rome seven forty two "
         "proof therefore hence thus we find that total sum equals").split()


def synthetic_texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    lengths = np.minimum(3 + rng.geometric(1 / 40, size=n), 200)
    return [f"{i}: " + " ".join(rng.choice(WORDS, size=k)) for i, k in enumerate(lengths)]


def timed(embedder: Embedder, texts: list[str]) -> tuple[np.ndarray, float]:
    embedder.embed(texts[:4])  # load and warm up, not timed
    start = time.perf_counter()
    vecs = embedder.embed(texts)
    return vecs, (len(texts) - 4) / (time.perf_counter() - start)


def picks(vecs: np.ndarray, m: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Smoothie-Global's pick per table of 100 rows, and Smoothie-Local k=1's row picks, with the
    texts laid out as (rows, m generators)."""
    table = vecs[: len(vecs) // m * m].reshape(-1, m, vecs.shape[1])
    local = stable_argmax(smoothie_weights(table, k=1))
    glob = np.array([stable_argmax(smoothie_weights(table[s : s + 100])[:1])[0] for s in range(0, len(table), 100)])
    return glob, local


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a sentence-transformers folder")
    ap.add_argument("--texts", type=int, default=3000)
    ap.add_argument("--out", default=None, help="also write the rows as JSON here")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this check runs on a GPU machine")
    texts = synthetic_texts(args.texts)
    runs = [("cpu", "fp32", "autocast"), ("cuda", "fp32", "autocast"), ("cuda", "bf16", "autocast"),
            ("cuda", "bf16", "weights")]
    rows, cpu = [], None
    with tempfile.TemporaryDirectory() as root:
        for device, precision, mode in runs:
            cache = Path(root) / f"{device}-{precision}-{mode}"
            embedder = Embedder(args.model, device=device, cache_dir=cache, show_progress=False,
                                precision=precision, bf16_mode=mode)
            vecs, rate = timed(embedder, texts)
            alone = np.stack([Embedder(args.model, device=device, cache_dir=Path(root) / f"alone{i}",
                                       show_progress=False, precision=precision, bf16_mode=mode).embed([t])[0]
                              for i, t in enumerate(texts[:50])])
            glob, local = picks(vecs)
            if device == "cpu":
                cpu = (vecs, rate, glob, local)
            cos_cpu = (vecs * cpu[0]).sum(1) / np.linalg.norm(vecs, axis=1) / np.linalg.norm(cpu[0], axis=1)
            rows.append({
                "device": device, "precision": precision, "bf16_mode": mode if precision == "bf16" else "",
                "cache": embedder.cache_path.name, "texts_per_s": round(rate, 1),
                "vs_cpu_fp32": round(rate / cpu[1], 2),
                "each_text_alone_bit_identical": bool(np.array_equal(alone, vecs[:50])),
                "max_abs_diff_vs_cpu_fp32": float(np.abs(vecs - cpu[0]).max()),
                "worst_cosine_vs_cpu_fp32": float(cos_cpu.min()),
                "global_picks_same_as_cpu_fp32": f"{int((glob == cpu[2]).sum())}/{len(glob)}",
                "local_rows_same_as_cpu_fp32": f"{100 * (local == cpu[3]).mean():.1f}%",
            })
            print(json.dumps(rows[-1]), flush=True)
    keys = list(rows[0])
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    print(f"\n{len(texts)} synthetic texts; torch {torch.__version__}; {torch.cuda.get_device_name()}; "
          f"CPU threads {torch.get_num_threads()}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
