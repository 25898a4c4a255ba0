"""Every routing method's name, output-file prefix and display names, in one place.

Paths, ``evaluate``, ``report`` and the paper's tables all read this list, so a new method is
one entry here (plus its command module) and shows up everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str  # scores.json key and file prefix (``<name>_...test.json``)
    label: str  # the report's long name
    column: str  # the paper tables' column name
    trials: bool = False  # the output holds a list of seeded trials, scored as their mean
    labelled: bool = False  # sees labelled train samples


SMOOTHIE = Method("smoothie", "Smoothie (no labels)", "Smoothie")
METHODS: tuple[Method, ...] = (
    SMOOTHIE,
    Method("pick_random", "Random pick (per sample)", "Random", trials=True),
    Method("labeled_oracle", "Best-on-Val (labelled)", "Best-on-Val", trials=True, labelled=True),
    Method("labeled_knn", "Labelled kNN (labelled)", "Labeled-KNN", trials=True, labelled=True),
    Method("labeled_smoothie", "Labelled Smoothie (a few labels)", "Labeled-Smoothie", trials=True, labelled=True),
    Method("mbr", "MBR (label-free)", "MBR"),
    Method("pair_rm", "PairRM", "PairRM"),
)
BY_NAME = {m.name: m for m in METHODS}
BASELINES = tuple(m for m in METHODS if m is not SMOOTHIE)
METHOD_PREFIXES = tuple(f"{m.name}_" for m in METHODS)
TRIAL_METHODS = tuple(m.name for m in METHODS if m.trials)


def label(settings: dict, default_embedder: str = "all-mpnet-base-v2") -> str:
    """A method output's display name, from the settings its manifest records (never parsed out
    of a file name): ``Smoothie-Local k=1, bge-small-en-v1.5`` and ``Smoothie-Local k=1`` are the
    paper's embedder ablation, and a model group called ``2024`` is not a k."""
    method = settings.get("method", "")
    if method != SMOOTHIE.name:
        base = BY_NAME[method].label if method in BY_NAME else method
        return base + (f", n={settings['n_labels']}" if method == "labeled_smoothie" else "")
    local = settings.get("type") == "sample_dependent"
    parts = []
    if settings.get("regime") == "train_time":
        parts.append("train_time")
    embedder = str(settings.get("embedding_model") or default_embedder)
    if embedder.split("/")[-1].lower() != default_embedder.lower():
        parts.append(embedder.rstrip("/").split("/")[-1])
    if (settings.get("n_generations") or 1) > 1:
        parts.append(f"{settings['n_generations']} gens")
    if settings.get("full_text"):
        parts.append("full text")
    name = f"Smoothie-Local k={settings.get('k')}" if local else "Smoothie-Global"
    return ", ".join([name, *parts])


def method_keys(entry: dict, method: str) -> list[str]:
    """A scores entry's keys for one method: its name, or ``<name>_<n>`` per variant when several
    files of that method were scored (Labelled Smoothie at several label counts)."""
    return sorted(k for k in entry if k == method or (k.startswith(method + "_") and k[len(method) + 1:].isdigit()))
