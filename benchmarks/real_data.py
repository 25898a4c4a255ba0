"""The whole routing pipeline on real systems' outputs from ../shared/data, at full size.

GSM8K (four OpenAI systems, 1,319 problems) and WebNLG 2020 (16 submitted systems, 1,779
entries) ship a test split only, so the first rows become the labelled train split that
Best-on-Val and labelled kNN draw from, and everything is scored on the rest:

    python benchmarks/real_data.py [--embedding_model all-MiniLM-L6-v2] [--out /tmp/real]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from shared_trees import real_tree  # noqa: E402

from src import labeled_knn, labeled_oracle, mbr_baseline, pick_random_baseline, run_smoothie  # noqa: E402
from src.evaluate import evaluate  # noqa: E402

DATASETS = {  # source folder: (config stem, task, metric, group, train rows, test rows)
    "gsm8k_solutions": ("gsm8k_solutions", "gsm8k", "gsm8k_acc", "openai", 319, 1000),
    "webnlg2020": ("webnlg2020", "web_nlg", "rouge2", "teams", 279, 1500),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shared", default=os.environ.get("SMOOTHIE_SHARED_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--out", default="/tmp/smoothie_real_data")
    ap.add_argument("--embedding_model", default="all-MiniLM-L6-v2")
    ap.add_argument("--only", nargs="*", default=list(DATASETS))
    args = ap.parse_args()
    for source in args.only:
        stem, task, metric, group, n_train, n_test = DATASETS[source]
        root = Path(args.out) / source
        if not root.exists():
            real_tree(Path(args.shared), root, source, stem, task, metric, group, n_train, n_test)
        config, results, data_dir = root / f"{stem}.yaml", root / "results", root / "data"
        base = ["--dataset_config", str(config), "--results_dir", str(results), "--data_dir", str(data_dir),
                "--model_group", group, "--multi_model"]
        emb = ["--embedding_model", args.embedding_model]
        start = time.perf_counter()
        steps = [(run_smoothie, ["--type", "sample_independent", *emb]),
                 (run_smoothie, ["--type", "sample_dependent", "--k", "1", *emb]),
                 (run_smoothie, ["--type", "sample_dependent", "--k", "20", *emb]),
                 (pick_random_baseline, []), (labeled_oracle, []), (labeled_knn, emb), (mbr_baseline, emb)]
        for module, extra in steps:
            module.main(base + extra)
        print(f"\n== {source}: {n_test} test rows, embedder {args.embedding_model} "
              f"({time.perf_counter() - start:.0f} s for routing) ==")
        evaluate.main(base)


if __name__ == "__main__":
    main()
