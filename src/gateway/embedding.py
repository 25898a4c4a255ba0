"""How the gateway embeds: texts of concurrent requests in shared forward passes, in this process
or on an OpenAI-compatible embedding server.

Why batches: in front of fast backends the gateway's own cost is embedding, one text per forward
pass on one thread (8.6 fan-out requests/s on 2 CPU cores). A forward pass over 32 texts costs far
less than 32 passes of one, so the worker takes every text queued when it becomes free (plus any
that arrive within ``wait_ms``), up to ``batch_size`` texts, and embeds them together, sorted by
length and cut into passes of like lengths (``src.embeddings.encode_bucketed``) so that each pass
pads little. Padding changes a vector in its last bits (about 1e-7), so
batched vectors have a cache of their own; ``batch_size=1`` keeps one text per pass.

Why a server: with several replicas, or a GPU box for embedding (vLLM, Hugging Face TEI,
Infinity), the gateway sends ``POST /v1/embeddings`` instead of loading a model. The server is
identified by its model id, the dimension and the vector it returns for a fixed probe text. The
probe rides along in every call (one text more per batch), and its vector must come back the
same (cosine at least ``SAME_MODEL_COSINE``) in the same dimension: so a different model swapped
in behind the URL is noticed on the very call that would have mixed its vectors with the old
one's (``EmbeddingChanged``), never later. A text the server refuses (HTTP 4xx) fails only its
own request: the batch is retried text by text (``EmbeddingRefused``).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import queue
import threading
import time
from concurrent.futures import Future

import numpy as np

from src.cli import UserError

PROBE = "Smoothie embeds this text to recognise the model behind an embedding server."
SAME_MODEL_COSINE = 0.999  # the probe's vector in another batch differs in the last bits, another model's entirely


class EmbeddingUnavailable(Exception):
    """The embedding server failed (after its retries): the request is degraded or refused, like a backend's fault."""


class EmbeddingRefused(Exception):
    """The embedding server refused these texts (HTTP 4xx): the fault of the request they came from."""


class EmbeddingChanged(Exception):
    """Another model now answers behind the embedding URL: ``old`` and ``new`` identities."""

    def __init__(self, old: str, new: str):
        super().__init__(f"the embedding server's model changed ({old} -> {new})")
        self.old, self.new = old, new


class RemoteEmbedder:
    """An OpenAI-compatible ``/v1/embeddings`` endpoint as an embedder (``embed``, ``identity``).

    Calls are synchronous (the gateway's embedding thread makes them), each with a timeout and
    ``retries`` retries on a connection error, a timeout or a 5xx, with a short backoff."""

    def __init__(self, url: str, model: str, *, timeout: float = 30.0, retries: int = 2,
                 api_key_env: str | None = None):
        import httpx

        self.url = url.rstrip("/")
        self.name = self.model_id = model
        self.timeout, self.retries = timeout, retries
        key = os.environ.get(api_key_env) if api_key_env else None
        self._client = httpx.Client(timeout=timeout, headers={"Authorization": f"Bearer {key}"} if key else {})
        self.identity: str | None = None
        self._dim: int | None = None
        self._probe: np.ndarray | None = None
        self.texts_encoded = 0
        self.redact = lambda text: text  # the gateway sets its Redactor: an error body may echo a key

    def connect(self) -> str:
        """Probe the server: its identity (model id + fingerprint of the probe's vector), or a
        one-line UserError naming the flag when it is not there."""
        try:
            vec = self._post([PROBE])[0]
        except (EmbeddingUnavailable, EmbeddingRefused) as exc:
            raise UserError(f"--embedding_url {self.url}: {self.redact(str(exc))}") from None
        self._adopt(vec)
        return self.identity

    def _adopt(self, vec: np.ndarray) -> None:
        self._dim, self._probe = len(vec), np.asarray(vec, np.float64)
        # rounded so that the last bits (another batch, another kernel) do not change the identity
        digest = hashlib.sha256(np.round(vec.astype(np.float64), 4).tobytes()).hexdigest()[:12]
        self.identity = f"remote-{self.model_id.replace('/', '__')}-d{self._dim}-{digest}"

    def _same_model(self, vec: np.ndarray) -> bool:
        if len(vec) != self._dim:
            return False
        v = np.asarray(vec, np.float64)
        cos = float(v @ self._probe / (np.linalg.norm(v) * np.linalg.norm(self._probe) + 1e-12))
        return cos >= SAME_MODEL_COSINE

    def _post(self, texts: list[str]) -> np.ndarray:
        import httpx

        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(0.2 * 2 ** (attempt - 1), 2.0))
            try:
                r = self._client.post(f"{self.url}/embeddings", json={"model": self.model_id, "input": texts})
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                continue
            if r.status_code >= 500:
                last = f"HTTP {r.status_code}"
                continue
            if r.status_code in (401, 403, 404, 408, 429):  # about the server or its key, not the text
                raise EmbeddingUnavailable(f"the embedding server answered HTTP {r.status_code}: {r.text[:200]}")
            if r.status_code >= 400:
                raise EmbeddingRefused(f"the embedding server refused the text (HTTP {r.status_code}: {r.text[:200]})")
            try:
                data = sorted(r.json()["data"], key=lambda d: d["index"])
                vecs = np.asarray([d["embedding"] for d in data], dtype=np.float32)
                if vecs.ndim != 2:
                    raise ValueError("vectors of different lengths")
            except (ValueError, KeyError, TypeError) as exc:
                raise EmbeddingUnavailable(f"the embedding server's answer is not an embeddings list ({exc})") from None
            if len(vecs) != len(texts):
                raise EmbeddingUnavailable(f"the embedding server returned {len(vecs)} vectors for {len(texts)} texts")
            return vecs
        raise EmbeddingUnavailable(f"the embedding server at {self.url} did not answer ({last}; "
                                   f"{self.retries + 1} tries)")

    def embed(self, texts: list[str]) -> np.ndarray:
        """The texts' vectors, checked to come from the model this embedder was identified with
        (the probe rides along); raises EmbeddingChanged (after adopting the new identity) when
        another model answered, EmbeddingRefused when the server refused a text."""
        if not texts:
            return np.zeros((0, self.dimension()), dtype=np.float32)
        self.dimension()
        vecs = self._post([PROBE, *texts])
        if not self._same_model(vecs[0]):
            old = self.identity
            self._adopt(self._post([PROBE])[0])  # alone, as connect() probed it
            raise EmbeddingChanged(old, self.identity)
        self.texts_encoded += len(texts)
        return vecs[1:]

    def embed_array(self, texts: list[str], chunk: int = 64) -> np.ndarray:
        """Many texts (a replay's), ``chunk`` per call."""
        texts = list(texts)
        parts = [self.embed(texts[i:i + chunk]) for i in range(0, len(texts), chunk)]
        return np.concatenate(parts) if parts else np.zeros((0, self.dimension()), dtype=np.float32)

    def dimension(self) -> int:
        if self._dim is None:
            self.connect()
        return self._dim

    def describe(self) -> str:
        return f"{self.model_id} at {self.url}"


