"""PairRM ranking (llm-blender), optional: needs the ``llm-blender`` package and the
``llm-blender/PairRM`` weights, which come from the Hugging Face hub."""

from __future__ import annotations

import numpy as np

from src.cli import UserError


def pair_rm_select(instructions: list[str], texts: np.ndarray, batch_size: int = 8) -> np.ndarray:
    try:
        import llm_blender
    except ImportError:
        raise UserError(
            "PairRM needs the llm-blender package: `pip install git+https://github.com/yuchenlin/LLM-Blender.git` "
            "and hub access for the llm-blender/PairRM weights"
        ) from None
    blender = llm_blender.Blender()
    try:
        blender.loadranker("llm-blender/PairRM")
    except Exception as exc:
        raise UserError(f"could not load the PairRM weights from the hub ({type(exc).__name__})") from None
    ranks = blender.rank(instructions, [[str(t) for t in row] for row in texts], return_scores=False,
                         batch_size=batch_size)
    return np.asarray(ranks).argmin(axis=1)  # rank 1 is best
