"""Labelled Smoothie: the rule on arrays, and the command through the pipeline on the SmolLM2 tree."""

from __future__ import annotations

import json
import shutil

import numpy as np
from conftest import minilm, run_cli

from src import labeled_smoothie, report, run_smoothie
from src.evaluate import evaluate
from src.methods.labeled_smoothie import combine, critical_value, paired_standard_errors, pick, smoothie_prior
from src.methods.labeled_smoothie import labeled_smoothie as labeled_smoothie_on_arrays
from src.smoothie import smoothie_weights


def _planted_outlier(n_rows: int = 400, seed: int = 0):
    """Four weak generators share a common error (they agree with each other, so Smoothie trusts
    them); generator 4 is closest to the truth but alone. Its labelled scores are the best.
    (With 0/1 labels the rule needs more rows to overturn Smoothie: tutorials/algorithm.ipynb, section 8.)"""
    rng = np.random.default_rng(seed)
    d = 64
    truth = rng.standard_normal((n_rows, d))
    shared = 1.5 * rng.standard_normal((n_rows, d))
    emb = np.empty((n_rows, 5, d))
    for j in range(4):
        emb[:, j] = truth + shared + 0.5 * rng.standard_normal((n_rows, d))
    emb[:, 4] = truth + 1.0 * rng.standard_normal((n_rows, d))
    # graded scores (a ROUGE-like metric): the outlier's mean is 0.7, the crowd's 0.3 to 0.35
    scores = np.clip(np.array([0.3, 0.35, 0.3, 0.3, 0.7]) + 0.15 * rng.standard_normal((n_rows, 5)), 0, 1)
    return emb, scores


def test_planted_outlier_recovered_with_five_labels():
    emb, scores = _planted_outlier()
    theta = smoothie_weights(emb, k=None)[0]
    assert theta.argmax() != 4 and theta.argmin() == 4  # agreement alone ranks the outlier last
    rng = np.random.default_rng(1)
    draws = [scores[rng.choice(len(scores), 5, replace=False)] for _ in range(1000)]
    assert [labeled_smoothie_on_arrays(emb, s) for s in draws[:20]] == [pick(theta, s) for s in draws[:20]]
    # Smoothie ranks the outlier last, so its lead must pass the whole Bonferroni test at 2%: about 2 draws
    # in 3 with 5 labels (the SE of this rate over 1000 draws is 0.015; the 5% level of earlier releases
    # switched in 4 of 5, and lost more where noisy labels talk it out of a right pick), nearly all with 10
    assert np.mean([pick(theta, s) == 4 for s in draws]) >= 0.6
    assert np.mean([pick(theta, s, alpha=0.05) == 4 for s in draws]) > np.mean([pick(theta, s) == 4 for s in draws])
    assert np.mean([pick(theta, scores[rng.choice(len(scores), 10, replace=False)]) == 4 for _ in range(300)]) >= 0.95
    # and where Smoothie is right, five labels rarely move it
    top = int(theta.argmax())
    strong_first = scores.copy()
    strong_first[:, [top, 4]] = scores[:, [4, top]]
    kept = [pick(theta, strong_first[rng.choice(len(scores), 5, replace=False)]) == top for _ in range(100)]
    assert np.mean(kept) >= 0.9


def test_rule_edges():
    theta = np.array([0.1, 0.5, 0.2, 0.2])
    prior = smoothie_prior(theta)
    assert prior[1] == 1.0 and prior[0] == 0.0 and prior[2] == prior[3] == 0.25  # theta rescaled to [0, 1]
    # no labels: Smoothie-Global's pick; identical labelled scores: Smoothie's order decides
    assert pick(theta, np.zeros((0, 4))) == 1
    assert pick(theta, np.ones((3, 4))) == 1
    np.testing.assert_array_equal(combine(theta, np.zeros((0, 4))), prior)
    # overwhelming labels win: 20 rows where generator 0 is right and the others are wrong
    labels = np.zeros((20, 4))
    labels[:, 0] = 1
    assert pick(theta, labels) == 0


def test_challenger_must_pass_a_bonferroni_paired_test():
    """A generator Smoothie ranks last (prior 0) replaces its pick only when its lead passes the
    whole one-sided 2% test, Bonferroni-corrected over 3 challengers: z = 2.475 for 4 generators."""
    from scipy.stats import norm

    assert np.isclose(critical_value(4), norm.isf(0.02 / 3)) and np.isclose(critical_value(16), norm.isf(0.02 / 15))
    assert critical_value(16) > critical_value(4)  # more challengers, more luck to guard against
    theta = np.array([0.4, 0.3, 0.2, 0.1])  # generator 0 is Smoothie's pick, 3 its last
    for n, switches in ((1, False), (2, False), (3, True)):
        labels = np.zeros((n, 4))
        labels[:, 3] = 1  # generator 3 right on every row, the others wrong: lead 1, no variance
        np.testing.assert_allclose(paired_standard_errors(labels, 0), [0, 0, 0, 1 / n])
        # se = sqrt((0 + 1 / n) / n) = 1 / n, so z = n: 1 and 2 fail the test, 3 passes it
        assert (pick(theta, labels) == 3) is switches
    # with variance: leads 1, 1, 0, 1 on four rows: mean 0.75, var 0.1875, z = 0.75 / sqrt((0.1875 + 0.75^2 / 4) / 4)
    labels = np.zeros((4, 4))
    labels[[0, 1, 3], 3] = 1
    np.testing.assert_allclose(paired_standard_errors(labels, 0)[3], np.sqrt((0.1875 + 0.140625) / 4))
    assert pick(theta, labels) == 3  # z = 2.62 > 2.475
    # leads 1, 0, 0, 1: z = 0.5 / sqrt((0.25 + 0.0625) / 4) = 1.79 fails the whole test (Smoothie's last) ...
    labels[1, 3] = 0
    assert pick(theta, labels) == 0
    # ... but passes the test scaled by 1 - prior for a challenger Smoothie ranks half-way (threshold 1.24)
    assert pick(np.array([0.4, 0.3, 0.1, 0.25]), labels) == 3
    # a challenger Smoothie ranks just below its pick (prior 1 - 1e-3) needs only to lead
    theta = np.array([0.4, 0.4 - 3e-4, 0.2, 0.1])
    labels = np.zeros((1, 4))
    labels[0, 1] = 1
    assert pick(theta, labels) == 1


