"""Smoothie with a handful of labels: label-free estimates as a prior, a few labelled scores as evidence.

Smoothie-Global ranks generators by agreement alone. It is right when the best generator is the
one the others cluster around (GSM8K: its pick is the best system) and wrong when the best one
stands apart from similar weaker ones (AlpacaEval ensembles with one strong model). Best-on-Val
with n labels is unbiased but noisy at small n. Neither knows which case a new data set is,
and with one or two labels nothing can tell. So the rule here is built for robustness, judged
as regret against the better of the two (``benchmarks/label_curve.py``). Smoothie's pick is the
incumbent, and each other generator j is a challenger:

    pick = argmax_j  mean_j - z * se_j * (1 - prior_j)

``mean_j`` is generator j's mean labelled score (Best-on-Val's statistic). ``se_j`` is the standard
error of j's lead over Smoothie's pick on the same n rows, from the paired differences
d_r = s_rj - s_r,pick: sqrt((var(d) + mean(d)^2 / n) / n). With one row there is no variance to
measure, so the lead itself stands in for the noise and one row never proves anything (z <= 1);
with more rows the measured variance takes over, so a lead that holds on every row is believed. ``z`` is the
one-sided critical value of a paired test at level ALPHA = 0.02, Bonferroni-corrected over the m - 1 challengers
(2.47 for 4 generators, 3.00 for 16): among 16 generators one beats Smoothie's pick on a row or two by luck
far more often than among 4, the winner's curse that makes Best-on-Val with one label poor on
WebNLG's 16 systems. ``prior_j`` is Smoothie-Global's theta rescaled to [0, 1] (its pick 1, its
last 0), so the test is scaled by how far below its pick Smoothie ranks the challenger: one
Smoothie ranks last must pass the whole test, one Smoothie can hardly tell from its pick needs
only to lead. The pair's own standard error matters: generators that agree on most rows (two
prompts of one model) are told apart by few disagreements, while systems that differ on many rows
need more of them. As labels accumulate, se shrinks as 1/sqrt(n) and the labels take over, as
they should. With no labels (n = 0) the rule is Smoothie-Global; with identical labelled scores
it keeps Smoothie's order.

The test's strength fades once labels accumulate: z is multiplied by min(1, FADE_AFTER / n)
with FADE_AFTER = 3, so up to three labels the rule is as above, and from there the labels take
over faster than 1/sqrt(n) alone would let them: a Smoothie that is confidently wrong (copies of
one weak generator agreeing with each other) cannot hold ten labels back.

ALPHA is the level, the same for every data set. It is 2% because that is the level chosen when
it is fitted on some sources of data and measured on another (``benchmarks/label_curve.py --holdout``,
leave one source out, labels exact and noisy): 1% or 2% in every fold, never the textbook 5%, which
lets noisy labels talk the rule out of a right pick more often (worst regret 0.35 against 0.26).
How the rule was chosen, what other constants and rules gave, and the variants in which the labels
decide how far to trust Smoothie, are in docs/results.md ("Labelled Smoothie").
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from src.smoothie import smoothie_weights

ALPHA = 0.02
# Beyond FADE_AFTER labelled rows the test's strength fades as FADE_AFTER / n: where Smoothie is
# confidently wrong (near-copies of a weak generator agree with each other), a fixed-strength test
# kept its pick against 10 labels that plainly disagreed (0.23 of the best-minus-random gap below
# Best-on-Val, held out); fading keeps every held-out condition within 0.05 at n >= 10 and leaves
# n <= 3 as it was (benchmarks/label_curve.py --holdout, docs/results.md).
FADE_AFTER: float | None = 3


def smoothie_prior(theta: np.ndarray) -> np.ndarray:
    """Smoothie's estimates as a prior in [0, 1]: theta rescaled so its pick is 1 and its last 0.

    Why theta's values and not its ranks: where Smoothie barely separates its top generators
    (thetas within a few percent), the labels should decide among them quickly; where its pick
    stands clear of the rest, overturning it should take more evidence.
    """
    theta = np.asarray(theta, dtype=np.float64)
    spread = theta.max() - theta.min()
    if not np.isfinite(spread) or spread <= 0:
        return np.ones_like(theta)  # Smoothie cannot tell them apart: the labels alone decide
    return (theta - theta.min()) / spread


def critical_value(m: int, alpha: float = ALPHA) -> float:
    """One-sided z of a paired test of each of the m - 1 challengers against Smoothie's pick,
    Bonferroni-corrected so that all of them together switch by luck with probability <= alpha."""
    if m < 2:
        return 0.0
    return NormalDist().inv_cdf(1.0 - alpha / (m - 1))


def paired_standard_errors(label_scores: np.ndarray, incumbent: int) -> np.ndarray:
    """Per generator j, the standard error of its mean lead over the incumbent on the same rows,
    from the paired differences d = s_j - s_incumbent: sqrt((var(d) + mean(d)^2 / n) / n);
    0 for the incumbent itself. The mean(d)^2 / n term is the noise scale where the rows give no
    variance yet (n = 1, or a lead on two rows of 0/1 labels); it fades as n grows."""
    s = np.asarray(label_scores, dtype=np.float64)
    n = len(s)
    if n == 0:
        return np.zeros(s.shape[1])
    d = s - s[:, [incumbent]]
    return np.sqrt((d.var(axis=0) + d.mean(axis=0) ** 2 / n) / n)


def combine(theta: np.ndarray, label_scores: np.ndarray, alpha: float = ALPHA,
            fade_after: float | None = FADE_AFTER) -> np.ndarray:
    """The rule's score per generator (higher is better) from Smoothie-Global's theta (m,) and the
    labelled rows' scores (n, m), higher better. The pick is its argmax; ties go to Smoothie's order.
    With no labelled rows the score is the prior itself, so the pick is Smoothie-Global's."""
    prior = smoothie_prior(theta)
    s = np.asarray(label_scores, dtype=np.float64).reshape(-1, len(prior))
    if len(s) == 0:
        return prior
    se = paired_standard_errors(s, int(np.argmax(theta)))
    z = critical_value(len(prior), alpha) * (min(1.0, fade_after / len(s)) if fade_after else 1.0)
    return s.mean(axis=0) - z * se * (1.0 - prior)


