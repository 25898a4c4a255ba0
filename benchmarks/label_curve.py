"""Quality against the number of labels: Best-on-Val(n), Smoothie-Global, random and Labelled Smoothie(n).

    python benchmarks/label_curve.py [--draws 200] [--seed 0] [--embedding_model all-MiniLM-L6-v2] [--plot benchmarks/label_curve.png]
    python benchmarks/label_curve.py --holdout [--draws 200]      # leave one source out, noisy labels, four variants

Sets (each one global choice among its generators; quality = the chosen generator's mean score
over all rows of the set): GSM8K solutions (4 systems, the dataset authors' correctness labels),
WebNLG 2020 (16 systems, ROUGE-2 against the references), the AlpacaEval sample (every 5-of-6
ensemble of six leaderboard models, the judge's per-instruction preference - 1) from
../shared/data, and the demo task (SmolLM2 under 4 prompts; made by ``make demo``). For each n,
``--draws`` random draws of n labelled rows; the mean quality and its standard error are
printed per method, and the relative regret r = (max(BoV(n), SG) - method) / (best - random).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.embeddings import Embedder  # noqa: E402
from src.evaluate.metrics import METRICS  # noqa: E402
from src.methods.labeled_smoothie import ALPHA, FADE_AFTER, critical_value, pick, smoothie_prior  # noqa: E402
from src.paths import Setting, split_file  # noqa: E402
from src.route import route_generations  # noqa: E402

NS = (0, 1, 2, 5, 10, 20, 50)


def _generation_files(folder: Path) -> tuple[list[str], list[list[str]]]:
    files = sorted(folder.glob("*_test.json"))
    return [f.name[: -len("_test.json")] for f in files], [json.loads(f.read_text())["generations"] for f in files]


def gsm8k(shared: Path):
    names, gens = _generation_files(shared / "gsm8k_solutions" / "generations")
    labels = [json.loads((shared / "gsm8k_solutions" / "labels" / f"{n}_test.json").read_text())["is_correct"]
              for n in names]
    labels = np.array(labels, dtype=float).T
    # a near-copy keeps its system's correctness label (one dropped word rarely changes an answer)
    yield "GSM8K (4 systems)", "gsm8k", gens, labels, lambda texts, j: labels[:, j]


def webnlg(shared: Path):
    names, gens = _generation_files(shared / "webnlg2020" / "generations")
    rows = [json.loads(line) for line in (shared / "webnlg2020" / "webnlg2020_test.jsonl").read_text().splitlines()]
    refs = [r["reference"] for r in rows]
    scores = np.array([METRICS["rouge2"](g, refs) for g in gens]).T
    yield "WebNLG 2020 (16 systems)", "web_nlg", gens, scores, lambda texts, j: np.array(METRICS["rouge2"](texts, refs))


def alpaca(shared: Path):
    folder = shared / "alpaca_eval_sample"
    models = sorted(p.stem for p in (folder / "downloaded_outputs").glob("*.json"))
    order = None
    outputs, prefs = {}, {}
    for m in models:
        rows = json.loads((folder / "downloaded_outputs" / f"{m}.json").read_text())
        pref = json.loads((folder / "preferences" / f"{m}.json").read_text())["preference"]
        order = order or [r["instruction"] for r in rows]
        by_instruction = {r["instruction"]: (r["output"], p) for r, p in zip(rows, pref)}
        outputs[m] = [by_instruction[i][0] for i in order]
        prefs[m] = [by_instruction[i][1] - 1.0 for i in order]
    for members in itertools.combinations(models, 5):
        left_out = next(m for m in models if m not in members)
        scores = np.array([prefs[m] for m in members]).T
        # a near-copy keeps its model's judge preference (graded, in [0, 1])
        yield (f"AlpacaEval without {left_out}", None, [outputs[m] for m in members], scores,
               lambda texts, j, scores=scores: scores[:, j])


FLIPS = (0.1, 0.2)


def flipped(scores: np.ndarray, share: float, seed: int = 0) -> np.ndarray:
    """0/1 labels with a share of them flipped at random (fixed seed): what a hurried labeller gives."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random(scores.shape) < share, 1.0 - scores, scores)


