"""Routing a million rows on one machine: the figures of docs/scale.md.

    python benchmarks/bench_scale.py [--n 1000000] [--parts global local recall pipeline] [--workdir DIR]

Synthetic data, written once to ``--workdir`` (about 5 GB at N = 1,000,000, plus 17 GB for the
pipeline part's SQLite cache and array): N inputs, unit vectors near a 48-dimensional subspace of
R^384 drawn around 2,000 topic centres (sentence embeddings are far from uniform; uniform vectors
have no meaningful neighbours), and m = 5 generations per input, each the input's direction plus
noise whose size depends on the generator and the topic (each topic has its own best generator),
stored as float16 in a ``.npy`` that Smoothie reads through ``np.load(mmap_mode="r")``.

Each part runs in its own process so that its peak memory is its own. "anon" is the peak of the
process's anonymous resident memory (RssAnon, sampled every 20 ms): pages of a memmapped file are
the page cache's, not the process's. Goals (issue #12): Global under 60 s and 2 GB; Local k = 20
under 15 minutes; on a 20,000-row sample, approximate neighbours' recall@20 >= 0.95, Local picks
agreeing on >= 99% of rows, and the default path identical to exact search (today's code).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

M, D, RANK, K, TOPICS = 5, 384, 48, 20, 2000
CHUNK = 50_000


class PeakMemory:
    """Samples /proc/self/status in a thread: peak anonymous RSS, in GB."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.peak = max(self.peak, int(line.split()[1]) * 1024)
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def gb(self) -> float:
        return self.peak / 1e9


KINDS = ("topics", "iid")


def make_data(workdir: Path, n: int, kind: str = "topics") -> tuple[Path, Path]:
    """inputs.npy (n, D) and generations.npy (n, M, D), float16, written in chunks (seeded).
    ``topics``: inputs near a 48-dimensional subspace around 2,000 topic centres (like sentence
    embeddings); ``iid``: inputs are i.i.d. Gaussian directions in all 384 dimensions, with no
    neighbourhood structure at all (the hard case for graph indexes)."""
    tag = "" if kind == "topics" else f"_{kind}"
    inputs_path, gens_path = workdir / f"inputs_{n}{tag}.npy", workdir / f"generations_{n}{tag}.npy"
    if inputs_path.is_file() and gens_path.is_file():
        return inputs_path, gens_path
    workdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((RANK, D)) / np.sqrt(RANK)
    centres = rng.standard_normal((TOPICS, RANK))
    # each topic ranks the generators differently: its own permutation of the noise scales
    scales = np.stack([rng.permutation(np.linspace(0.3, 1.2, M)) for _ in range(TOPICS)])
    inputs = np.lib.format.open_memmap(inputs_path.with_suffix(".part.npy"), "w+", np.float16, (n, D))
    gens = np.lib.format.open_memmap(gens_path.with_suffix(".part.npy"), "w+", np.float16, (n, M, D))
    for s in range(0, n, CHUNK):
        c = min(CHUNK, n - s)
        topic = rng.integers(0, TOPICS, c)
        if kind == "iid":
            x = rng.standard_normal((c, D))
        else:
            x = (centres[topic] + 0.7 * rng.standard_normal((c, RANK))) @ basis + 0.05 * rng.standard_normal((c, D))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        g = x[:, None, :] + scales[topic][:, :, None] * rng.standard_normal((c, M, D)) / np.sqrt(D) * 3
        g /= np.linalg.norm(g, axis=2, keepdims=True)
        inputs[s : s + c] = x
        gens[s : s + c] = g
    inputs.flush()
    gens.flush()
    del inputs, gens
    os.replace(inputs_path.with_suffix(".part.npy"), inputs_path)
    os.replace(gens_path.with_suffix(".part.npy"), gens_path)
    return inputs_path, gens_path


def part_global(inputs_path: Path, gens_path: Path) -> dict:
    from src.smoothie import smoothie_weights

    gens = np.load(gens_path, mmap_mode="r")
    with PeakMemory() as mem:
        t = time.perf_counter()
        w = smoothie_weights(gens, k=None)
        seconds = time.perf_counter() - t
    return {"seconds": seconds, "anon_gb": mem.gb, "pick": int(w[0].argmax())}


def part_local(inputs_path: Path, gens_path: Path) -> dict:
    from src.neighbours import resolve_method
    from src.smoothie import smoothie_weights

    gens, inputs = np.load(gens_path, mmap_mode="r"), np.load(inputs_path, mmap_mode="r")
    with PeakMemory() as mem:
        t = time.perf_counter()
        w = smoothie_weights(gens, inputs, k=K)
        seconds = time.perf_counter() - t
    counts = np.bincount(w.argmax(1), minlength=M).tolist()
    return {"seconds": seconds, "anon_gb": mem.gb, "neighbours": resolve_method("auto", len(gens)), "picks": counts}


