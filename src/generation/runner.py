"""Resumable batched generation.

The work is a list of prompts, cut into batches by a fixed plan (longest prompts first, so
that an out-of-memory error comes at once, not at the end). Each finished batch is appended to
a JSONL checkpoint beside the output and fsynced; a rerun with the same settings skips the
batches found there. Sampling is seeded per batch from the batch's number, so a resumed run
produces exactly what an uninterrupted one does. The checkpoint's first line records the job:
what fixes its outputs (model, prompts, chat template, sampling, batch plan) and how it ran
(backend, dtype, device kind, the model's weights by content). A checkpoint made with any other
of these is refused, naming what differs (``src.manifest.differences``), rather than mixed in.

The same two facts (a fixed batch plan, a seed per batch) make the work divisible with identical
results: ``--shard i/n`` runs every n-th batch into a checkpoint of its own (for SLURM and other
schedulers), and ``--ray_replicas`` hands batches to a pool of model replicas through Ray Data.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from src.cli import UserError
from src.paths import shard_checkpoint, shard_checkpoints

FAIL_AFTER_ENV = "SMOOTHIE_FAIL_AFTER_BATCHES"  # tests: simulate a crash after N new batches


@dataclass(frozen=True)
class Job:
    model: str
    prompts: tuple[str, ...]
    n: int = 1
    max_new_tokens: int = 64
    temperature: float = 0.0
    seed: int = 42
    batch_size: int = 8
    chat_template: bool = False
    run: tuple[tuple[str, str], ...] = ()  # how it runs: backend, dtype, device kind, weights (merging: empty)

    def settings(self) -> dict:
        """What fixes the outputs, prompts by their hash (the checkpoint header's ``settings``)."""
        d = asdict(self)
        d.pop("run")
        d["prompts"] = hashlib.sha256("\x00".join(self.prompts).encode()).hexdigest()[:20]
        return d

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.settings(), sort_keys=True).encode()).hexdigest()[:20]

    def batches(self) -> list[list[int]]:
        order = sorted(range(len(self.prompts)), key=lambda i: (-len(self.prompts[i]), i))
        return [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)]


@dataclass(frozen=True)
class BackendSpec:
    """What a worker needs to load a backend itself (a Ray replica, a shard on another machine)."""

    kind: str
    ref: object  # src.generation.models.ModelRef
    device: str | None = None
    dtype: str = "auto"
    chat_template: bool = False

    def load(self):
        if self.kind == "vllm":
            from src.generation.vllm_backend import VLLMBackend

            return VLLMBackend(self.ref, self.device, self.dtype, self.chat_template)
        from src.generation.hf import HFBackend

        return HFBackend(self.ref, self.device, self.dtype, self.chat_template)