def webnlg_one_reference(shared: Path):
    """WebNLG labelled by ROUGE-2 against its first reference only, scored against the others
    (rows with two or more references): labels that only approximate the quality that matters."""
    names, gens = _generation_files(shared / "webnlg2020" / "generations")
    rows = [json.loads(line) for line in (shared / "webnlg2020" / "webnlg2020_test.jsonl").read_text().splitlines()]
    keep = [i for i, r in enumerate(rows) if isinstance(r["reference"], list) and len(r["reference"]) >= 2]
    gens = [[g[i] for i in keep] for g in gens]
    first = [rows[i]["reference"][0] for i in keep]
    others = [rows[i]["reference"][1:] for i in keep]
    labels = np.array([METRICS["rouge2"](g, first) for g in gens]).T
    quality = np.array([METRICS["rouge2"](g, others) for g in gens]).T
    return gens, quality, labels


def demo(_shared: Path):
    gens_file = Setting(config="demo", results_dir=ROOT / "results", model="smollm2-135m").generations_file("test")
    data_file = ROOT / split_file("demo", "test")
    if not gens_file.is_file() or not data_file.is_file():
        print(f"demo task skipped: {gens_file} is missing (run `make demo` first)")
        return
    per_row = json.loads(gens_file.read_text())["generations"]
    rows = [json.loads(line) for line in data_file.read_text().splitlines()]
    gens = [[row[p] for row in per_row] for p in range(len(per_row[0]))]
    refs = [r["reference"] for r in rows]
    scores = np.array([METRICS["trivia_qa_acc"](g, refs) for g in gens]).T
    yield "demo (SmolLM2 x 4 prompts)", "demo", gens, scores, lambda texts, j: np.array(METRICS["trivia_qa_acc"](texts, refs))


def curves(scores: np.ndarray, theta: np.ndarray, draws: int, seed: int = 0,
           alpha: float = ALPHA, labels: np.ndarray | None = None, rule=None) -> dict[str, np.ndarray]:
    """(draws, len(NS)) qualities per method. Each draw labels n rows and scores every method on
    the other rows only (a split per draw), so no method is scored on the rows it learnt from;
    random and Smoothie-Global are scored on the same rows. ``labels`` (default: the scores
    themselves) are what Best-on-Val and Labelled Smoothie see on the labelled rows.
    ``rule(theta, labelled rows) -> index`` replaces the shipped rule (the held-out comparison)."""
    labels = scores if labels is None else labels
    rule = rule or (lambda t, rows: pick(t, rows, alpha))
    total, n_rows = scores.sum(axis=0), len(scores)
    top = int(np.argmax(theta))
    rng = np.random.default_rng(seed)
    out = {name: np.empty((draws, len(NS))) for name in ("bov", "ls", "sg", "random")}
    for j, n in enumerate(NS):
        for d in range(draws):
            rows = rng.choice(n_rows, size=n, replace=False)
            quality = (total - scores[rows].sum(axis=0)) / (n_rows - n)  # the rows not labelled
            if n == 0:
                out["bov"][d, j] = quality.mean()  # no labels: Best-on-Val is a random generator
            else:
                means = labels[rows].mean(axis=0)
                best = np.flatnonzero(means == means.max())
                out["bov"][d, j] = quality[best].mean()  # ties broken uniformly: their expected quality
            out["ls"][d, j] = quality[rule(theta, labels[rows])]
            out["sg"][d, j] = quality[top]
            out["random"][d, j] = quality.mean()
    return out


def near_copy(texts: list[str], seed: int) -> list[str]:
    """A weak generator's outputs with one word dropped from each (seeded): what the same model
    behind another endpoint, or a slightly other prompt, gives. Agreement counts it twice."""
    rng = np.random.default_rng(seed)
    out = []
    for t in texts:
        words = t.split()
        if len(words) > 3:
            del words[int(rng.integers(len(words)))]
        out.append(" ".join(words))
    return out


