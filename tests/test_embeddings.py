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
