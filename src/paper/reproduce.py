"""Every experiment of the paper, as one resumable list of steps (the original shipped a shell
script per experiment).

    python -m src.paper.reproduce --plan                 # every step, what it needs, what is done
    python -m src.paper.reproduce                        # run them in order (skips finished ones)
    python -m src.paper.reproduce --tasks squad --groups 3b --max_samples 20   # a smoke run

The grid (SPEC 6/7, PAPER_NUMBERS.md): Table 1, the seven single tasks with the ``3b`` and ``7b``
groups (Smoothie-Global, random, Best-on-Val); Table 2, the task groups ``acc_group`` and
``rouge2_group`` with both groups (Smoothie-Local k=1, Smoothie-Global, random, labelled kNN,
Best-on-Val, PairRM; the k=100 neighbourhood and the bge-small-en-v1.5 embedder ablations);
Table 3, prompt selection with ``falcon-1b`` and ``llama-2-7b`` on the seven tasks; the train-time
estimates of the authors' multimodel_exps.sh on the task groups (Smoothie-Global, Smoothie-Local
k = 20 and 50); Table 10, MixInstruct, whose candidates ship with the dataset (mix_instruct_exps.sh);
GSM8K with the ``math`` group, greedy as the authors' gsm8k.sh; and one step of this project's
own, marked "(ours)": GSM8K with 5 sampled generations per sample (SPEC 4's n_generations),
which no script of the authors runs.
Every step is a plain ``python -m src...`` command; each command skips its own finished work and
generation resumes from its checkpoint, so rerunning the driver after an interruption continues.
"""

from __future__ import annotations

import importlib
import io
import shlex
import subprocess
import sys
import warnings
from collections.abc import Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

from src import cli, manifest
from src.constants import MODEL_GROUPS
from src.paths import DEFAULT_EMBEDDER, Setting, paper_dir, results_root, shipped, split_file
from src.tasks.config import load_config

TABLE1_TASKS = ["cnn_dailymail", "definition_extraction", "e2e_nlg", "squad", "trivia_qa", "web_nlg", "xsum"]
TABLE2_GROUPS = ["acc_group", "rouge2_group"]
PAPER_GROUPS = ["3b", "7b"]
PROMPT_MODELS = ["falcon-1b", "llama-2-7b"]
MATH = ("gsm8k", "math")
# SPEC section 4 defines Smoothie on n > 1 sampled generations per sample; the authors' scripts
# never run it (their gsm8k.sh is greedy, n = 1). This project's extra step: 5 samples at T = 0.7,
# labelled as such in the plan, not a paper number.
SAMPLED_N, SAMPLED_TEMPERATURE = 5, 0.7
ABLATION_K, ABLATION_EMBEDDER = 100, "bge-small-en-v1.5"
# The authors' multimodel_exps.sh: Smoothie-Global and Smoothie-Local (k = 20, 50) estimated on the
# train split (their table smoothie_train_test_routing_comparison.tex)
TRAIN_TIME_KS = (20, 50)
# Table 10 (mix_instruct_exps.sh): the candidates ship with the dataset, so no generation step
MIX_INSTRUCT = ("mix_instruct", "mix_instruct")


@dataclass
class Step:
    table: str  # which result it serves
    module: str  # python -m <module>
    args: list[str]
    outputs: list[Path] = field(default_factory=list)  # none: always rerun (evaluate, tables)
    generations: int = 0  # model generations this step runs (generation steps)
    _state: tuple[str, str] | None = field(default=None, repr=False)

    @property
    def command(self) -> str:
        return shlex.join(["python", "-m", self.module, *map(str, self.args)])

    def state(self) -> tuple[str, str]:
        """("done" | "todo" | "unstamped", why), asked of the step's own command: ``done`` only
        when the command, run as a dry run (``manifest.dry_run``), would skip every output;
        ``unstamped`` when it would keep a file that records no manifest (generations brought
        from elsewhere), which the driver cannot vouch for."""
        if self._state is None:
            self._state = _ask_command(self)
        return self._state

    def done(self) -> bool:
        return self.state()[0] == "done"

    def forget(self) -> None:
        self._state = None