def parse_shard(text: str) -> tuple[int, int]:
    """"i/n" -> (i, n) with 0 <= i < n: this process runs the batches whose number is i modulo n."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text}: expected i/n, for example 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--shard {text}: need 0 <= i < n")
    return i, n


def _refuse(path: Path, reasons: list[str]) -> UserError:
    return UserError(f"{path}: checkpoint of a run with other settings ({'; '.join(reasons) or 'an older version'}); "
                     "rerun with the same flags, or delete it (--redo deletes this run's own)")


def _read_one(path: Path, job: Job, done: dict[int, list[str]], runs: dict[Path, dict]) -> None:
    from src.manifest import differences

    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut short by a crash: everything after it is redone
            if lineno == 0:
                if entry.get("fingerprint") != job.fingerprint():
                    raise _refuse(path, differences(entry.get("settings") or {}, job.settings()))
                run = entry.get("run") or {}
                if job.run and run != dict(job.run):
                    raise _refuse(path, differences(run, dict(job.run)))
                runs[path] = run
                continue
            done.update(zip(entry["items"], entry["outputs"]))


def read_checkpoints(paths: list[Path], job: Job) -> tuple[dict[int, list[str]], dict]:
    """Finished prompts from this run's checkpoint and every shard's (whoever finished a batch, it
    counts), and how they ran: every checkpoint must agree, so a merge mixes no two settings."""
    from src.manifest import differences

    done: dict[int, list[str]] = {}
    runs: dict[Path, dict] = {}
    for path in dict.fromkeys(paths):
        if path.exists():
            _read_one(path, job, done, runs)
    first = next(iter(runs.items()), None)
    for path, run in runs.items():
        if first is not None and run != first[1]:
            raise _refuse(path, [f"{first[0].name} ran differently: " + "; ".join(differences(first[1], run))])
    return done, (first[1] if first else dict(job.run))


def _ray_outputs(spec: BackendSpec, job: Job, pending: list[tuple[int, list[int]]], replicas: int):
    """(number, items, outputs) for each pending batch, as Ray Data's pool of model replicas finishes them.

    Each replica loads the model once; each batch is generated exactly as the single-process run
    generates it (same prompts in the same batch, seed = job.seed + batch number), so the outputs
    are the same. One GPU per replica where Ray sees GPUs, one CPU otherwise.
    """
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None, log_to_driver=False)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0

    class Replica:
        def __init__(self):
            self.backend = spec.load()

        def __call__(self, batch: dict) -> dict:
            outputs = []
            for number, prompts in zip(batch["number"], batch["prompts"]):
                outputs.append(json.dumps(self.backend.generate(
                    json.loads(prompts), job.max_new_tokens, job.n, job.temperature, seed=job.seed + int(number))))
            return {"number": batch["number"], "outputs": outputs}

    rows = [{"number": number, "prompts": json.dumps([job.prompts[i] for i in items])} for number, items in pending]
    items_of = dict(pending)
    ds = ray.data.from_items(rows).map_batches(Replica, batch_size=1, concurrency=replicas, num_gpus=gpus,
                                                num_cpus=0 if gpus else 1)
    for row in ds.iter_rows():
        number = int(row["number"])
        yield number, items_of[number], json.loads(row["outputs"])


def run_job(
    spec: BackendSpec | None,
    job: Job,
    checkpoint: Path,
    desc: str = "generating",
    *,
    shard: tuple[int, int] | None = None,
    ray_replicas: int = 0,
    backend=None,
) -> list[list[str]] | None:
    """Outputs (n strings per prompt) in prompt order, resuming from the checkpoints.

    ``shard=(i, n)`` runs only batches whose number is i modulo n, into a checkpoint of its own,
    and returns None: ``merge`` (``spec=None``) later collects every shard's checkpoint.
    ``ray_replicas`` > 0 spreads the batches over that many model replicas with Ray Data.
    ``backend``: an already loaded backend to reuse (single-process runs over several splits).
    """
    shards = shard_checkpoints(checkpoint)
    own = checkpoint if shard is None else shard_checkpoint(checkpoint, *shard)
    done, _ = read_checkpoints([checkpoint, *shards, own], job)
    pending = [(number, items) for number, items in enumerate(job.batches())
               if (shard is None or number % shard[1] == shard[0]) and not all(i in done for i in items)]
    if spec is None:  # merging: every batch must already be in some checkpoint
        if pending:
            missing = sorted({number for number, _ in pending})
            raise UserError(f"{checkpoint.name}: {len(missing)} of {len(job.batches())} batches are in no shard's "
                            f"checkpoint yet (first: batch {missing[0]}); finish every --shard before merging")
        return [done[i] for i in range(len(job.prompts))]
    fail_after = int(os.environ.get(FAIL_AFTER_ENV, "0"))
    own.parent.mkdir(parents=True, exist_ok=True)
    if not own.exists():
        own.write_text(json.dumps({"fingerprint": job.fingerprint(), "model": job.model, "settings": job.settings(),
                                   "run": dict(job.run)}) + "\n")
    total = sum(len(items) for number, items in enumerate(job.batches())
                if shard is None or number % shard[1] == shard[0])
    todo = sum(len(items) for _, items in pending)
    bar = tqdm(total=total, initial=total - todo, desc=desc, unit="prompt", dynamic_ncols=True)
    if ray_replicas and pending:
        results = _ray_outputs(spec, job, pending, ray_replicas)
    else:
        backend = backend if backend is not None or not pending else spec.load()
        results = ((number, items, backend.generate([job.prompts[i] for i in items], job.max_new_tokens, job.n,
                                                    job.temperature, seed=job.seed + number))
                   for number, items in pending)
    new_batches, started = 0, time.perf_counter()
    with own.open("a", encoding="utf-8") as f:
        for number, items, outputs in results:
            f.write(json.dumps({"batch": number, "items": items, "outputs": outputs}, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            done.update(zip(items, outputs))
            new_batches += 1
            bar.update(len(items))
            bar.set_postfix(prompts_per_s=f"{(bar.n - bar.initial) / (time.perf_counter() - started):.2f}")
            if fail_after and new_batches >= fail_after:
                raise RuntimeError(f"simulated failure after {new_batches} batches ({FAIL_AFTER_ENV})")
    bar.close()
    if shard is not None:
        return None
    return [done[i] for i in range(len(job.prompts))]