def pick(theta: np.ndarray, label_scores: np.ndarray, alpha: float = ALPHA,
         fade_after: float | None = FADE_AFTER) -> int:
    """The selected generator; among equal scores, the one Smoothie ranks higher."""
    score = combine(theta, label_scores, alpha, fade_after)
    best = np.flatnonzero(score >= score.max() - 1e-12)
    return int(best[np.argmax(np.asarray(theta)[best])])


def labeled_smoothie(embeddings: np.ndarray, label_scores: np.ndarray, alpha: float = ALPHA,
                     on_invalid: str = "parity") -> int:
    """One generator for every row, from the generations' embeddings (N, m, d) or (N, n, m, d), on
    which Smoothie-Global estimates its errors with no labels, and the scores (n_labels, m) of the
    labelled rows, higher better. Usable outside the pipeline on arrays alone."""
    theta = smoothie_weights(embeddings, k=None, on_invalid=on_invalid)[0]
    return pick(theta, label_scores, alpha)


def labeled_smoothie_trials(theta: np.ndarray, train_scores: np.ndarray, n_test: int, n_labels: int,
                            n_trials: int = 10, seed: int = 42,
                            alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """(picks (trials, N), labelled train rows (trials, n)): each trial draws ``n_labels`` train rows
    (seeded) and routes every test row to :func:`pick`'s generator. ``train_scores`` must be
    oriented higher-is-better."""
    rng = np.random.default_rng(seed)
    n = min(n_labels, len(train_scores))
    picks = np.empty((n_trials, n_test), dtype=int)
    draws = np.empty((n_trials, n), dtype=int)
    for t in range(n_trials):
        draws[t] = draw = rng.choice(len(train_scores), size=n, replace=False)
        picks[t] = pick(theta, train_scores[draw], alpha)
    return picks, draws