def _ask_command(step: Step) -> tuple[str, str]:
    if not step.outputs:
        return "todo", "always rerun"
    missing = [p for p in step.outputs if not p.exists()]
    if missing:
        return "todo", f"{missing[0]} does not exist"
    command = importlib.import_module(step.module)
    with manifest.dry_run() as decisions, redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            command.main([str(a) for a in step.args])
        except (cli.UserError, SystemExit) as e:
            return "todo", f"its command would stop: {e}"
    unstamped = [d for d in decisions if d.state == "unstamped" and d.skip]
    if unstamped:
        return "unstamped", f"{unstamped[0].path} records no manifest"
    redo = [d for d in decisions if not d.skip]
    if redo:
        why = "; ".join(redo[0].reasons) or redo[0].state
        return "todo", f"{redo[0].path.name}: {why}"
    return ("done", "") if decisions else ("todo", "its command decides nothing before working")


@dataclass
class Options:
    tasks: list[str] | None = None
    groups: list[str] | None = None
    models: list[str] | None = None
    max_samples: int | None = None
    backend: str = "hf"
    results_dir: str | None = None
    data_dir: str | None = None
    embedding_model: str = DEFAULT_EMBEDDER
    with_pair_rm: bool = True


def _config(name: str) -> Path:
    path = shipped("dataset_configs") / f"{name}.yaml"
    try:
        return path.relative_to(Path.cwd())  # commands read as the README writes them
    except ValueError:
        return path


def _rows(config: Path, opts: Options) -> int:
    """Rows a generator answers for a config (train + test), for the plan's generation counts."""
    cfg = load_config(config)
    total = 0
    for tc in cfg.tasks:
        for size in (tc.train_size, tc.test_size):
            total += min(size or 1000, opts.max_samples or size or 1000)
    return total


