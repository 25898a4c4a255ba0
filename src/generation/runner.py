"""Resumable batched generation.

The work is a list of prompts, cut into batches by a fixed plan (longest prompts first, so
that an out-of-memory error comes at once, not at the end). Each finished batch is appended to
a JSONL checkpoint beside the output and fsynced; a rerun with the same settings skips the
batches found there. Sampling is seeded per batch from the batch's number, so a resumed run
produces exactly what an uninterrupted one does. The checkpoint's first line fingerprints the
job; a checkpoint made with other settings is refused rather than silently mixed in.
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

    def fingerprint(self) -> str:
        d = asdict(self)
        d["prompts"] = hashlib.sha256("\x00".join(self.prompts).encode()).hexdigest()
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:20]

    def batches(self) -> list[list[int]]:
        order = sorted(range(len(self.prompts)), key=lambda i: (-len(self.prompts[i]), i))
        return [order[s:s + self.batch_size] for s in range(0, len(order), self.batch_size)]


def _read_checkpoint(path: Path, fingerprint: str) -> dict[int, list[str]]:
    if not path.exists():
        return {}
    done: dict[int, list[str]] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut short by a crash: everything after it is redone
            if lineno == 0:
                if entry.get("fingerprint") != fingerprint:
                    raise UserError(
                        f"{path}: checkpoint of a run with other settings (model, prompts, batch size, "
                        "sampling); delete it or pass --redo"
                    )
                continue
            done.update(zip(entry["items"], entry["outputs"]))
    return done


def run_job(backend, job: Job, checkpoint: Path, desc: str = "generating") -> list[list[str]]:
    """Outputs (n strings per prompt) in prompt order; resumes from ``checkpoint``."""
    fingerprint = job.fingerprint()
    done = _read_checkpoint(checkpoint, fingerprint)
    fail_after = int(os.environ.get(FAIL_AFTER_ENV, "0"))
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    if not done:
        checkpoint.write_text(json.dumps({"fingerprint": fingerprint, "model": job.model}) + "\n")
    bar = tqdm(total=len(job.prompts), initial=len(done), desc=desc, unit="prompt", dynamic_ncols=True)
    new_batches, started = 0, time.perf_counter()
    with checkpoint.open("a", encoding="utf-8") as f:
        for number, items in enumerate(job.batches()):
            if all(i in done for i in items):
                continue
            outputs = backend.generate([job.prompts[i] for i in items], job.max_new_tokens, job.n,
                                       job.temperature, seed=job.seed + number)
            f.write(json.dumps({"batch": number, "items": items, "outputs": outputs}, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
            done.update(zip(items, outputs))
            new_batches += 1
            bar.update(len(items))
            bar.set_postfix(prompts_per_s=f"{bar.n and (bar.n - bar.initial) / (time.perf_counter() - started):.2f}")
            if fail_after and new_batches >= fail_after:
                raise RuntimeError(f"simulated failure after {new_batches} batches ({FAIL_AFTER_ENV})")
    bar.close()
    return [done[i] for i in range(len(job.prompts))]
