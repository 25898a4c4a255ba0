"""Sentence embeddings with an on-disk cache.

Smoothie embeds every generation of every generator, and the same texts come back on every
run (each k, regime and baseline). The cache, a SQLite file per embedder keyed by the SHA-256 of
each text, makes every run after the first free: the model is not even loaded when all texts
are cached. Identical texts within a call are embedded once. Misses are embedded and committed
in chunks, so an interrupted run keeps what it finished and the next one resumes from there.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path

import numpy as np

from src.cli import UserError
from src.model_files import assemble_mpnet, minilm_dir
from src.paths import cache_dir as default_cache_dir

# Short names -> (hub id, finder of an offline copy shipped in a PyPI package, or None).
KNOWN_EMBEDDERS = {
    "all-mpnet-base-v2": ("sentence-transformers/all-mpnet-base-v2", assemble_mpnet),
    "all-minilm-l6-v2": ("sentence-transformers/all-MiniLM-L6-v2", minilm_dir),
    "bge-small-en-v1.5": ("BAAI/bge-small-en-v1.5", None),
}
_SQL_CHUNK = 500


def _fingerprint(folder: Path) -> str:
    """Identity of a local model folder that survives moving it: its configs and weight sizes."""
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.suffix in {".json", ".txt", ".safetensors", ".bin", ".onnx"}:
            rel = f.relative_to(folder).as_posix()
            small = f.suffix == ".json" and f.stat().st_size < 1_000_000
            h.update(rel.encode())
            h.update(f.read_bytes() if small else str(f.stat().st_size).encode())
    return h.hexdigest()[:16]


def resolve(name_or_path: str) -> tuple[str, str]:
    """(what SentenceTransformer should load, cache identity) for a short name, hub id or folder."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path), f"{path.name}-{_fingerprint(path)}"
    key = name_or_path.split("/")[-1].lower()
    if key in KNOWN_EMBEDDERS:
        hub_id, find_local = KNOWN_EMBEDDERS[key]
        local = find_local() if find_local else None
        if local is not None:
            return str(local), f"{local.name}-{_fingerprint(local)}"
        return hub_id, hub_id.replace("/", "__")
    return name_or_path, name_or_path.replace("/", "__")


TOKENS_PER_BATCH = 512


def rows_per_batch(n_tokens: int) -> int:
    """How many texts of ``n_tokens`` tokens share a forward pass: a function of the length alone."""
    return max(1, TOKENS_PER_BATCH // max(n_tokens, 1))


def encode_unpadded(model, texts: list[str], batch_size: int | None = None) -> np.ndarray:
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
        rows = rows_per_batch(length) if batch_size is None else min(batch_size, rows_per_batch(length))
        for s in range(0, len(idx), rows):
            part = idx[s : s + rows]
            batch = [texts[i] for i in part] + [texts[part[0]]] * (rows - len(part))
            out[part] = model.encode(batch, batch_size=rows, show_progress_bar=False,
                                     convert_to_numpy=True)[: len(part)]
    return out


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
    ):
        self.name = name_or_path
        self.target, self.identity = resolve(name_or_path)
        self.device = device
        self.show_progress = show_progress
        self.chunk_size = chunk_size
        self.cache_path = default_cache_dir(cache_dir) / "embeddings" / f"{self.identity}.sqlite"
        self.texts_encoded = 0
        self._model = None

    @property
    def model(self):
        """The SentenceTransformer, loaded on first use only."""
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            try:
                self._model = SentenceTransformer(self.target, device=self.device or default_device())
            except (OSError, ValueError) as exc:
                raise UserError(
                    f"embedding model {self.name!r} (--embedding_model) could not be loaded: it is not a "
                    f"local folder and the Hugging Face hub did not provide it ({type(exc).__name__})"
                ) from None
        return self._model

    def _connect(self) -> sqlite3.Connection:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.cache_path, timeout=60)
        con.execute("CREATE TABLE IF NOT EXISTS emb (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        return con

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), d) float32 embeddings, from the cache where possible."""
        texts = list(texts)
        keys = [hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts]
        unique = dict(zip(keys, texts))
        found: dict[str, np.ndarray] = {}
        if self.cache_path.is_file():
            with closing(sqlite3.connect(self.cache_path, timeout=60)) as con:
                wanted = list(unique)
                for i in range(0, len(wanted), _SQL_CHUNK):
                    chunk = wanted[i : i + _SQL_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    try:
                        rows = con.execute(f"SELECT key, vec FROM emb WHERE key IN ({marks})", chunk).fetchall()
                    except sqlite3.OperationalError:  # an empty file left by an older version
                        rows = []
                    for key, blob in rows:
                        found[key] = np.frombuffer(blob, dtype=np.float32)
        missing = [k for k in unique if k not in found]
        if missing:
            from tqdm.auto import tqdm

            model = self.model  # load (or fail with a one-line error) before the cache file is made
            with self._connect() as con:
                bar = tqdm(total=len(missing), desc=f"embedding ({self.name})", unit="text",
                           disable=not self.show_progress)
                for start in range(0, len(missing), self.chunk_size):
                    chunk = missing[start : start + self.chunk_size]
                    vecs = encode_unpadded(model, [unique[k] for k in chunk])
                    con.executemany("INSERT OR REPLACE INTO emb (key, vec) VALUES (?, ?)",
                                    [(k, v.tobytes()) for k, v in zip(chunk, vecs)])
                    con.commit()  # finished chunks survive an interruption
                    self.texts_encoded += len(chunk)
                    found.update(zip(chunk, vecs))
                    bar.update(len(chunk))
                bar.close()
        if not texts:
            return np.zeros((0, self.dimension()), dtype=np.float32)
        return np.stack([found[k] for k in keys])

    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    def describe(self) -> str:
        return json.dumps({"name": self.name, "loaded_from": self.target, "cache": str(self.cache_path)})
