"""vLLM backend for GPU servers (optional: ``pip install vllm`` in its own environment, since
vLLM pins its own torch and transformers). Imported only when ``--backend vllm`` is asked for."""

from __future__ import annotations

from src.cli import UserError
from src.generation.models import ModelRef


class VLLMBackend:
    name = "vllm"

    def __init__(self, ref: ModelRef, device: str | None = None, dtype: str = "auto", chat_template: bool = False):
        try:
            from vllm import LLM
        except ImportError:
            raise UserError(
                "--backend vllm: vLLM is not installed; on a GPU machine run `pip install vllm` "
                "(see docs/reproducing.md, 'vLLM backend'), or use --backend hf"
            ) from None
        model = ref.load_from if not ref.gguf_file else f"{ref.load_from}/{ref.gguf_file}"
        self.llm = LLM(model=model, dtype="bfloat16" if dtype == "auto" else dtype, seed=42,
                       max_model_len=min(ref.max_context, 8192))
        self.tokenizer = self.llm.get_tokenizer()
        self.max_context = min(ref.max_context, 8192)
        self.chat_template = chat_template and getattr(self.tokenizer, "chat_template", None) is not None

    def generate(self, prompts: list[str], max_new_tokens: int, n: int = 1, temperature: float = 0.0,
                 seed: int = 42) -> list[list[str]]:
        from vllm import SamplingParams

        budget = max(1, self.max_context - max_new_tokens)
        token_prompts = []
        for p in prompts:
            if self.chat_template:
                p = self.tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                       add_generation_prompt=True)
            ids = self.tokenizer(p)["input_ids"]
            token_prompts.append({"prompt_token_ids": ids[-budget:]})  # left truncation
        params = SamplingParams(n=n, temperature=temperature, max_tokens=max_new_tokens, seed=seed,
                                skip_special_tokens=True)
        outs = self.llm.generate(token_prompts, params, use_tqdm=False)
        return [[c.text for c in o.outputs] for o in outs]
