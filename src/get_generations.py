"""Step 2 of the pipeline: every generator's outputs on the train and test splits (SPEC 3.2).

    python -m src.get_generations --dataset_config dataset_configs/demo.yaml \
        --model smollm2-135m --multi_prompt
    python -m src.get_generations --dataset_config dataset_configs/squad.yaml \
        --model_group 3b --multi_model [--model dolly-3b]

Finished batches are checkpointed beside the output (``*.partial.jsonl``); rerunning the same
command after an interruption continues where it stopped. The work divides with identical results:
``--ray_replicas N`` spreads it over N model replicas with Ray (one GPU each where there are GPUs;
``RAY_ADDRESS`` names a running cluster), and ``--shard i/n`` runs one n-th of it, for SLURM and
other schedulers, after which ``python -m src.merge_shards`` (the same flags) writes the files.
"""

from __future__ import annotations

from collections.abc import Sequence

from src import cli, manifest
from src.constants import MODEL_GROUPS
from src.generation.models import resolve_model
from src.generation.runner import BackendSpec, Job, parse_shard, read_checkpoints, run_job
from src.io import read_dataset, write_json
from src.paths import SPLITS, Setting, generation_checkpoint, model_slug, shard_checkpoint, shard_checkpoints
from src.tasks.config import load_config

