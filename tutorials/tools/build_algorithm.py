"""Write tutorials/algorithm.ipynb from the cells below (no outputs); then run tools/execute.py on it."""

import nbformat as nbf

nb = nbf.v4.new_notebook()
md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
cells = [
md("""# How Smoothie works, and a check by simulation

Smoothie (Guha et al., NeurIPS 2024) picks among the outputs of several generators with **no labels**. This notebook derives
its estimator in plain words, shows the closed form this project uses, and checks by simulation that it recovers the truth
when its assumptions hold: how the estimate behaves as the number of samples $n$, the number of generators $m$ and the
noise grow."""),
code("""import os, sys
from pathlib import Path
ROOT = Path.cwd() if (Path.cwd() / "src").is_dir() else Path.cwd().parent
os.chdir(ROOT); sys.path.insert(0, str(ROOT))
os.environ["TQDM_DISABLE"] = "1"  # no progress bars in the saved notebook
import warnings
from itertools import combinations
import numpy as np
import matplotlib.pyplot as plt
%matplotlib inline
from src.smoothie import Smoothie, smoothie_weights, SmoothieWarning
warnings.simplefilter("ignore", SmoothieWarning)
print("ready")"""),
md(r"""## 1. The model

Embed every generation with a sentence embedder: generator $i$'s output for a sample becomes a vector $\lambda_i \in \mathbb{R}^d$.
Smoothie treats each $\lambda_i$ as a noisy copy of the embedding $y$ of an unknown true answer:

$$\lambda_i = y + \varepsilon_i, \qquad \varepsilon_i \sim \mathcal{N}\!\left(0, \tfrac{1}{2\theta_i} I_d\right), \quad \text{independent across generators.}$$

A large $\theta_i$ means little noise: generator $i$ sits close to the truth. The expected squared error of generator $i$ is
$$\delta_i = \mathbb{E}\,\lVert \lambda_i - y \rVert^2 = \frac{d}{2\theta_i}, \qquad\text{so}\qquad \theta_i = \frac{d}{2\delta_i}.$$

If we knew each $\delta_i$ we could rank the generators. But $y$ is unknown: no labels."""),
md(r"""## 2. The triplet identity: errors without the truth

Because the noises are independent and centred, the cross term vanishes in expectation:
$$\mathbb{E}\lVert \lambda_i - \lambda_j \rVert^2 = \mathbb{E}\lVert \varepsilon_i - \varepsilon_j \rVert^2 = \delta_i + \delta_j .$$
Three generators give three such equations in three unknowns, and solving them:
$$\delta_i = \tfrac12\left(D_{ij} + D_{ik} - D_{jk}\right), \qquad D_{ij} = \mathbb{E}\lVert \lambda_i - \lambda_j\rVert^2 .$$
Every quantity on the right is observable. Smoothie estimates each $D_{ij}$ by the mean over a set of samples $S$
(all test samples for **Smoothie-Global**; a sample's $k$ nearest neighbours by input embedding for **Smoothie-Local**),
averages the triplet estimate over every pair $\{j,k\}$ of the other generators, sets $\theta_i = d/(2\delta_i)$ and
normalises the $\theta$s to sum to one. The route picks $\arg\max_i \theta_i$."""),
md(r"""## 3. A closed form: no loop over triplets

With $R_i = \sum_j D_{ij}$ and $T = \sum_i R_i$, the pair average has a closed form. Each other generator $j$ appears in $m-2$
of the $\binom{m-1}{2}$ pairs, and the $D_{jk}$ of pairs that avoid $i$ sum to $T/2 - R_i$, so
$$\delta_i = \frac{(m-1)\,R_i - T/2}{(m-1)(m-2)} .$$
And $R_i$ needs no $m\times m$ matrix either: per sample, $\sum_j \lVert\lambda_i-\lambda_j\rVert^2 = m\lVert\lambda_i\rVert^2 + \sum_j\lVert\lambda_j\rVert^2 - 2\langle \lambda_i, \sum_j \lambda_j\rangle$.
`src/smoothie.py` computes exactly this. Let's check it against the literal triplet loop:"""),
code("""def theta_by_definition(rows):
    rows = np.asarray(rows, dtype=np.float64)
    _, m, d = rows.shape
    D = lambda i, j: (np.linalg.norm(rows[:, i] - rows[:, j], axis=1) ** 2).mean()
    delta = np.array([np.mean([0.5 * (D(i, j) + D(i, k) - D(j, k))
                               for j, k in combinations([x for x in range(m) if x != i], 2)]) for i in range(m)])
    theta = d / (2 * delta)
    return theta / theta.sum()

rng = np.random.default_rng(0)
lam = rng.normal(size=(200, 6, 16)) * rng.uniform(0.5, 2, size=(1, 6, 1))
print("closed form :", np.round(Smoothie().fit(lam).theta_, 6))
print("definition  :", np.round(theta_by_definition(lam), 6))
print("max relative difference:", np.max(np.abs(Smoothie().fit(lam).theta_ / theta_by_definition(lam) - 1)))"""),
md("""## 4. Does it recover the truth?

Simulate the model exactly: a true embedding per sample, and generators with known noise levels. The true normalised
$\\theta$ is proportional to $1/\\sigma_i^2$."""),
code("""def simulate(n, m, d=10, spread=(0.4, 1.6), seed=0):
    rng = np.random.default_rng(seed)
    sigma = np.linspace(*spread, m)[rng.permutation(m)]
    y = rng.normal(size=(n, 1, d))
    lam = y + sigma[None, :, None] * rng.normal(size=(n, m, d))
    true = (1 / sigma**2) / (1 / sigma**2).sum()
    return lam, true

lam, true = simulate(n=5000, m=5)
est = Smoothie().fit(lam).theta_
print("true theta     :", np.round(true, 4))
print("estimated theta:", np.round(est, 4))
print("ranking agrees :", list(np.argsort(est)) == list(np.argsort(true)))"""),
md("""## 5. How the error shrinks with $n$, and what $m$ and the noise do

Relative error of the estimated $\\theta$ (averaged over 20 seeds) as the number of samples grows, for a few ensemble
sizes. More samples help as $1/\\sqrt{n}$; Smoothie-Local with $k=1$ is the extreme $n=1$, which is why it is noisy and why
larger neighbourhoods trade locality for precision."""),
code("""ns = [1, 3, 10, 30, 100, 300, 1000, 3000]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
for m in (3, 5, 10):
    errs = []
    for n in ns:
        e = []
        for seed in range(20):
            lam, true = simulate(n, m, seed=seed)
            est = Smoothie().fit(lam).theta_
            e.append(np.abs(est - true).sum() / 2)  # total-variation distance between weight vectors
        errs.append(np.mean(e))
    axes[0].loglog(ns, errs, marker="o", label=f"m = {m}")
axes[0].set_xlabel("samples n"); axes[0].set_ylabel("TV distance to true theta"); axes[0].legend()
axes[0].set_title("More samples, better estimates")

spreads = [0.05, 0.1, 0.2, 0.4, 0.8]
for n in (10, 100, 1000):
    acc = []
    for s in spreads:
        hits = []
        for seed in range(40):
            lam, true = simulate(n, 5, spread=(1.0, 1.0 + s), seed=seed)
            hits.append(Smoothie().fit(lam).theta_.argmax() == true.argmax())
        acc.append(np.mean(hits))
    axes[1].semilogx(spreads, acc, marker="o", label=f"n = {n}")
axes[1].set_xlabel("spread of noise levels (max/min - 1)"); axes[1].set_ylabel("picks the best generator")
axes[1].set_title("Closer generators are harder to tell apart"); axes[1].legend()
fig.tight_layout(); plt.show()
print("done")"""),
md("""## 6. Where the model bends: real embeddings

Real sentence embeddings live on the unit sphere and their errors are neither Gaussian nor independent (generators share
mistakes). Then the triplet estimate can come out **non-positive**. The paper's code keeps the formula anyway, so a
negative $\\delta$ gives a negative weight; this project does the same by default (parity), warns once with the number of
rows, and turns exact zeros and non-finite values into finite weights (see the docstring of `src/smoothie.py`). With
`on_invalid="argmin"` those rows instead go to the generator with the smallest $\\delta$."""),
code("""lam = rng.normal(size=(1, 3, 8)); lam[0, 2] = lam[0, 0] + 0.01  # two near-identical generators
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    print("parity :", np.round(smoothie_weights(lam, k=1, input_embeddings=np.zeros((1, 1))), 3))
    print("argmin :", np.round(smoothie_weights(lam, k=1, input_embeddings=np.zeros((1, 1)), on_invalid="argmin"), 3))
print(w[0].message)"""),
md(r"""## 7. Smoothie-Local with $k=1$ is a consensus vote

For a single sample, $\delta_i$ is an increasing function of $r_i = \sum_j \lVert\lambda_i - \lambda_j\rVert^2$, so
whenever every $\delta_i$ is positive, $\arg\max\theta$ is the generation with the smallest summed squared distance to the
others. For unit-norm embeddings that is the one with the largest summed cosine similarity: minimum-Bayes-risk selection.
The check below confirms it; on the real GSM8K run in the README the two methods pick the same answers. Smoothie's
own contribution shows with larger neighbourhoods and in Smoothie-Global, which pool agreement across samples into a
per-generator quality estimate."""),
code("""from src.methods.mbr import mbr_cosine
x = rng.normal(size=(500, 5, 32)); x /= np.linalg.norm(x, axis=-1, keepdims=True)
delta_ok = np.ones(500, bool)
from src.smoothie import row_distance_sums, deltas_from_row_sums
delta_ok = (deltas_from_row_sums(row_distance_sums(x)) > 0).all(axis=1)
local = smoothie_weights(x, np.zeros((500, 1)), k=1).argmax(axis=1)
print(f"rows with all deltas positive: {delta_ok.sum()}; same pick as MBR on them: {(local == mbr_cosine(x))[delta_ok].mean():.3f}")"""),
md(r"""## 8. A handful of labels: Labelled Smoothie

Section 7's lesson cuts both ways: Smoothie trusts agreement. When one strong generator stands apart from several
similar weaker ones, agreement points at the crowd and Smoothie-Global ranks the strong one **last**. A few labelled
rows can fix that, but Best-on-Val with $n$ labels is noisy at small $n$. `src.methods.labeled_smoothie` combines the
two. Smoothie's pick $t$ is the incumbent and every other generator $j$ a challenger; generator $j$ scores

$$\bar s_j - z_m \cdot \mathrm{se}_j \cdot (1 - p_j), \qquad
\mathrm{se}_j = \sqrt{\frac{\operatorname{var}(d) + \bar d^{\,2}/n}{n}}, \quad d_r = s_{rj} - s_{rt},$$

where $\bar s_j$ is its mean labelled score, $p_j \in [0, 1]$ Smoothie-Global's $\theta_j$ rescaled (its pick 1, its
last 0) and $z_m$ the one-sided critical value of a paired test at 2%, Bonferroni-corrected over the $m - 1$
challengers (2.47 for 4 generators, 3.00 for 16). So a challenger replaces Smoothie's pick only if its lead passes that
test, scaled by how far below its pick Smoothie ranks it: one Smoothie ranks last must pass all of it, one Smoothie can
hardly tell from its pick needs only to lead. The correction grows with $m$ because among 16 generators one beats the
pick on a row or two by luck far more often than among 4. The standard error is the pair's own: two prompts of one model
that agree on most rows are told apart by a few disagreements. With one row there is no variance to measure, so the lead
itself stands in for the noise and a single row never suffices; with more rows the measured variance takes over. Past
three labels the test fades, $z_m$ times $\min(1, 3/n)$, so the labels decide sooner than $1/\sqrt{n}$ alone would let
them: a Smoothie that is confidently wrong cannot hold ten labels back. With no labels the rule is Smoothie-Global. Below, a planted outlier:
four generators share a common error, one is alone but closest to the truth and scores best."""),
code("""from src.methods.labeled_smoothie import critical_value, pick
rng = np.random.default_rng(0)
N, d = 400, 64
truth = rng.normal(size=(N, d)); shared = 1.5 * rng.normal(size=(N, d))
lam = np.stack([truth + shared + 0.5 * rng.normal(size=(N, d)) for _ in range(4)]
               + [truth + rng.normal(size=(N, d))], axis=1)
accuracy = np.array([0.3, 0.35, 0.3, 0.3, 0.7])
scores = (rng.random((N, 5)) < accuracy).astype(float)
theta = smoothie_weights(lam, k=None)[0]
print("Smoothie-Global ranks the generators:", np.argsort(-theta), "(4 is the strong one)")
print(f"critical value for m = 5 generators: {critical_value(5):.2f}")
for n in (1, 2, 5, 10, 20):
    bov, ls = [], []
    for _ in range(400):
        rows = rng.choice(N, n, replace=False)
        means = scores[rows].mean(axis=0)
        best = np.flatnonzero(means == means.max())
        bov.append(accuracy[best].mean()); ls.append(accuracy[pick(theta, scores[rows])])
    print(f"n = {n:2d}: expected accuracy  Best-on-Val {np.mean(bov):.3f}   Labelled Smoothie {np.mean(ls):.3f}"
          f"   (Smoothie-Global {accuracy[theta.argmax()]:.2f})")"""),
md("""This planted case is the hard one for the rule: 0/1 labels, a strong generator that Smoothie confidently ranks last,
and a crowd whose thetas are all near the top. Labelled Smoothie stays with Smoothie for one or two labels, where
Best-on-Val gains from the first; with the test fading past three labels it switches in about a third of the draws at
5 labels, two thirds at 10 and nearly all at 20 (a fixed-strength test switched in about a third at 20). Where Smoothie
is right (GSM8K, WebNLG in the README), the test keeps one or two unlucky labels from talking it out of its pick, and
there Best-on-Val with 1 or 2 labels loses most of the gap. `benchmarks/label_curve.py` measures both effects on real
data, with near-copies of a weak generator planted to make Smoothie confidently wrong (docs/results.md, "Labelled
Smoothie")."""),
]
nb["cells"] = cells
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, "tutorials/algorithm.ipynb")