def literal_local(gens: np.ndarray, inputs: np.ndarray, k: int) -> np.ndarray:
    """Smoothie-Local computed literally from SPEC section 4 (tests/reference_smoothie.py): every
    triplet enumerated per sample, exact neighbours from scikit-learn. Written apart from the
    vectorised estimator, so agreeing with it can fail."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from reference_smoothie import local_weights

    return local_weights(np.asarray(gens, dtype=np.float64), np.asarray(inputs, dtype=np.float64), k)


def part_recall(inputs_path: Path, gens_path: Path, sample: int = 20_000) -> dict:
    from src.neighbours import NeighbourIndex, recall_at_k
    from src.smoothie import smoothie_weights

    rows = np.sort(np.random.default_rng(1).choice(len(np.load(inputs_path, mmap_mode="r")), sample, replace=False))
    inputs = np.asarray(np.load(inputs_path, mmap_mode="r")[rows], dtype=np.float32)
    gens = np.asarray(np.load(gens_path, mmap_mode="r")[rows], dtype=np.float32)
    exact = NeighbourIndex(K, "exact").fit(inputs).kneighbors(inputs)
    approx = NeighbourIndex(K, "approx").fit(inputs).kneighbors(inputs)
    w_exact = smoothie_weights(gens, inputs, k=K, neighbours="exact")
    w_approx = smoothie_weights(gens, inputs, k=K, neighbours="approx")
    w_default = smoothie_weights(gens, inputs, k=K)
    out = {"rows": sample, "recall@20": recall_at_k(approx, exact),
           "local_pick_agreement": float((w_exact.argmax(1) == w_approx.argmax(1)).mean()),
           "literal_rows": 500}
    small = smoothie_weights(gens[:500], inputs[:500], k=K)  # the default path on a slice the literal code can afford
    literal = literal_local(gens[:500], inputs[:500], K)
    out["picks_match_literal"] = float((small.argmax(1) == literal.argmax(1)).mean())
    out["max_weight_diff_literal"] = float(np.abs(small - literal).max())
    del w_default
    real = Path.home() / ".cache" / "smoothie" / "embeddings"
    found = sorted(real.glob("all-mpnet-base-v2-*.sqlite"))
    if found:  # real sentence embeddings, when this machine's cache holds some (the AlpacaEval answers)
        import sqlite3

        con = sqlite3.connect(found[0])
        vecs = np.stack([np.frombuffer(b, dtype=np.float32) for (b,) in con.execute("SELECT vec FROM emb LIMIT 20000")])
        ex = NeighbourIndex(K, "exact").fit(vecs).kneighbors(vecs)
        out["real_mpnet_rows"] = len(vecs)
        out["real_mpnet_recall@20"] = recall_at_k(NeighbourIndex(K, "approx").fit(vecs).kneighbors(vecs), ex)
    return out


def _texts(n: int, j: int):
    return (f"Answer {i} from model {j}: the result is {i * 7919 % 10007}." for i in range(n))


def part_pipeline(inputs_path: Path, gens_path: Path, workdir: Path) -> dict:
    """1,000,000 rows of cached embeddings through ``python -m src.route`` (Global): cold, the
    SQLite cache read into an on-disk array; warm, the array reused. Compared with embedding them."""
    import sqlite3

    from src.embeddings import Embedder, text_key
    from src.model_files import minilm_dir

    n = len(np.load(gens_path, mmap_mode="r"))
    folder = workdir / f"pipeline_{n}"
    cache = folder / "cache"
    embedder = Embedder(str(minilm_dir()), cache_dir=cache, show_progress=False)
    files = [folder / f"model_{j}.json" for j in range(M)]
    out: dict = {"rows": n, "texts": n * M}
    if not embedder.cache_path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        gens = np.load(gens_path, mmap_mode="r")
        t = time.perf_counter()
        embedder.cache_path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(embedder.cache_path.with_suffix(".part"))
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        con.execute("CREATE TABLE emb (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        for j, f in enumerate(files):
            texts = list(_texts(n, j))
            f.write_text(json.dumps({"generations": texts}))
            for s in range(0, n, CHUNK):
                vecs = np.asarray(gens[s : s + CHUNK, j], dtype=np.float32)
                con.executemany("INSERT INTO emb VALUES (?, ?)",
                                [(text_key(x), v.tobytes()) for x, v in zip(texts[s : s + CHUNK], vecs)])
            con.commit()
        con.close()
        os.replace(embedder.cache_path.with_suffix(".part"), embedder.cache_path)
        out["cache_build_seconds"] = time.perf_counter() - t
    for array in embedder.array_dir.glob("*.npy") if embedder.array_dir.is_dir() else []:
        array.unlink()  # the cold run reads SQLite
    os.environ["SMOOTHIE_CACHE_DIR"] = str(cache)
    from src import route

    argv = ["--generations", *map(str, files), "--type", "sample_independent", "--embedding_model",
            str(minilm_dir()), "--output", str(folder / "routed.json")]
    for run in ("cold", "warm"):
        with PeakMemory() as mem:
            t = time.perf_counter()
            route.main(argv)
            out[f"route_{run}_seconds"] = time.perf_counter() - t
        out[f"route_{run}_anon_gb"] = mem.gb
    # what embedding these texts would cost: MiniLM on a sample of the same texts, fresh cache
    sample = [t for j in range(M) for t in _texts(2000, j)][:4000]
    import tempfile

    with tempfile.TemporaryDirectory() as empty:
        fresh = Embedder(str(minilm_dir()), cache_dir=empty, show_progress=False)
        t = time.perf_counter()
        fresh.embed(sample)
        rate = len(sample) / (time.perf_counter() - t)
    out["embed_texts_per_second"] = rate
    out["embed_all_seconds_estimate"] = n * M / rate
    return out


PARTS = {"global": part_global, "local": part_local, "recall": part_recall, "pipeline": part_pipeline}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS))
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/smoothie_bench_scale"))
    ap.add_argument("--inputs_kind", choices=KINDS, default="topics",
                    help="topics: structured inputs like sentence embeddings; iid: no structure")
    ap.add_argument("--one", choices=list(PARTS), help=argparse.SUPPRESS)  # a child process runs one part
    args = ap.parse_args()
    inputs_path, gens_path = make_data(args.workdir, args.n, args.inputs_kind)
    if args.one:
        extra = (args.workdir,) if args.one == "pipeline" else ()
        print(json.dumps(PARTS[args.one](inputs_path, gens_path, *extra)))
        return
    print(f"N = {args.n:,}, m = {M}, d = {D}, float16 on disk, {args.inputs_kind} inputs; k = {K} for Local")
    results = {}
    for part in args.parts:
        proc = subprocess.run([sys.executable, __file__, "--n", str(args.n), "--workdir", str(args.workdir),
                               "--inputs_kind", args.inputs_kind, "--one", part], capture_output=True, text=True)
        if proc.returncode:
            print(f"{part}: failed\n{proc.stderr[-3000:]}")
            continue
        results[part] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{part}: {json.dumps(results[part])}", flush=True)
    print()
    print("| measurement | figure | goal |")
    print("|---|---|---|")
    if "global" in results:
        g = results["global"]
        print(f"| Smoothie-Global, {args.n:,} rows from disk | {g['seconds']:.1f} s, {g['anon_gb']:.2f} GB anon | "
              "< 60 s, < 2 GB |")
    if "local" in results:
        lo = results["local"]
        print(f"| Smoothie-Local k = {K}, {args.n:,} rows ({lo['neighbours']} neighbours) | {lo['seconds']:.0f} s, "
              f"{lo['anon_gb']:.2f} GB anon | < 900 s |")
    if "recall" in results:
        r = results["recall"]
        print(f"| approximate vs exact neighbours, {r['rows']:,}-row sample: recall@{K} | {r['recall@20']:.3f} | >= 0.95 |")
        print(f"| same sample: Local picks agreeing | {100 * r['local_pick_agreement']:.2f}% | >= 99% |")
        print(f"| first {r['literal_rows']} rows: default path against SPEC 4 computed literally "
              f"(tests/reference_smoothie.py): picks agreeing, largest weight difference | "
              f"{100 * r['picks_match_literal']:.1f}%, {r['max_weight_diff_literal']:.1e} | 100% |")
        if "real_mpnet_recall@20" in r:
            print(f"| real mpnet vectors ({r['real_mpnet_rows']:,} AlpacaEval answers): recall@{K} | "
                  f"{r['real_mpnet_recall@20']:.3f} | |")
    if "pipeline" in results:
        p = results["pipeline"]
        print(f"| `src.route` Global on {p['rows']:,} rows of cached embeddings, cold (SQLite -> array) | "
              f"{p['route_cold_seconds']:.0f} s, {p['route_cold_anon_gb']:.1f} GB anon | well under embedding |")
        print(f"| the same, warm (array reused) | {p['route_warm_seconds']:.0f} s, {p['route_warm_anon_gb']:.1f} GB anon "
              "| |")
        print(f"| embedding those {p['texts']:,} texts with MiniLM here (measured rate "
              f"{p['embed_texts_per_second']:.0f} texts/s) | {p['embed_all_seconds_estimate'] / 3600:.1f} h | |")


if __name__ == "__main__":
    main()
