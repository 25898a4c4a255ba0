"""The large-N path: embeddings in on-disk arrays, chunked estimation, approximate neighbours."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import minilm, run_cli

from src import route
from src.embeddings import Embedder
from src.neighbours import NeighbourIndex, recall_at_k, resolve_method
from src.smoothie import Smoothie, smoothie_weights


def _low_rank(n: int, d: int, seed: int) -> np.ndarray:
    """Unit vectors near a 24-dimensional subspace: neighbours mean something, as in sentence embeddings."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 24)) @ rng.standard_normal((24, d)) + 0.5 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _generations(inputs: np.ndarray, m: int, seed: int) -> np.ndarray:
    """(N, m, d) outputs: the input's direction plus noise whose size differs by generator and by region."""
    rng = np.random.default_rng(seed)
    n, d = inputs.shape
    scale = np.where(inputs[:, :1] > 0, np.linspace(0.2, 1.0, m), np.linspace(1.0, 0.2, m))  # (N, m)
    return (inputs[:, None, :] + scale[:, :, None] * rng.standard_normal((n, m, d)) / np.sqrt(d)).astype(np.float32)


def test_approximate_neighbours_find_the_exact_ones_and_keep_local_picks(monkeypatch):
    inputs = _low_rank(3000, 64, seed=0)
    emb = _generations(inputs, m=4, seed=1)
    exact = NeighbourIndex(20, "exact").fit(inputs).kneighbors(inputs)
    approx = NeighbourIndex(20, "approx").fit(inputs).kneighbors(inputs)
    assert recall_at_k(approx, exact) >= 0.95
    assert recall_at_k(np.roll(exact, 1, axis=0), exact) < 0.1  # the measure can fail
    picks = {m: smoothie_weights(emb, inputs, k=20, neighbours=m).argmax(1) for m in ("exact", "approx")}
    assert (picks["exact"] == picks["approx"]).mean() >= 0.99
    # the picks follow the planted regions: generator 0 is best where the first coordinate is positive
    assert (picks["exact"][inputs[:, 0] > 0.3] == 0).mean() > 0.9
    # "auto" is exact at this size, and switches above the threshold
    assert resolve_method("auto", 3000) == "exact" and resolve_method("auto", 10**6) == "approx"
    monkeypatch.setattr("src.neighbours.EXACT_MAX_ROWS", 1000)
    model = Smoothie(k=20).fit(emb, inputs)
    assert model.neighbours_index_.method_ == "approx"
    np.testing.assert_array_equal(model.predict(), smoothie_weights(emb, inputs, k=20, neighbours="approx").argmax(1))
    with pytest.raises(ValueError, match="neighbours must be one of"):
        Smoothie(k=2, neighbours="fast").fit(emb, inputs)


def test_memmapped_float16_inputs_give_the_in_memory_result(tmp_path):
    inputs = _low_rank(500, 32, seed=2)
    emb = _generations(inputs, m=5, seed=3).astype(np.float16)
    np.save(tmp_path / "emb.npy", emb)
    np.save(tmp_path / "inputs.npy", inputs.astype(np.float16))
    on_disk = np.load(tmp_path / "emb.npy", mmap_mode="r")
    inputs_on_disk = np.load(tmp_path / "inputs.npy", mmap_mode="r")
    for k in (None, 1, 7):
        np.testing.assert_array_equal(
            smoothie_weights(on_disk, inputs_on_disk if k else None, k=k),
            smoothie_weights(emb.astype(np.float64), inputs.astype(np.float16).astype(np.float64) if k else None, k=k))


def test_embedding_arrays_match_the_cache_and_are_reused(tmp_path):
    texts = ["Paris.", "The answer is 42.", "Paris.", "A longer sentence about the sea and the sky."]
    embedder = Embedder(minilm(), cache_dir=tmp_path, show_progress=False)
    array = embedder.embed_array(texts)
    assert isinstance(array, np.memmap) and not array.flags.writeable
    np.testing.assert_array_equal(array, embedder.embed(texts))
    assert embedder.texts_encoded == 3
    files = sorted(embedder.array_dir.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npy"  # no partial file left behind
    again = Embedder(minilm(), cache_dir=tmp_path, show_progress=False)
    np.testing.assert_array_equal(again.embed_array(texts), array)
    assert again._model is None  # opened from disk: no model, no SQLite read needed
    half = again.embed_array(texts, "float16")
    assert half.dtype == np.float16 and np.abs(half - array).max() < 1e-3
    assert len(list(embedder.array_dir.iterdir())) == 2
    # a partly cached list embeds only what is new, and its array agrees with the first
    longer = again.embed_array(texts + ["Something new."])
    assert again.texts_encoded == 1
    np.testing.assert_array_equal(longer[:4], array)


def test_route_command_takes_the_scale_flags(tmp_path, capsys):
    gens = [["Paris", "4", "blue", "Rome"], ["Paris", "5", "blue", "Milan"], ["Lyon", "4", "red", "Rome"]]
    files = []
    for j, g in enumerate(gens):
        files.append(tmp_path / f"g{j}.json")
        files[-1].write_text(json.dumps({"generations": g}))
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"embedding_input": q}) + "\n" for q in ["capital", "2+2", "sky", "Italy"]))
    outs = {}
    for extra in ([], ["--neighbours", "approx", "--embedding_dtype", "float16"]):
        out = tmp_path / f"out{len(extra)}.json"
        code, _, err = run_cli(route.main, ["--generations", *files, "--inputs", inputs, "--k", 2, "--output", out,
                                            "--embedding_model", minilm(), *extra], capsys)
        assert code == 0, err
        outs[len(extra)] = json.loads(out.read_text())["selected"]
    assert outs[0] == outs[4]
    code, _, err = run_cli(route.main, ["--generations", *files, "--output", tmp_path / "x.json", "--neighbours",
                                        "fast"], capsys)
    assert code == 2 and "--neighbours" in err


def test_the_data_choose_the_approximate_index():
    """Inputs with neighbourhood structure get HNSW; i.i.d. directions in 384 dimensions, where every
    point is about as far from every other, get the cheap IVF index and a warning that says why."""
    from src.neighbours import UnstructuredInputs, relative_contrast

    structured = _low_rank(3000, 64, seed=0)
    index = NeighbourIndex(20, "approx").fit(structured)
    assert index.index_kind_ == "hnsw" and index.contrast_ > 1.3
    iid = np.random.default_rng(0).standard_normal((3000, 384)).astype(np.float32)
    assert relative_contrast(iid, 20) < 1.15  # distance concentration: the k-th nearest is nearly the mean
    with pytest.warns(UnstructuredInputs, match="no neighbourhood structure"):
        index = NeighbourIndex(20, "approx").fit(iid)
    assert index.index_kind_ == "ivf"
    found = index.kneighbors(iid[:200])
    assert found.shape == (200, 20) and (found >= 0).all()
    assert all(len(set(row)) == 20 for row in found) and (found[:, 0] == np.arange(200)).mean() > 0.9