class Planner:
    def __init__(self, opts: Options):
        self.opts = opts
        self.steps: list[Step] = []
        self.datasets: set[str] = set()

    def common(self, config: Path, *, group: str | None = None, model: str | None = None) -> list:
        args = ["--dataset_config", config]
        if self.opts.results_dir:
            args += ["--results_dir", self.opts.results_dir]
        if self.opts.data_dir:
            args += ["--data_dir", self.opts.data_dir]
        args += ["--model_group", group, "--multi_model"] if group else ["--model", model, "--multi_prompt"]
        if self.opts.max_samples:
            args += ["--max_samples", self.opts.max_samples]
        return args

    def dataset(self, config: Path, table: str) -> None:
        if config.stem in self.datasets:
            return
        self.datasets.add(config.stem)
        args = ["--dataset_config", config] + (["--data_dir", self.opts.data_dir] if self.opts.data_dir else [])
        outputs = [split_file(config.stem, s, self.opts.data_dir) for s in ("train", "test")]
        self.steps.append(Step(table, "src.make_dataset", args, outputs))

    def setting(self, config: Path, group: str | None, model: str | None, n: int = 1) -> Setting:
        return Setting(config.stem, results_root(self.opts.results_dir), group=group, model=model,
                       data_dir=Path(self.opts.data_dir) if self.opts.data_dir else None, n_generations=n)

    def experiment(self, table: str, config: Path, *, group: str | None = None, model: str | None = None,
                   locals_k: Sequence[int] = (1,), baselines: Sequence[str] = ("pick_random", "labeled_oracle"),
                   n: int = 1, embedders: Sequence[str] = (), train_time: bool = False,
                   generate: bool = True) -> None:
        """Generation, Smoothie, baselines and evaluate for one (config, group or model).
        ``train_time`` adds the train-split estimates; ``generate=False``: the dataset ships them."""
        self.dataset(config, table)
        setting = self.setting(config, group, model, n)
        base = self.common(config, group=group, model=model)
        sampling = ["--n_generations", n, "--temperature", SAMPLED_TEMPERATURE] if n > 1 else []
        n_flag = ["--n_generations", n] if n > 1 else []
        rows = _rows(config, self.opts)
        members = (MODEL_GROUPS[group] if group else [model]) if generate else []
        prompts = 1 if group else len(load_config(config).tasks[0].multi_prompt_templates)
        for member in members:
            gen_args = base + (["--model", member] if group else []) + sampling + ["--backend", self.opts.backend]
            outputs = [setting.generations_file(s, member if group else None) for s in ("train", "test")]
            self.steps.append(Step(table, "src.get_generations", gen_args, outputs, rows * prompts * n))
        emb = ["--embedding_model", self.opts.embedding_model]
        smoothie = [("sample_independent", 1, self.opts.embedding_model)]
        smoothie += [("sample_dependent", k, self.opts.embedding_model) for k in locals_k]
        smoothie += [("sample_dependent", 1, e) for e in embedders]
        runs = [(t, k, e, "test_time") for t, k, e in smoothie]
        if train_time:
            runs += [("sample_independent", 1, self.opts.embedding_model, "train_time")]
            runs += [("sample_dependent", k, self.opts.embedding_model, "train_time") for k in TRAIN_TIME_KS]
        for type_, k, embedder, regime in runs:
            args = base + n_flag + ["--type", type_, "--embedding_model", embedder]
            args += ["--k", k] if type_ == "sample_dependent" else []
            args += ["--regime", regime] if regime != "test_time" else []
            self.steps.append(Step(table, "src.run_smoothie", args,
                                   [setting.smoothie_file(type_, k, regime, embedding_model=embedder)]))
        commands = {"pick_random": "src.pick_random_baseline", "labeled_oracle": "src.labeled_oracle",
                    "labeled_knn": "src.labeled_knn", "pair_rm": "src.pair_rm_baseline"}
        for method in baselines:
            if method == "pair_rm" and not self.opts.with_pair_rm:
                continue
            extra = emb if method == "labeled_knn" else []
            self.steps.append(Step(table, commands[method], base + n_flag + extra, [setting.method_file(method)]))
        self.steps.append(Step(table, "src.evaluate.evaluate", base + n_flag, []))  # always rescored

    def plan(self) -> list[Step]:
        o = self.opts
        groups = o.groups if o.groups is not None else PAPER_GROUPS
        groups = [g for g in groups if g != "none"]
        models = o.models if o.models is not None else PROMPT_MODELS
        single = o.tasks if o.tasks is not None else TABLE1_TASKS
        for task in single:
            if task in TABLE2_GROUPS or task == MIX_INSTRUCT[0] or task == MATH[0] and o.tasks is None:
                continue
            for g in groups:
                if task == MATH[0] and g not in MODEL_GROUPS:
                    continue
                self.experiment("table1", _config(task), group=g)
        for task in (TABLE2_GROUPS if o.tasks is None else [t for t in o.tasks if t in TABLE2_GROUPS]):
            for g in groups:
                self.experiment("table2", _config(task), group=g, locals_k=(1, ABLATION_K),
                                baselines=("pick_random", "labeled_oracle", "labeled_knn", "pair_rm"),
                                embedders=(ABLATION_EMBEDDER,), train_time=True)
        for task in single:
            if task in TABLE2_GROUPS or task == MIX_INSTRUCT[0]:
                continue
            for m in models:
                self.experiment("table3", _config(task), model=m)
        math_task, math_group = MATH
        if (o.tasks is None or math_task in o.tasks) and (o.groups is None or math_group in o.groups):
            self.experiment("gsm8k", _config(math_task), group=math_group)
            self.experiment("gsm8k-n5-ours", _config(math_task), group=math_group, n=SAMPLED_N, baselines=())
        mix_task, mix_group = MIX_INSTRUCT
        if (o.tasks is None or mix_task in o.tasks) and (o.groups is None or mix_group in o.groups):
            self.experiment("table10", _config(mix_task), group=mix_group, baselines=("pick_random", "pair_rm"),
                            generate=False)
        tables = (["--results_dir", o.results_dir] if o.results_dir else [])
        tables += (["--data_dir", o.data_dir] if o.data_dir else [])
        tables += ["--embedding_model", o.embedding_model] + (["--allow_partial"] if o.max_samples else [])
        self.steps.append(Step("tables", "src.paper.tables", tables, []))
        return self.steps