BACKENDS = ("hf", "vllm")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def _prompt_fields(rows: list[dict], multi_prompt: bool, path) -> list[str]:
    if not multi_prompt:
        return ["multi_model_prompt"]
    fields = sorted((k for k in rows[0] if k.startswith("multi_prompt_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    if not fields:
        raise cli.UserError(f"{path}: no multi_prompt_<i> fields (a group config has none; use --multi_model)")
    return fields


def model_identity(ref) -> str:
    """A generation model by the content of its files (a GGUF file or a local folder), or, for a
    hub id, by the revision the local hub cache resolves it to and that snapshot's content."""
    from pathlib import Path

    from src.model_files import model_identity as identify
    from src.model_files import weights_digest

    where = Path(ref.load_from) / ref.gguf_file if ref.gguf_file else Path(ref.load_from)
    return weights_digest(where) if where.exists() else "hub:" + identify(ref.load_from)[1]


def run_settings(args, ref) -> tuple[tuple[str, str], ...]:
    """How a generation runs, which changes its outputs in the last bits or more: the backend, the
    dtype and device kind actually used (``auto`` resolved), and the model's weights by content."""
    from src.embeddings import default_device

    device = (args.device or default_device()).split(":")[0]
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if device == "cuda" else "float32")
    return (("backend", args.backend), ("device", device), ("dtype", dtype), ("weights", model_identity(ref)))


def main(argv: Sequence[str] | None = None, merge: bool = False) -> None:
    """``merge=True`` is ``src.merge_shards``: no model, every batch taken from the shards' checkpoints."""
    name = "src.merge_shards" if merge else "src.get_generations"
    p = cli.parser(name, "Merge --shard runs' checkpoints into generation files." if merge
                   else "Generate every generator's outputs for a dataset config.")
    cli.add_setting_flags(p)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy; > 0 needed for --n_generations > 1")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max_new_tokens", type=cli.positive_int, default=None, help="default: the config's")
    p.add_argument("--batch_size", type=cli.positive_int, default=8)
    p.add_argument("--backend", choices=BACKENDS, default="hf")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--dtype", choices=DTYPES, default="auto", help="auto = bfloat16 on GPU, float32 on CPU")
    p.add_argument("--chat_template", action="store_true", help="wrap prompts in the model's chat template")
    p.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
    p.add_argument("--redo", action="store_true", help="regenerate even if outputs exist")
    p.add_argument("--shard", type=parse_shard, default=None, metavar="I/N",
                   help="run only batches i, i+n, i+2n, ... (0-based); merge with src.merge_shards")
    p.add_argument("--ray_replicas", type=int, default=0, metavar="N",
                   help="spread batches over N model replicas with Ray (RAY_ADDRESS: a running cluster)")
    args = p.parse_args(argv)
    if args.ray_replicas < 0:
        raise cli.UserError(f"--ray_replicas {args.ray_replicas}: must be 0 (no Ray) or more")
    if merge and (args.shard or args.ray_replicas or args.redo):
        raise cli.UserError("src.merge_shards takes the generation flags only: not --shard, --ray_replicas or --redo")

    setting = Setting.from_args(args)
    if args.n_generations > 1 and args.temperature <= 0:
        raise cli.UserError(f"--n_generations {args.n_generations} needs sampling: give --temperature > 0")
    config = load_config(args.dataset_config)
    max_new_tokens = args.max_new_tokens or config.max_new_tokens

    if setting.multi_model:
        if args.model:
            models = [args.model]
        elif setting.group in MODEL_GROUPS:
            models = MODEL_GROUPS[setting.group]
        else:
            raise cli.UserError(
                f"--model_group {setting.group!r} is not registered in src/constants.py: give --model for each "
                f"of your models, or put your own <model>_test.json files in {setting.folder}"
            )
    else:
        models = [args.model]
    refs = {m: resolve_model(m) for m in models}  # every name checked before any model loads

    splits = {}
    for split in args.splits:
        path = setting.split_file(split)
        rows = read_dataset(path, required=())
        if args.max_samples:
            rows = rows[: args.max_samples]
        if not rows:
            raise cli.UserError(f"{path}: no rows")
        fields = _prompt_fields(rows, not setting.multi_model, path)
        missing = [f for f in fields if f not in rows[0]]
        if missing:
            raise cli.UserError(f"{path}: rows lack {', '.join(missing)}")
        splits[split] = (rows, fields)

    for model in models:
        backend = None
        for split, (rows, fields) in splits.items():
            out = setting.generations_file(split, model_slug(model) if setting.multi_model else None)
            checkpoint = generation_checkpoint(out)
            prompts = tuple(r[f] for r in rows for f in fields)  # sample-major, prompt order within
            job = Job(model=model, prompts=prompts, n=args.n_generations, max_new_tokens=max_new_tokens,
                      temperature=args.temperature, seed=args.seed, batch_size=args.batch_size,
                      chat_template=args.chat_template, run=() if merge else run_settings(args, refs[model]))
            settings = {"model": model, "prompt_fields": fields, "n_generations": args.n_generations,
                        "max_new_tokens": max_new_tokens, "temperature": args.temperature, "seed": args.seed,
                        "chat_template": args.chat_template, "max_samples": args.max_samples}
            # how the shards ran, as their checkpoints record it (they must all agree); a checkpoint
            # of another run is refused here, before any model loads
            own = checkpoint if args.shard is None else shard_checkpoint(checkpoint, *args.shard)
            run = read_checkpoints([checkpoint, *shard_checkpoints(checkpoint), own], job)[1] if not args.redo \
                else dict(job.run)
            recorded = manifest.build([setting.split_file(split)], {**settings, **{k: v for k, v in run.items()
                                                                                   if k != "weights"}},
                                      kind="generations", base=setting.results_dir, models={"generator": run.get("weights", "")},
                                      rows=len(rows))
            if manifest.skip_if_done(out, args.redo, recorded, trust_unstamped=True):
                continue
            if args.redo:  # this run's own checkpoint only: other shards' finished work is theirs
                for old in (own, *(shard_checkpoints(checkpoint) if args.shard is None else ())):
                    old.unlink(missing_ok=True)
            spec = None if merge else BackendSpec(args.backend, refs[model], args.device, args.dtype,
                                                  args.chat_template)
            if spec is not None and backend is None and not (args.ray_replicas or args.shard):
                print(f"loading {model} ({args.backend} backend)")
                backend = spec.load()
            outputs = run_job(spec, job, checkpoint, desc=f"{model_slug(model)} {split}", shard=args.shard,
                              ray_replicas=args.ray_replicas, backend=backend)
            if outputs is None:
                i, n = args.shard
                print(f"shard {i}/{n} of {out.name} finished; when every shard has, run src.merge_shards with "
                      "the same flags")
                continue
            width = len(fields)
            generations = []
            for i in range(len(rows)):
                per_sample = outputs[i * width:(i + 1) * width]  # width lists of n strings
                flat = [s for per_prompt in per_sample for s in per_prompt]  # prompt-major
                generations.append(flat[0] if width == 1 and args.n_generations == 1 else flat)
            write_json(out, {"generations": generations, manifest.KEY: recorded})
            for finished in (checkpoint, *shard_checkpoints(checkpoint)):
                finished.unlink(missing_ok=True)
            print(f"wrote {out} ({len(rows)} samples)")


if __name__ == "__main__":
    cli.run(main)