def planted(name: str, task: str | None, gens: list[list[str]], scores: np.ndarray, grade, embedder,
            copies: int = 2):
    """The set with near-copies of one weak generator added, so that agreement favours it and
    Smoothie-Global's pick is mediocre by construction. The weak one is the lowest-scoring
    generator whose copies make Smoothie rank the best generator third or lower (else the
    lowest-scoring of all). Labels are graded: ``grade(texts) -> per-row scores`` rescores each copy."""
    order = np.argsort(scores.mean(axis=0))
    best = int(order[-1])
    chosen = None
    for weak in order[:min(3, len(order) - 1)]:
        extra = [near_copy(gens[weak], seed=c) for c in range(copies)]
        theta = route_generations(gens + extra, k=None, task=task, embedder=embedder).weights[0]
        if int((theta > theta[best]).sum()) >= 2:
            chosen = (weak, extra, theta)
            break
        chosen = chosen or (weak, extra, theta)
    weak, extra, theta = chosen
    extra_scores = np.stack([grade(e, weak) for e in extra], axis=1)
    return (f"{name}, {copies} near-copies of its weakest-fitting generator planted", theta,
            np.concatenate([scores, extra_scores], axis=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.environ.get("SMOOTHIE_SHARED_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--embedding_model", default="all-MiniLM-L6-v2")
    ap.add_argument("--plot", default=str(ROOT / "benchmarks" / "label_curve.png"))
    ap.add_argument("--seed", type=int, default=0, help="seed of the draws of labelled rows")
    ap.add_argument("--alpha", type=float, default=ALPHA, help="the rule's test level (default: the shipped one)")
    ap.add_argument("--fade_after", type=float, default=FADE_AFTER,
                    help="labels after which the test fades (default: the shipped rule's; 0: never, the rule before)")
    ap.add_argument("--holdout", action="store_true",
                    help="also choose alpha by leave-one-source-out over ALPHAS, add the noisy-label conditions, "
                         "print held-out regret beside the in-sample one, and measure the VARIANTS the same way")
    args = ap.parse_args()
    if args.holdout:
        return holdout(args)
    shared = Path(args.shared)
    embedder = Embedder(args.embedding_model, show_progress=True)
    if not shared.is_dir():
        print(f"{shared} is absent: the real sets are skipped")
    results = {}
    for name, theta, scores, _ in exact_sets(shared, embedder):
        fade = args.fade_after or None
        c = curves(scores, theta, args.draws, seed=args.seed, alpha=args.alpha,
                   rule=lambda t, rows, a=args.alpha, f=fade: pick(t, rows, a, fade_after=f))
        quality = scores.mean(axis=0)
        results[name] = (c, float(quality.max()), float(quality.mean()))
    print(f"\nLabelled Smoothie, alpha = {args.alpha}, fading after {args.fade_after or 'never'}; embedder {args.embedding_model}; {args.draws} draws per n, seed {args.seed}\n")
    print("| set | n | random | Smoothie-Global | Best-on-Val(n) ± SE | Labelled Smoothie(n) ± SE | r BoV | r SG | r LS ± SE |")
    print("|---|---|---|---|---|---|---|---|---|")
    regret = {m: np.empty((len(results), len(NS))) for m in ("bov", "sg", "ls")}
    regret_se = np.empty((len(results), len(NS)))  # the draws' standard error of r LS
    below = []
    for i, (name, (c, best, rand)) in enumerate(results.items()):
        gap = max(best - rand, 1e-12)
        for j, n in enumerate(NS):
            mean = {m: c[m][:, j].mean() for m in c}
            se = {m: c[m][:, j].std(ddof=1) / np.sqrt(len(c[m])) for m in ("bov", "ls")}
            envelope = max(mean["bov"], mean["sg"]) if n else mean["sg"]
            for m in regret:
                regret[m][i, j] = (envelope - mean[m]) / gap
            regret_se[i, j] = se["ls"] / gap
            if n >= 1 and mean["ls"] < mean["bov"] - se["bov"]:
                below.append(f"{name} n={n} ({mean['ls'] - mean['bov']:+.4f})")
            print(f"| {name} | {n} | {mean['random']:.4f} | {mean['sg']:.4f} | {mean['bov']:.4f} ± {se['bov']:.4f} | "
                  f"{mean['ls']:.4f} ± {se['ls']:.4f} | {regret['bov'][i, j]:.2f} | {regret['sg'][i, j]:.2f} | "
                  f"{regret['ls'][i, j]:.2f} ± {regret_se[i, j]:.2f} |")
    labelled = [j for j, n in enumerate(NS) if n >= 1]
    mid = [NS.index(n) for n in (2, 5, 10)]
    print("\n| summary over sets | Best-on-Val | Smoothie-Global | Labelled Smoothie | goal |")
    print("|---|---|---|---|---|")
    worst = np.unravel_index(np.argmax(regret["ls"][:, labelled]), (len(results), len(labelled)))
    print("| worst-case r, n in 1..50 | " + " | ".join(f"{regret[m][:, labelled].max():.2f}" for m in regret)
          + f" (± {regret_se[:, labelled][worst]:.2f}: {list(results)[worst[0]]}, n = {NS[labelled[worst[1]]]}) | <= 0.15 |")
    print("| mean r at n in {2, 5, 10} | " + " | ".join(f"{regret[m][:, mid].mean():.3f}" for m in regret)
          + " | <= 0.03 |")
    print(f"| below Best-on-Val(n) by > 1 SE | | | {len(below)} ({', '.join(below) or 'none'}) | 0 |")
    if args.plot:
        plot(results, Path(args.plot))
        print(f"\nwrote {args.plot}")


ALPHAS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.4)
SOURCES = {"demo": "demo", "GSM8K": "GSM8K", "WebNLG": "WebNLG", "AlpacaEval": "AlpacaEval"}


# Variants of the rule in which the labelled rows themselves decide how far to trust Smoothie,
# measured held out beside the shipped one. Each takes (theta, labelled rows, constant) and
# returns the chosen generator; ties go to Smoothie's order.

def _best(theta: np.ndarray, score: np.ndarray) -> int:
    best = np.flatnonzero(score >= score.max() - 1e-12)
    return int(best[np.argmax(np.asarray(theta)[best])])


def agreement_scaled(theta, s, params) -> int:
    """The shipped test, its strength scaled by how well the labels agree with Smoothie's order
    among the other generators: where the labels confirm Smoothie's ranking elsewhere, their
    verdict at the top is believed sooner (beta > 0), and the other way round (beta < 0)."""
    alpha, beta = params
    theta = np.asarray(theta, float)
    m, s = len(theta), np.asarray(s, float).reshape(-1, len(theta))
    prior, top = smoothie_prior(theta), int(np.argmax(theta))
    y, d = s.mean(axis=0), s - s[:, [top]]
    se = np.sqrt((d.var(axis=0) + d.mean(axis=0) ** 2 / len(s)) / len(s))
    score = y.copy()
    for j in range(m):
        rest = [k for k in range(m) if k not in (top, j)]
        pairs = [(a, b) if theta[a] > theta[b] else (b, a) for a, b in itertools.combinations(rest, 2)
                 if theta[a] != theta[b]]
        agree = np.mean([1.0 if y[a] > y[b] else 0.5 if y[a] == y[b] else 0.0 for a, b in pairs]) if pairs else 0.5
        if j != top:
            score[j] -= critical_value(m, alpha) * se[j] * (1 - prior[j]) * np.exp(-2 * beta * (agree - 0.5))
    return _best(theta, score)


def sign_test(theta, s, alpha) -> int:
    """An exact sign test of each challenger against Smoothie's pick (rows it wins against rows it
    loses; ties carry no evidence), at level (alpha / (m - 1)) ** (1 - prior): noisy labels give
    wins and losses alike, which this counts and the paired z-test at n <= 2 cannot."""
    from scipy.stats import binom

    theta = np.asarray(theta, float)
    m, s = len(theta), np.asarray(s, float).reshape(-1, len(theta))
    prior, top = smoothie_prior(theta), int(np.argmax(theta))
    d = s - s[:, [top]]
    wins, losses = (d > 1e-9).sum(axis=0), (d < -1e-9).sum(axis=0)
    p = np.where(wins + losses > 0, binom.sf(wins - 1, wins + losses, 0.5), 1.0)
    passed = (p <= (alpha / (m - 1)) ** (1 - prior)) & (d.mean(axis=0) > 0)
    passed[top] = True
    return _best(theta, np.where(passed, s.mean(axis=0), -np.inf))


def empirical_bayes(theta, s, strength) -> int:
    """Labelled means shrunk toward a line in Smoothie's prior fitted to them (slope >= 0), by the
    ratio of the between-generator spread left over to the labels' noise: a prior as strong as the
    data say it is (``strength`` scales the noise)."""
    theta = np.asarray(theta, float)
    m, s = len(theta), np.asarray(s, float).reshape(-1, len(theta))
    n, y, g = len(s), s.mean(axis=0), smoothie_prior(theta)
    resid = s - s.mean(axis=1, keepdims=True) - (y - y.mean())
    noise = (resid**2).sum() / ((n - 1) * (m - 1)) if n >= 2 else s.var() * m / (m - 1)
    x = np.stack([np.ones(m), g], axis=1)
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    fit = x @ (coef if coef[1] >= 0 else np.array([y.mean(), 0.0]))
    spread = max(0.0, ((y - fit) ** 2).sum() / max(m - 2, 1) - noise / n)
    w = spread / (spread + strength * noise / n) if spread + noise > 0 else 1.0
    return _best(theta, w * y + (1 - w) * fit)


def with_lead_noise(theta, s, params) -> int:
    """The shipped test with the no-variance-yet term scaled by c: se = sqrt((var + c mean^2 / n) / n).
    A second constant, to see whether the held-out choice stays put when it has two to choose."""
    alpha, c = params
    theta = np.asarray(theta, float)
    m, s = len(theta), np.asarray(s, float).reshape(-1, len(theta))
    prior, top = smoothie_prior(theta), int(np.argmax(theta))
    d = s - s[:, [top]]
    se = np.sqrt((d.var(axis=0) + c * d.mean(axis=0) ** 2 / len(s)) / len(s))
    return _best(theta, s.mean(axis=0) - critical_value(m, alpha) * se * (1 - prior))


def fading(theta, s, params) -> int:
    """The shipped test, its strength fading once labels accumulate: z * min(1, n0 / n). Up to n0
    labels Smoothie's prior guards its pick as the shipped rule does; beyond, a confidently wrong
    Smoothie (near-copies that agree with each other) can no longer hold the labels back."""
    alpha, n0 = params
    theta = np.asarray(theta, float)
    s = np.asarray(s, float).reshape(-1, len(theta))
    return pick(theta, s, alpha, fade_after=n0)


def _fixed(rule, param):
    return lambda theta, rows: int(np.argmax(theta)) if len(rows) == 0 else rule(theta, rows, param)


# name -> {constant: rule}; the first is the shipped rule
VARIANTS = {
    "shipped: paired test scaled by Smoothie's prior, fading after 3 labels (alpha)":
        {a: _fixed(lambda t, r, a: pick(t, r, a), a) for a in ALPHAS},
    "before: the same test at a fixed strength (alpha)":
        {a: _fixed(lambda t, r, a: pick(t, r, a, fade_after=None), a) for a in ALPHAS},
    "paired test, strength scaled by the labels' agreement with Smoothie's order (alpha, beta)":
        {(a, b): _fixed(agreement_scaled, (a, b)) for a in (0.01, 0.02, 0.05) for b in (-1, -0.5, 0.5, 1, 2)},
    "sign test, level scaled by Smoothie's prior (alpha)":
        {a: _fixed(sign_test, a) for a in (0.01, 0.02, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3)},
    "empirical Bayes: means shrunk toward Smoothie's order as far as the data say (strength)":
        {k: _fixed(empirical_bayes, k) for k in (0.5, 1, 2, 4, 8)},
    "paired test whose strength fades as z * min(1, n0 / n) (alpha, n0)":
        {(a, n0): _fixed(fading, (a, n0)) for a in (0.01, 0.02, 0.05) for n0 in (2, 3, 5, 8)},
    "paired test with a second constant, the lead's noise scale (alpha, c)":
        {(a, c): _fixed(with_lead_noise, (a, c)) for a in (0.005, 0.01, 0.02, 0.05, 0.1) for c in (1, 2, 4, 8, 16)},
}


def source_of(name: str) -> str:
    return next(s for key, s in SOURCES.items() if name.startswith(key))


# where near-copies are planted: one set per source (the first AlpacaEval ensemble stands for its six)
PLANT_IN = ("demo", "GSM8K", "WebNLG 2020 (16 systems)", "AlpacaEval without Qwen-14B-Chat")


def exact_sets(shared: Path, embedder) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, theta, quality scores, labels) for every set with exact labels, and each PLANT_IN
    set again with near-copies of a weak generator planted (Smoothie confidently wrong)."""
    sets = []
    sources = [demo] + ([gsm8k, webnlg, alpaca] if shared.is_dir() else [])
    for source in sources:
        for name, task, gens, scores, grade in source(shared):
            theta = route_generations(gens, k=None, task=task, embedder=embedder).weights[0]
            sets.append((name, theta, scores, scores))
            if name.startswith(PLANT_IN):
                pname, ptheta, pscores = planted(name, task, gens, scores, grade, embedder)
                sets.append((pname, ptheta, pscores, pscores))
    return sets


def all_sets(shared: Path, embedder) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, theta, quality scores, labels) for every set, planted condition and noisy-label condition."""
    sets = exact_sets(shared, embedder)
    for name, theta, scores, _ in list(sets):
        if name.startswith(("GSM8K", "demo")) and "planted" not in name:
            sets += [(f"{name}, {int(share * 100)}% labels flipped", theta, scores, flipped(scores, share))
                     for share in FLIPS]
    if shared.is_dir():
        gens, quality, labels = webnlg_one_reference(shared)
        theta = route_generations(gens, k=None, task="web_nlg", embedder=embedder).weights[0]
        sets.append(("WebNLG 2020, labels = ROUGE-2 vs one reference", theta, quality, labels))
    return sets


