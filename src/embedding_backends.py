"""Running a sentence-transformers model through ONNX Runtime or OpenVINO on CPU.

sentence-transformers offers ``backend="onnx"``/``"openvino"`` through Hugging Face Optimum, but
every Optimum release that supports them pins transformers < 4.58, and this project pins 5.x.
So the transformer is exported here with ``torch.onnx.export`` (once, cached beside the
embeddings) and the two runtimes run that graph; mean pooling and normalisation, the rest of
these models, are a few lines of numpy. The object below quacks like the SentenceTransformer
that ``encode_unpadded`` drives (tokenizer, max_seq_length, encode), so batches, and therefore
vectors, are formed exactly as on the torch path. Which backend is faster here, and whether it
routes the same, is measured by ``benchmarks/bench_embedding_backends.py`` (docs/scale.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from src.cli import UserError

BACKENDS = ("torch", "onnx", "openvino")
DEFAULT_BACKEND = "torch"  # measured: ONNX Runtime 1.48x (MiniLM), 1.18x (mpnet), under the 1.5x bar (docs/scale.md)


def export_onnx(st_model, path: Path) -> Path:
    """The transformer of ``st_model`` as an ONNX graph (input_ids, attention_mask -> token states)."""
    import torch

    if path.is_file():
        return path

    class TokenStates(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    example = st_model.tokenizer(["an example", "two examples here"], padding=True, return_tensors="pt")
    axes = {0: "rows", 1: "tokens"}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.partial.onnx")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about constants that are constant for encoders
        torch.onnx.export(TokenStates(st_model[0].auto_model.cpu()).eval(),
                          (example["input_ids"], example["attention_mask"]), str(tmp),
                          input_names=["input_ids", "attention_mask"], output_names=["token_states"],
                          dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_states": axes},
                          opset_version=17, dynamo=False)
    os.replace(tmp, path)
    return path


def _check_head(st_model) -> bool:
    """These runtimes reproduce mean pooling (+ optional normalisation) only; return whether it normalises."""
    names = [type(m).__name__ for m in st_model]
    pooling = st_model[1] if len(names) > 1 else None
    mean = pooling is not None and getattr(pooling, "pooling_mode", None) in (None, "mean") and \
        getattr(pooling, "pooling_mode_mean_tokens", True)
    if names[:2] != ["Transformer", "Pooling"] or not mean or any(n not in ("Normalize",) for n in names[2:]):
        raise UserError(f"--embedding_backend: the onnx and openvino backends support Transformer + mean Pooling [+ Normalize] "
                         f"models; this one is {' + '.join(names)}")
    return "Normalize" in names


class ExportedSentenceModel:
    """A SentenceTransformer's transformer run by ONNX Runtime or OpenVINO, pooled as the model pools."""

    def __init__(self, st_model, onnx_path: Path, backend: str, precision: str = "fp32"):
        self.tokenizer = st_model.tokenizer
        self.max_seq_length = st_model.max_seq_length
        self.normalize = _check_head(st_model)
        self._dim = st_model.get_embedding_dimension()
        self.backend = backend
        if backend == "onnx":
            import onnxruntime as ort

            session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
            self._run = lambda ids, mask: session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        elif backend == "openvino":
            import openvino as ov

            # f32 unless asked: OpenVINO would otherwise run bf16 where the CPU has it (AMX), moving vectors
            hint = "bf16" if precision == "bf16" else "f32"
            compiled = ov.Core().compile_model(str(onnx_path), "CPU", {"INFERENCE_PRECISION_HINT": hint})
            self._run = lambda ids, mask: compiled({"input_ids": ids, "attention_mask": mask})[0]
        else:
            raise ValueError(f"backend must be onnx or openvino, not {backend!r}")

    def get_embedding_dimension(self) -> int:
        return self._dim

    def encode(self, texts: list[str], batch_size: int = 32, show_progress_bar: bool = False,
               convert_to_numpy: bool = True) -> np.ndarray:
        out = []
        for s in range(0, len(texts), batch_size):
            enc = self.tokenizer(texts[s : s + batch_size], padding=True, truncation=True,
                                 max_length=self.max_seq_length, return_tensors="np")
            ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
            states = np.asarray(self._run(ids, mask), dtype=np.float32)
            weights = mask[:, :, None].astype(np.float32)
            pooled = (states * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            if self.normalize:
                pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            out.append(pooled.astype(np.float32))
        return np.concatenate(out) if out else np.zeros((0, self._dim), dtype=np.float32)
