"""AlpacaEval: align leaderboard outputs by instruction, draw model ensembles, route with Smoothie.

The leaderboard's files do not all list the 805 instructions in the same order, so rows are
matched by instruction text, never by position: stacking by position (as the paper's code did)
pairs some models' outputs with the wrong instructions. Every output is embedded once for all
trials; the embedding cache makes reruns free.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.cli import UserError
from src.embeddings import Embedder
from src.io import read_json
from src.smoothie import smoothie_weights, stable_argmax


@dataclass
class AlpacaOutputs:
    models: list[str]  # sorted model names (file stems)
    instructions: list[str]  # the reference order (the first file's)
    datasets: list[str]
    outputs: np.ndarray  # (N instructions, M models) object array of strings

    def column(self, model: str) -> np.ndarray:
        return self.outputs[:, self.models.index(model)]


def _read_outputs(path: Path) -> list[dict]:
    rows = read_json(path, what="downloaded outputs file")
    if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("instruction"), str)
                                            and isinstance(r.get("output"), str) for r in rows):
        raise UserError(f"{path}: expected a list of {{instruction, output, ...}} objects (AlpacaEval format)")
    return rows


PAIRINGS = ("instruction", "position")


def load_outputs(folder: Path, limit: int | None = None, pairing: str = "instruction",
                 names: str = "file") -> AlpacaOutputs:
    """Every ``*.json`` in ``folder``, aligned to the first file's instruction order.

    ``pairing="instruction"`` (right) matches rows by instruction text; ``"position"`` stacks
    the files row by row, as the paper's script did, pairing any file listed in another order
    with the wrong instructions (kept to reproduce the published numbers). ``names`` is
    ``"file"`` (file stems) or ``"generator"`` (each file's ``generator`` field)."""
    if pairing not in PAIRINGS:
        raise UserError(f"--pairing must be one of {', '.join(PAIRINGS)}, not {pairing!r}")
    files = sorted(folder.glob("*.json"))
    if len(files) < 3:
        raise UserError(f"{folder}: found {len(files)} model output files; Smoothie needs at least 3")
    reference = None
    columns, datasets, model_names = [], None, []
    for path in files:
        rows = _read_outputs(path)
        generators = {str(r.get("generator", path.stem)) for r in rows}
        if names == "generator" and len(generators) != 1:
            raise UserError(f"{path}: rows name {len(generators)} different generators; expected one")
        model_names.append(generators.pop() if names == "generator" else path.stem)
        by_instruction: dict[str, str] = {}
        for r in rows:
            if r["instruction"] in by_instruction:
                raise UserError(f"{path}: instruction listed twice: {r['instruction'][:60]!r}")
            by_instruction[r["instruction"]] = r["output"]
        if reference is None:
            reference = [r["instruction"] for r in rows]
            datasets = [str(r.get("dataset", "")) for r in rows]
        missing = [i for i in reference if i not in by_instruction]
        extra = len(by_instruction) - (len(reference) - len(missing))
        if missing or extra:
            raise UserError(
                f"{path}: instructions differ from {files[0].name}'s ({len(missing)} missing, {extra} extra; "
                f"first missing: {missing[0][:60]!r})" if missing else
                f"{path}: has {extra} instruction(s) that {files[0].name} lacks"
            )
        if pairing == "instruction":
            columns.append([by_instruction[i] for i in reference])
        else:
            columns.append([r["output"] for r in rows])
    if len(set(model_names)) != len(model_names):
        raise UserError(f"{folder}: two files name the same model")
    n = len(reference) if limit is None else min(limit, len(reference))
    outputs = np.array(columns, dtype=object).T[:n]
    return AlpacaOutputs(model_names, reference[:n], datasets[:n], outputs)


def misaligned_rows(folder: Path) -> dict[str, int]:
    """For each file, how many rows hold another instruction than the first file's row at the
    same position: what pairing by position gets wrong."""
    files = sorted(folder.glob("*.json"))
    reference = [r["instruction"] for r in _read_outputs(files[0])]
    return {p.name: sum(a != b for a, b in zip(reference, (r["instruction"] for r in _read_outputs(p))))
            for p in files}


def draw_trials(models: list[str], n_trials: int, k: int, seed: int) -> list[list[str]]:
    """``n_trials`` ensembles of ``k`` distinct models, seeded; each listed in sorted order."""
    if not 3 <= k <= len(models):
        raise UserError(f"--k {k}: need 3 <= k <= the {len(models)} available models")
    rng = np.random.default_rng(seed)
    return [sorted(models[j] for j in rng.choice(len(models), size=k, replace=False)) for _ in range(n_trials)]


def read_ensembles(path: Path, models: list[str]) -> list[list[str]]:
    """Fixed trials: a JSON list of lists of model names."""
    data = read_json(path, what="--ensembles file")
    if not isinstance(data, list) or not all(isinstance(e, list) and len(e) >= 3 for e in data):
        raise UserError(f"{path}: expected a JSON list of ensembles, each a list of at least 3 model names")
    unknown = sorted({m for e in data for m in e} - set(models))
    if unknown:
        raise UserError(f"{path}: unknown model(s) {', '.join(unknown)} (have: {', '.join(models)})")
    return [list(e) for e in data]


def predictions(
    data: AlpacaOutputs,
    trials: list[list[str]],
    embedder: Embedder,
    n_neighbors: int = 1,
    seed: int = 42,
) -> dict[tuple[str, int], list[dict]]:
    """{(method, trial): rows} for pick_random, smoothie (Local) and smoothie_independent (Global)."""
    n = len(data.instructions)
    flat = embedder.embed(list(data.outputs.ravel()))  # uncleaned, every output once
    emb = flat.reshape(n, len(data.models), -1)
    inputs = embedder.embed(data.instructions) if n_neighbors > 1 else None
    rng = np.random.default_rng(seed)
    out = {}
    for t, members in enumerate(trials):
        cols = [data.models.index(m) for m in members]
        texts = data.outputs[:, cols]
        random_pick = rng.integers(0, len(cols), size=n)
        weights = {
            "smoothie": smoothie_weights(emb[:, cols], inputs, k=n_neighbors),
            "smoothie_independent": smoothie_weights(emb[:, cols]),
        }
        out[("pick_random", t)] = _rows(data, texts, members, random_pick, None, f"pick_random_{t}")
        for method, w in weights.items():
            out[(method, t)] = _rows(data, texts, members, stable_argmax(w), w, f"{method}_{t}")
    return out


def _rows(data, texts, members, picks, weights, generator) -> list[dict]:
    rows = []
    for i, p in enumerate(picks):
        row = {"dataset": data.datasets[i], "instruction": data.instructions[i], "output": str(texts[i, p]),
               "generator": generator, "models_in_trial": members, "selected_model": members[p]}
        if weights is not None:
            row["smoothie_weights"] = weights[i].tolist()
        rows.append(row)
    return rows
