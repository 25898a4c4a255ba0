"""The gateway embedding on a real embedding server (Infinity, ``infinity-emb``, serving the
installed MiniLM folder over ``/v1/embeddings``), and batched embedding in process against one
text per pass."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys

import httpx
import numpy as np
import pytest
from conftest import ROOT, minilm
from gateway_servers import Gateway, Process, free_port

NAMES = ["a", "b", "c"]
INFINITY = ROOT / ".venv-infinity" / "bin" / "infinity_emb"
SERVED = "all-MiniLM-L6-v2"


def _infinity(folder, port: int, log) -> Process:
    argv = [str(INFINITY), "v2", "--model-id", str(folder), "--served-model-name", SERVED, "--port", str(port),
            "--host", "127.0.0.1", "--engine", "torch", "--device", "cpu", "--url-prefix", "/v1",
            "--no-bettertransformer", "--no-compile", "--log-level", "warning"]
    return Process(argv, log, f"http://127.0.0.1:{port}/v1/models",
                   env={"INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}).start()



def _backends(scripted) -> list[str]:
    return [f"{b}=http://127.0.0.1:{scripted.port}/{b}/v1" for b in NAMES]


def _perturbed(folder, to):
    """MiniLM with every weight moved 10%: another model under the same served name."""
    shutil.copytree(folder, to)
    weights = to / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    start = 8 + int.from_bytes(raw[:8], "little")
    tensor = np.frombuffer(raw, dtype=np.float32, count=(len(raw) - start) // 4, offset=start).copy() * 0.9
    raw[start:start + tensor.nbytes] = tensor.tobytes()
    weights.write_bytes(bytes(raw))
    return to


def test_the_gateway_embeds_on_infinity_and_notices_another_model_behind_the_url(scripted, tmp_path):
    if not INFINITY.exists():
        pytest.skip(f"Infinity is not installed ({INFINITY.relative_to(ROOT)}: make install builds it from "
                    "requirements-infinity.txt)")
    from src.embeddings import Embedder
    from src.model_files import minilm_dir

    port = free_port()
    server = _infinity(minilm_dir(), port, tmp_path / "infinity.log")
    store = tmp_path / "gw.sqlite"
    url = f"http://127.0.0.1:{port}/v1"
    gw = Gateway(tmp_path, "remote", _backends(scripted), "--policy", "fanout", "--store", str(store),
                 "--embedding_url", url, "--embedding_model", SERVED, "--embedding_timeout", "5").start()
    try:
        texts = [f"what is {i} times {i + 1}?" for i in range(3)]
        for t in texts:
            r = httpx.post(gw.url + "/v1/chat/completions", timeout=60, json={"messages": [{"role": "user",
                                                                                            "content": t}]})
            assert r.status_code == 200 and r.json()["smoothie"]["chosen"] in NAMES, r.text
        with sqlite3.connect(store) as con:
            rows = con.execute("SELECT embedder, input_text, input_vec FROM fanouts ORDER BY seq").fetchall()
        assert len(rows) == 3 and all(e.startswith(f"remote-{SERVED}-") for e, _, _ in rows)
        # the server's vectors are MiniLM's: the same as the in-process model's, to float precision
        local = Embedder(str(minilm_dir()), show_progress=False, cache_dir=tmp_path / "cache").embed(texts)
        remote = np.stack([np.frombuffer(v, np.float32) for _, _, v in rows])
        cos = (local * remote).sum(1) / np.linalg.norm(local, axis=1) / np.linalg.norm(remote, axis=1)
        assert cos.min() > 0.9999, cos

        # the server goes away: a request that needs embedding is a 503 with a JSON body and Retry-After
        server.stop()
        r = httpx.post(gw.url + "/v1/chat/completions", timeout=60,
                       json={"messages": [{"role": "user", "content": "and now?"}]})
        assert r.status_code == 503 and r.headers.get("retry-after"), r.text
        assert r.json()["error"]["code"] == "embedding_unavailable"
        failures = [line for line in httpx.get(gw.url + "/metrics").text.splitlines()
                    if line.startswith("smoothie_embedding_failures_total ")]
        assert failures and float(failures[0].split()[1]) >= 1
        first_identity = rows[0][0]
    finally:
        gw.stop()
        server.stop()

    # another model behind the same URL and name: a new identity, the old rows are not mixed in
    server = _infinity(_perturbed(minilm_dir(), tmp_path / "other"), port, tmp_path / "infinity2.log")
    try:
        gw = Gateway(tmp_path, "remote2", _backends(scripted), "--policy", "fanout", "--store", str(store),
                     "--embedding_url", url, "--embedding_model", SERVED).start()
        try:
            assert httpx.get(gw.url + "/health").json()["store_rows"] == 0
            r = httpx.post(gw.url + "/v1/chat/completions", timeout=60,
                           json={"messages": [{"role": "user", "content": "a new question"}]})
            assert r.status_code == 200, r.text
        finally:
            gw.stop()
        with sqlite3.connect(store) as con:
            identities = {e for (e,) in con.execute("SELECT DISTINCT embedder FROM fanouts")}
        assert len(identities) == 2 and first_identity in identities
    finally:
        server.stop()


def test_a_missing_embedding_server_is_one_line_at_start(tmp_path):
    backends = [a for b in NAMES for a in ("--backend", f"{b}=http://127.0.0.1:9/v1")]
    r = subprocess.run([sys.executable, "-m", "src.serve", *backends, "--embedding_url",
                        f"http://127.0.0.1:{free_port()}/v1", "--embedding_model", SERVED, "--embedding_timeout", "2",
                        "--store", str(tmp_path / "s.sqlite"), "--port", str(free_port())],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "--embedding_url" in lines[0], r.stderr


def test_concurrent_requests_share_forward_passes_and_get_their_own_vectors(tmp_path):
    """The embedding worker batches texts of requests queued together (fewer passes than
    requests), hands each request its own vectors, and those match one text per pass to the
    last bits padding moves (before batching, each request had a pass per text)."""
    import threading

    from src.embeddings import Embedder
    from src.gateway.embedding import EmbeddingWorker

    minilm()
    batched = Embedder(minilm(), show_progress=False, cache_dir=tmp_path / "b", padded_batch=32)
    alone = Embedder(minilm(), show_progress=False, cache_dir=tmp_path / "a", one_per_pass=True)
    assert batched.identity != alone.identity  # padded vectors never served as one-per-pass ones
    requests = [[f"request {i}: " + "word " * (i % 7 * 5), f"answer {i}"] for i in range(24)]
    worker = EmbeddingWorker(batched, batch_size=32, wait_ms=20)
    gate = threading.Event()
    worker.submit(["hold the worker while the others queue"]).add_done_callback(lambda _: gate.wait(5))
    futures = [worker.submit(texts) for texts in requests]
    gate.set()
    results = [f.result(60) for f in futures]
    worker.shutdown()
    assert worker.batches < len(requests) // 2, worker.batches
    for texts, got in zip(requests, results):
        want = alone.embed(texts)
        assert got.shape == want.shape and np.abs(got - want).max() < 1e-5
