"""Dividing the heavy steps: --shard i/n plus merge, and Ray replicas, on SmolLM2 and MiniLM.

Ray runs as a local cluster of this machine's two CPUs; the outputs must be byte-identical to
the single-process run's, and a run killed part-way must resume from its checkpoint.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ROOT, minilm, run_cli, smollm2

from src import get_generations, merge_shards
from src.embeddings import Embedder
from src.generation.runner import FAIL_AFTER_ENV

ray = pytest.importorskip("ray", reason="ray is in requirements.txt; make install")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _args(demo_data, results, *extra):
    return ["--dataset_config", ROOT / "dataset_configs" / "demo.yaml", "--data_dir", demo_data, "--results_dir", results,
            "--model", smollm2(), "--multi_prompt", "--splits", "test", "--max_samples", 3, "--max_new_tokens", 6,
            "--batch_size", 3, *extra]


def _output(results):
    return results / "demo" / "smollm2-135m" / "individual_test.json"


@pytest.fixture(scope="module")
def single(demo_data, tmp_path_factory):
    results = tmp_path_factory.mktemp("single")
    assert get_generations.main([str(a) for a in _args(demo_data, results)]) is None
    return _output(results).read_bytes()


def test_shards_merge_to_the_single_process_file(demo_data, single, tmp_path, capsys):
    results = tmp_path / "r"
    code, out, err = run_cli(get_generations.main, _args(demo_data, results, "--shard", "1/3"), capsys)
    assert code == 0 and "src.merge_shards" in out, err
    assert not _output(results).exists()
    # merging before every shard has finished names what is missing, in one line
    code, out, err = run_cli(merge_shards.main, _args(demo_data, results), capsys)
    assert code == 2 and "batches are in no shard's checkpoint" in err and len(err.strip().splitlines()) == 1
    for i in (0, 2):
        assert run_cli(get_generations.main, _args(demo_data, results, "--shard", f"{i}/3"), capsys)[0] == 0
    code, out, err = run_cli(merge_shards.main, _args(demo_data, results), capsys)
    assert code == 0, err
    assert _output(results).read_bytes() == single
    assert sorted(p.name for p in _output(results).parent.iterdir()) == ["individual_test.json"]  # checkpoints gone
    code, _, err = run_cli(get_generations.main, _args(demo_data, results, "--shard", "3/3"), capsys)
    assert code == 2 and "--shard" in err


def test_ray_generation_matches_and_resumes(local_ray, demo_data, single, tmp_path, capsys, monkeypatch):
    results = tmp_path / "r"
    monkeypatch.setenv(FAIL_AFTER_ENV, "2")
    with pytest.raises(RuntimeError, match="simulated failure"):
        run_cli(get_generations.main, _args(demo_data, results, "--ray_replicas", 1), capsys)
    checkpoint = _output(results).with_name("individual_test.json.partial.jsonl")
    assert len(checkpoint.read_text().splitlines()) == 1 + 2  # header and the two batches finished before the kill
    monkeypatch.delenv(FAIL_AFTER_ENV)
    code, out, err = run_cli(get_generations.main, _args(demo_data, results, "--ray_replicas", 2), capsys)
    assert code == 0, err
    assert _output(results).read_bytes() == single
    assert not checkpoint.exists()


def test_ray_embedding_matches_the_single_process_vectors(local_ray, tmp_path):
    texts = [f"Sentence number {i} about {'rivers' if i % 2 else 'mountains'}." for i in range(40)]
    alone = Embedder(minilm(), cache_dir=tmp_path / "a", show_progress=False).embed(texts)
    pooled = Embedder(minilm(), cache_dir=tmp_path / "b", show_progress=False, chunk_size=8, ray_replicas=2)
    assert np.array_equal(pooled.embed(texts), alone)
    assert pooled._model is None and pooled.texts_encoded == 40  # the driver never loaded the model
    # the pool filled the cache: a plain embedder on it needs no model
    again = Embedder(minilm(), cache_dir=tmp_path / "b", show_progress=False)
    assert np.array_equal(again.embed(texts), alone) and again._model is None
    assert json.loads(again.describe())["cache"].startswith(str(tmp_path / "b"))