def print_plan(steps: list[Step]) -> None:
    total = sum(s.generations for s in steps)
    pending = sum(s.generations for s in steps if not s.done())
    for i, s in enumerate(steps, 1):
        state, why = s.state()
        gens = f" [{s.generations:,} generations]" if s.generations else ""
        note = f"  ({why})" if state == "unstamped" or (state == "todo" and s.outputs and "does not exist" not in why) \
            else ""
        print(f"{i:4d} {state} {s.table:16s} {s.command}{gens}{note}")
    print(f"{len(steps)} steps, {sum(not s.done() for s in steps)} to run; {total:,} generations in all, "
          f"{pending:,} still to make")


def run_steps(steps: list[Step]) -> None:
    for i, s in enumerate(steps, 1):
        s.forget()  # an earlier step may have changed what this one reads
        state, why = s.state()
        if state == "done":
            print(f"[{i}/{len(steps)}] done: {s.command}")
            continue
        if state == "unstamped":
            raise cli.UserError(f"step {i}: {why}, so the driver cannot tell what made it; move it away to "
                                f"regenerate it, or run the step yourself (it keeps the file): {s.command}")
        print(f"[{i}/{len(steps)}] {s.command}", flush=True)
        proc = subprocess.run([sys.executable, "-m", s.module, *map(str, s.args)])
        if proc.returncode != 0:
            raise cli.UserError(f"step {i} failed (exit {proc.returncode}): {s.command}; fix it and rerun: finished "
                                "steps are skipped and generation resumes")


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser("src.paper.reproduce", "Run (or --plan) every experiment of the paper, resumably.")
    p.add_argument("--plan", action="store_true", help="print every step and what is done; run nothing")
    p.add_argument("--tasks", nargs="+", default=None, help="configs to run (default: the paper's)")
    p.add_argument("--groups", nargs="+", default=None, help="model groups (multi-model); 'none' for no group")
    p.add_argument("--models", nargs="+", default=None, help="multi-prompt models (default falcon-1b llama-2-7b)")
    p.add_argument("--max_samples", type=cli.positive_int, default=None, help="first N rows per split (smoke run)")
    p.add_argument("--backend", choices=("hf", "vllm"), default="hf")
    p.add_argument("--results_dir", default=None)
    p.add_argument("--data_dir", default=None)
    p.add_argument("--embedding_model", default=DEFAULT_EMBEDDER)
    p.add_argument("--no_pair_rm", action="store_true", help="leave out PairRM (needs llm-blender and the hub)")
    args = p.parse_args(argv)
    for name in args.tasks or []:
        if not _config(name).is_file():
            raise cli.UserError(f"--tasks {name}: no dataset_configs/{name}.yaml")
    for g in args.groups or []:
        if g not in ("none", MIX_INSTRUCT[1]) and g not in MODEL_GROUPS:
            raise cli.UserError(f"--groups {g}: not a registered group ({', '.join(MODEL_GROUPS)}, "
                                f"{MIX_INSTRUCT[1]}) or 'none'")
    opts = Options(args.tasks, args.groups, args.models, args.max_samples, args.backend, args.results_dir,
                   args.data_dir, args.embedding_model, not args.no_pair_rm)
    steps = Planner(opts).plan()
    if args.plan:
        print_plan(steps)
        return
    run_steps(steps)
    print(f"all {len(steps)} steps done; tables in {paper_dir(args.results_dir)}")


if __name__ == "__main__":
    cli.run(main)
