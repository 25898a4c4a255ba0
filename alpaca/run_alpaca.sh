#!/usr/bin/env bash
# Score the downloaded models and the algorithm outputs on AlpacaEval; writes alpaca/leaderboard.csv.
#
#   alpaca/run_alpaca.sh                               # a judge is configured (OPENAI_API_KEY): run alpaca_eval
#   alpaca/run_alpaca.sh --cached_annotations DIR      # offline: the leaderboard's cached judge verdicts
#
# Without a judge key it always scores offline, from --cached_annotations (default
# alpaca/cached_annotations). Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
[ -x .venv/bin/python ] && PY=.venv/bin/python

cached=""
downloaded="alpaca/downloaded_outputs"
outputs="alpaca/algorithm_outputs"
board="alpaca"
while [ $# -gt 0 ]; do
  case "$1" in
    --cached_annotations) cached="$2"; shift 2 ;;
    --downloaded_dir) downloaded="$2"; shift 2 ;;
    --outputs_dir) outputs="$2"; shift 2 ;;
    --leaderboard_dir) board="$2"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "run_alpaca.sh: error: unknown argument $1" >&2; exit 2 ;;
  esac
done

if [ -n "$cached" ] || [ -z "${OPENAI_API_KEY:-}" ]; then
  cached=${cached:-alpaca/cached_annotations}
  echo "scoring offline from cached judge annotations in $cached"
  exec "$PY" -m src.alpaca_score --annotations_dir "$cached" --downloaded_dir "$downloaded" --outputs_dir "$outputs" \
    --leaderboard_dir "$board"
fi

# A judge is configured: run the alpaca_eval package (pip install alpaca-eval) on every file.
command -v alpaca_eval >/dev/null || { echo "run_alpaca.sh: error: alpaca_eval is not installed (pip install alpaca-eval)" >&2; exit 2; }
results=alpaca/alpaca_eval_results
for f in "$downloaded"/*.json "$outputs"/*.json; do
  alpaca_eval --model_outputs "$f" --annotators_config weighted_alpaca_eval_gpt4_turbo \
    --output_path "$results" --is_overwrite_leaderboard
done
cp "$results"/weighted_alpaca_eval_gpt4_turbo/leaderboard.csv "$board"/leaderboard.csv
echo "wrote $board/leaderboard.csv"