def _copy(tree, tmp_path):
    root = tmp_path / "t"
    shutil.copytree(tree.results, root / "results",
                    ignore=lambda d, names: [n for n in names if n.startswith(("labeled_", "smoothie_", "scores"))])
    shutil.copytree(tree.data_dir, root / "data")
    return tree._replace(results=root / "results", data_dir=root / "data")


def test_command_file_format_n0_and_seeds(smol_tree, tmp_path, capsys):
    tree = _copy(smol_tree, tmp_path)
    emb = ["--embedding_model", minilm()]
    code, out, err = run_cli(labeled_smoothie.main, tree.setting_args("--n_labels", 5, *emb), capsys)
    assert code == 0, err
    path = tree.folder / "labeled_smoothie_prompts_5_test.json"
    data = json.loads(path.read_text())
    assert len(data["generations"]) == 10 and all(len(t) == tree.n_test for t in data["generations"])
    assert np.array(data["labeled_train_rows"]).shape == (10, 5)
    assert all(len(set(rows)) == 5 and max(rows) < tree.n_train for rows in data["labeled_train_rows"])
    assert data["generators"] == tree.generators and "manifest" in data
    for trial, chosen in zip(data["selected"], data["generations"]):
        assert len(set(trial)) == 1  # one generator per trial, every row
        texts = json.loads((tree.folder / f"{tree.generators[trial[0]]}_test.json").read_text())["generations"]
        assert chosen == texts

    # reproducible for a seed, another seed labels other rows
    first = path.read_bytes()
    assert run_cli(labeled_smoothie.main, tree.setting_args("--n_labels", 5, "--redo", *emb), capsys)[0] == 0
    assert path.read_bytes() == first
    assert run_cli(labeled_smoothie.main, tree.setting_args("--n_labels", 5, "--seed", 7, "--redo", *emb),
                   capsys)[0] == 0
    assert json.loads(path.read_text())["labeled_train_rows"] != data["labeled_train_rows"]

    # n = 0 is Smoothie-Global's pick
    assert run_cli(labeled_smoothie.main, tree.setting_args("--n_labels", 0, *emb), capsys)[0] == 0
    zero = json.loads((tree.folder / "labeled_smoothie_prompts_0_test.json").read_text())
    assert run_cli(run_smoothie.main, tree.setting_args("--type", "sample_independent", *emb), capsys)[0] == 0
    sg = next(tree.folder.glob("smoothie_sample_independent*_test.json"))
    assert all(trial == json.loads(sg.read_text())["selected"] for trial in zero["selected"])

    # evaluate scores both variants, and the report table names them
    code, out, err = run_cli(evaluate.main, tree.setting_args(), capsys)
    assert code == 0, err
    scores = json.loads((tree.folder / "scores.json").read_text())
    entry = next(iter(scores.values()))
    assert {"labeled_smoothie_0", "labeled_smoothie_5"} <= set(entry)
    assert entry["labeled_smoothie_0"] == entry["smoothie"][sg.name[: -len("_test.json")]]
    assert "Labelled Smoothie (a few labels), n=5" in out
    code, _, err = run_cli(report.main, tree.setting_args("--output", tmp_path / "report.md"), capsys)
    assert code == 0, err
    text = (tmp_path / "report.md").read_text()
    assert "Labelled Smoothie (a few labels), n=0" in text and "Labelled Smoothie (a few labels), n=5" in text
    code, _, err = run_cli(labeled_smoothie.main, tree.setting_args("--n_labels", -1), capsys)
    assert code == 2 and "--n_labels" in err


def test_a_stricter_level_is_recorded_and_a_bad_one_refused(smol_tree, tmp_path, capsys):
    tree = _copy(smol_tree, tmp_path)
    emb = ["--embedding_model", minilm()]
    code, _, err = run_cli(labeled_smoothie.main, tree.setting_args("--n_labels", 5, "--alpha", "0.01", *emb), capsys)
    assert code == 0, err
    data = json.loads(next(tree.folder.glob("labeled_smoothie_*_5_test.json")).read_text())
    assert data["alpha"] == 0.01 and data["manifest"]["settings"]["alpha"] == 0.01
    for bad in ("0", "0.7", "x"):
        code, _, err = run_cli(labeled_smoothie.main, tree.setting_args("--n_labels", 5, "--alpha", bad), capsys)
        assert code == 2 and "--alpha" in err
