"""Same as `python -m src.generate_predictions` (kept for the paper's command line):

    python alpaca/generate_predictions.py --n_trials 10 --k 5
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src import cli  # noqa: E402
from src.generate_predictions import main  # noqa: E402

if __name__ == "__main__":
    cli.run(main)