def build_embedder(settings, show_progress: bool = False, persist: bool = True):
    """The embedder ``settings`` ask for: an embedding server (``--embedding_url``), else the
    in-process model, one text per pass (``--embedding_batch_size 1``) or in padded batches.
    The model is loaded (or the server probed) here: a failure is one line at start.
    ``persist=False`` (the server): no embedding cache on disk, so the vectors of users' prompts
    and answers live only in the store, under its retention (``--store_max_rows``)."""
    if settings.embedding_url:
        embedder = RemoteEmbedder(settings.embedding_url, settings.embedding_model, timeout=settings.embedding_timeout,
                                  api_key_env=settings.embedding_key_env)
        embedder.connect()
        return embedder
    from src.embeddings import Embedder

    batch = settings.embedding_batch_size
    return Embedder(settings.embedding_model, show_progress=show_progress, backend=settings.embedding_backend,
                    one_per_pass=batch == 1, padded_batch=batch if batch > 1 else None,
                    precision=settings.precision, persist=persist)


_STOP = object()


class EmbeddingWorker:
    """One thread that embeds: urgent work (a request waiting for its answer) first, then the late
    fan-outs' work, each in the order it came; with ``batch_size`` > 1, texts of several requests
    share forward passes (see the module's docstring)."""

    def __init__(self, embedder, batch_size: int = 1, wait_ms: float = 2.0):
        self.embedder, self.batch_size, self.wait_s = embedder, batch_size, wait_ms / 1000
        self._queue: queue.PriorityQueue = queue.PriorityQueue()
        self._order = itertools.count()
        self.batches = 0  # forward-pass groups run (for the benchmark and tests)
        self._thread = threading.Thread(target=self._run, name="embed", daemon=True)
        self._thread.start()

    def submit(self, texts: list[str], urgent: bool = True) -> Future:
        """The texts' vectors, later. Work that is not urgent (a late fan-out's) goes one text per
        pass and never shares a pass with urgent work, so a response's texts wait at most for one
        short pass, not for a late fan-out's whole batch (that wait was most of local's p99)."""
        if urgent or len(texts) <= 1:
            future: Future = Future()
            self._queue.put((0 if urgent else 1, next(self._order), texts, future))
            return future
        parts = [self.submit([t], urgent=False) for t in texts]
        whole: Future = Future()

        def done(_):
            if whole.done() or not all(part.done() for part in parts):
                return
            failed = next((part.exception() for part in parts if part.exception() is not None), None)
            if failed is not None:
                whole.set_exception(failed)
            else:
                whole.set_result(np.concatenate([part.result() for part in parts]))

        for part in parts:
            part.add_done_callback(done)
        return whole

    def _gather(self, first: tuple) -> list[tuple]:
        """``first`` and whatever else fits in one batch: queued now, or arriving within wait_ms."""
        batch, size = [first], len(first[2])
        deadline = time.monotonic() + self.wait_s
        while size < self.batch_size:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = self._queue.get(timeout=left)
                except queue.Empty:
                    break
            if item[3] is _STOP or item[0] != first[0] or size + len(item[2]) > self.batch_size:
                self._queue.put(item)  # the next batch's (or the end); urgent and late work never share a pass
                break
            batch.append(item)
            size += len(item[2])
        return batch

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first[3] is _STOP:
                return
            batch = self._gather(first) if self.batch_size > 1 and first[0] == 0 else [first]
            live = [item for item in batch if item[3].set_running_or_notify_cancel()]
            if not live:
                continue
            texts = [t for item in live for t in item[2]]
            try:
                vecs = self.embedder.embed(texts)
            except EmbeddingRefused as exc:  # one request's text, most likely: each request on its own
                if len(live) == 1:
                    live[0][3].set_exception(exc)
                    continue
                for item in live:
                    try:
                        item[3].set_result(self.embedder.embed(item[2]))
                    except BaseException as one:  # noqa: BLE001 - handed to that request
                        item[3].set_exception(one)
                self.batches += len(live)
                continue
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting requests
                for item in live:
                    item[3].set_exception(exc)
                continue
            self.batches += 1
            at = 0
            for item in live:
                item[3].set_result(vecs[at:at + len(item[2])])
                at += len(item[2])

    def shutdown(self) -> None:
        self._queue.put((2, next(self._order), [], _STOP))
        self._thread.join()