def regrets(sets, rule, draws: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(sets, len(NS)) relative regret r of a Labelled Smoothie rule on each set, and its shortfall
    below Best-on-Val(n) alone, (BoV - LS) / (best - random)."""
    out, below = np.empty((len(sets), len(NS))), np.empty((len(sets), len(NS)))
    for i, (_, theta, quality_scores, labels) in enumerate(sets):
        c = curves(quality_scores, theta, draws, seed=seed, labels=labels, rule=rule)
        quality = quality_scores.mean(axis=0)
        gap = max(float(quality.max() - quality.mean()), 1e-12)
        for j, n in enumerate(NS):
            envelope = max(c["bov"][:, j].mean(), c["sg"][:, j].mean()) if n else c["sg"][:, j].mean()
            out[i, j] = (envelope - c["ls"][:, j].mean()) / gap
            below[i, j] = (c["bov"][:, j].mean() - c["ls"][:, j].mean()) / gap
    return out, below


LABELLED = [j for j, n in enumerate(NS) if n >= 1]
MID = [NS.index(n) for n in (2, 5, 10)]
FEW = [j for j, n in enumerate(NS) if 1 <= n <= 5]
MANY = [j for j, n in enumerate(NS) if n >= 10]


def leave_one_source_out(names: list[str], r: dict) -> tuple[np.ndarray, dict]:
    """(held-out regret per set, constant chosen per left-out source): each source's sets are
    measured with the constant that, on the other sources' sets, has the smallest worst-case r
    (then the smallest mean r at n in {2, 5, 10})."""
    held = np.empty((len(names), len(NS)))
    chosen = {}
    for source in dict.fromkeys(source_of(n) for n in names):
        inside = [i for i, n in enumerate(names) if source_of(n) != source]
        chosen[source] = min(r, key=lambda a: (round(r[a][inside][:, LABELLED].max(), 6), r[a][inside][:, MID].mean()))
        for i, n in enumerate(names):
            if source_of(n) == source:
                held[i] = r[chosen[source]][i]
    return held, chosen


def held_out(names: list[str], values: dict, chosen: dict) -> np.ndarray:
    """Per set, ``values`` measured with the constant chosen without the set's source."""
    return np.stack([values[chosen[source_of(n)]][i] for i, n in enumerate(names)])


def holdout(args) -> None:
    """Leave one source out: the rule's constant is chosen (smallest worst-case r, then smallest
    mean r) on the sets of the other sources and measured on the left-out source's sets. The four
    sources (the demo, GSM8K, WebNLG, AlpacaEval) are left out whole, since the six AlpacaEval
    ensembles share five of their six models and the noisy-label conditions share their set's
    generations. The same is done for each variant in ``VARIANTS``."""
    shared = Path(args.shared)
    embedder = Embedder(args.embedding_model, show_progress=True)
    sets = all_sets(shared, embedder)
    names = [name for name, *_ in sets]
    measured = {v: {a: regrets(sets, rule, args.draws, args.seed) for a, rule in grid.items()}
                for v, grid in VARIANTS.items()}
    results = {v: {a: rb[0] for a, rb in grid.items()} for v, grid in measured.items()}
    below = {v: {a: rb[1] for a, rb in grid.items()} for v, grid in measured.items()}
    r = results[next(iter(VARIANTS))]
    held, chosen = leave_one_source_out(names, r)
    print(f"\nLabelled Smoothie, held out: leave one source out; embedder {args.embedding_model}; {args.draws} draws "
          f"per n, seed {args.seed}; alpha chosen from {ALPHAS}\n")
    print("| held-out set | alpha chosen on the other sources | worst r, n in 1..50, held out | worst r in-sample "
          f"(alpha {ALPHA}) | mean r at n in {{2, 5, 10}}, held out | in-sample |")
    print("|---|---|---|---|---|---|")
    for i, name in enumerate(names):
        print(f"| {name} | {chosen[source_of(name)]} | {held[i, LABELLED].max():.2f} | "
              f"{r[ALPHA][i, LABELLED].max():.2f} | {held[i, MID].mean():+.3f} | {r[ALPHA][i, MID].mean():+.3f} |")
    print("\n| held-out set | r at n = " + ", ".join(str(NS[j]) for j in LABELLED) + " (held out) |")
    print("|---|---|")
    for i, name in enumerate(names):
        print(f"| {name} | " + ", ".join(f"{held[i, j]:.2f}" for j in LABELLED) + " |")
    print(f"\n| summary over sets | held out | in-sample (alpha {ALPHA}) | goal |")
    print("|---|---|---|---|")
    worst = int(np.argmax(held[:, LABELLED].max(axis=1)))
    print(f"| worst-case r, n in 1..50 | {held[:, LABELLED].max():.2f} ({names[worst]}) | "
          f"{r[ALPHA][:, LABELLED].max():.2f} | <= 0.15 |")
    print(f"| mean r at n in {{2, 5, 10}} | {held[:, MID].mean():+.3f} | {r[ALPHA][:, MID].mean():+.3f} | <= 0.03 |")
    print("\n| alpha | worst-case r over all sets | mean r at n in {2, 5, 10} |")
    print("|---|---|---|")
    for a in ALPHAS:
        print(f"| {a} | {r[a][:, LABELLED].max():.2f} | {r[a][:, MID].mean():+.3f} |")
    print("\nVariants in which the labelled rows decide how far to trust Smoothie, each with its constants chosen the "
          "same way (leave one source out):\n")
    print("| rule | constants chosen (demo, GSM8K, WebNLG, AlpacaEval left out) | worst r held out | worst r at "
          "n <= 5, held out | worst (BoV - LS) / gap at n >= 10, held out (goal <= 0.05) | mean r at n in "
          "{2, 5, 10}, held out | best worst r in-sample (its constant) |")
    print("|---|---|---|---|---|---|---|")
    for variant, rv in results.items():
        hv, cv = leave_one_source_out(names, rv)
        hb = held_out(names, below[variant], cv)
        best = min(rv, key=lambda a: rv[a][:, LABELLED].max())
        worst_set = names[int(np.argmax(hv[:, LABELLED].max(axis=1)))]
        worst_many = names[int(np.argmax(hb[:, MANY].max(axis=1)))]
        print(f"| {variant} | {', '.join(str(c) for c in cv.values())} | {hv[:, LABELLED].max():.2f} ({worst_set}) | "
              f"{hv[:, FEW].max():.2f} | {hb[:, MANY].max():.3f} ({worst_many}) | "
              f"{hv[:, MID].mean():+.3f} | {rv[best][:, LABELLED].max():.2f} ({best}) |")
    print("\nPer set, held out: (BoV - LS) / gap at n = 10, 20, 50 for each rule, constants as chosen above\n")
    print("| set | " + " | ".join(v.split(":")[0].split(" (")[0] for v in results) + " |")
    print("|---|" + "---|" * len(results))
    chosen_of = {v: leave_one_source_out(names, rv)[1] for v, rv in results.items()}
    held_b = {v: held_out(names, below[v], chosen_of[v]) for v in results}
    for i, name in enumerate(names):
        print(f"| {name} | " + " | ".join(", ".join(f"{held_b[v][i, j]:+.2f}" for j in MANY) for v in results) + " |")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    cols = 3
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    x = np.arange(len(NS))
    for ax, name in zip(axes.ravel(), names):
        c, best, rand = results[name]
        for key, label, style in (("bov", "Best-on-Val(n)", "o-"), ("ls", "Labelled Smoothie(n)", "s-"),
                                  ("sg", "Smoothie-Global", "--"), ("random", "random", ":")):
            mean = c[key].mean(axis=0)
            se = c[key].std(axis=0, ddof=1) / np.sqrt(len(c[key]))
            ax.errorbar(x, mean, yerr=se, fmt=style, label=label, capsize=2, markersize=3)
        ax.axhline(best, color="grey", linewidth=0.6)
        ax.set_xticks(x, [str(n) for n in NS])
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("labelled rows n")
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
