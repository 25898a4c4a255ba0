"""Hugging Face transformers backend: batched, left-padded generation on CPU or GPU.

Prompts are truncated from the left so that prompt plus new tokens fit the context; decoding
is greedy unless a temperature is given; several sampled sequences per prompt come from one
``generate`` call (``num_return_sequences``). bf16 on GPU, fp32 on CPU unless told otherwise.
"""

from __future__ import annotations

from pathlib import Path

from src.cli import UserError
from src.generation.models import ModelRef

DTYPES = ("auto", "float32", "bfloat16", "float16")


class HFBackend:
    name = "hf"

    def __init__(self, ref: ModelRef, device: str | None = None, dtype: str = "auto", chat_template: bool = False):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if dtype == "auto":
            dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        if not Path(str(ref.load_from)).exists():
            from src.hub import ensure_reachable_or_offline

            ensure_reachable_or_offline()
        try:
            load_from, kwargs = ref.load_from, {"gguf_file": ref.gguf_file} if ref.gguf_file else {}
            if ref.gguf_file:  # de-quantized once into the cache: the same weights, without ~25 s per load
                from src.model_files import dequantized_gguf

                try:
                    load_from, kwargs = str(dequantized_gguf(Path(ref.load_from) / ref.gguf_file)), {}
                except OSError:  # a cache that cannot be written: convert in memory, as every load once did
                    pass
            self.tokenizer = AutoTokenizer.from_pretrained(load_from, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(load_from, dtype=getattr(torch, dtype), **kwargs)
        except (OSError, ValueError) as exc:
            raise UserError(
                f"--model {ref.name}: could not be loaded from {ref.load_from} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]})"
            ) from None
        self.model.to(self.device).eval()
        self.tokenizer.padding_side = "left"
        self.tokenizer.truncation_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_context = min(ref.max_context, getattr(self.model.config, "max_position_embeddings", None)
                               or ref.max_context)
        self.chat_template = chat_template and self.tokenizer.chat_template is not None

    def _format(self, prompt: str) -> str:
        if not self.chat_template:
            return prompt
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )

    def generate(self, prompts: list[str], max_new_tokens: int, n: int = 1, temperature: float = 0.0,
                 seed: int = 42) -> list[list[str]]:
        """For each prompt, ``n`` decoded continuations (new tokens only, no special tokens)."""
        torch = self.torch
        budget = max(1, self.max_context - max_new_tokens)
        enc = self.tokenizer([self._format(p) for p in prompts], return_tensors="pt", padding=True,
                             truncation=True, max_length=budget).to(self.device)
        sampling = temperature > 0
        kwargs = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0} if sampling else {
            "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                num_return_sequences=n,
                pad_token_id=self.tokenizer.pad_token_id,
                **kwargs,
            )
        texts = self.tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]
