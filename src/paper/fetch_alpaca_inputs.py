"""Build the paper's AlpacaEval input folder from public sources, checked byte for byte.

    python -m src.paper.fetch_alpaca_inputs            # -> alpaca/paper_inputs
    python -m src.paper.alpaca                         # the paper's table from it

What ``src.paper.alpaca`` reads, and where each piece comes from:

- ``downloaded_outputs/<file>.json``: the ten AlpacaEval 2.0 leaderboard outputs the authors'
  script read, each a list of 805 ``{dataset, instruction, output, generator}``, downloaded from
  the authors' repository (HazyResearch/smoothie) at the commit that still held them, and each
  checked against its pinned SHA-256 before it is kept;
- ``ensembles.json``: the paper's ten trials of five models (the authors' AlpacaEval script);
- ``leaderboard.json``: each model's file and its published AlpacaEval 2.0 win rate and
  length-controlled win rate (GPT-4-Turbo judge), the figures the paper's table is in.

A file already in place with the right hash is not fetched again, so an interrupted run resumes;
a download whose hash differs is refused, and nothing of it is kept.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from src import cli
from src.io import atomic_write_text
from src.paths import alpaca_paper_inputs

COMMIT = "67d31fa8b6568b7f659a969e6e5754c1157fd60c"  # HazyResearch/smoothie; later commits deleted the folder
SOURCE = f"https://raw.githubusercontent.com/HazyResearch/smoothie/{COMMIT}/alpaca/downloaded_outputs/"
OUTPUTS = {  # file -> SHA-256 of its bytes
    "Nanbeige-Plus-Chat-v0.1.json": "fcd3252bf25b204dca2ebc076bab3591972a01e704ce2ab699f9c5f2ee839188",
    "Qwen1.5-110B-Chat.json": "d3545f6b61c2f3af3ff9e2a80f037647bf21be1f12851832ad9d6b9102a8aa65",
    "claude_2.json": "aaab6625ea5825776d7aa0510a1e60d8c8ae0c11f1059648dbd75bf0289f6b3f",
    "ein_70B.json": "990d5017aa6a6d09d3a62b5ddcf9b2b9acc64ca590d503daa7b3b85b2e55c3fb",
    "gemini_pro.json": "10516b7b8118b310828361983d5a166889cb0cb2e57dd7ac08b9a25f950637f7",
    "meta_llama_3_70B_instruct.json": "d88208d379e6ece0cfa923be521b068a557f7bd84fdc5568d6151918d6004d45",
    "mistral_large.json": "a3e8c176dcd1122d113f686ac8ad59ff2c2d5df9c9ca8178d3ba407e5362bfbb",
    "storm_7b.json": "532321dd5775db5a8d251a6ad14fd27030d5dcf80734de5cb176f51f6813b016",
    "yi_large.json": "95fce804f1ee592066dacd0844f37a743cb79a4f26cde5996917a76018984ffd",
    "zephyr_chat.json": "5dfcd0abeff8348f070f48ca0ead37d4fb977ad767f1ce1348b42f64cce82458",
}
# model -> (its file, win rate, length-controlled win rate), AlpacaEval 2.0's public leaderboard
LEADERBOARD = {
    "Ein-70B-v0.1": ("ein_70B.json", 24.84, 35.03),
    "FsfairX-Zephyr-Chat-v0.1": ("zephyr_chat.json", 35.95, 34.79),
    "Meta-Llama-3-70B-Instruct": ("meta_llama_3_70B_instruct.json", 33.18, 34.42),
    "Nanbeige-Plus-Chat-v0.1": ("Nanbeige-Plus-Chat-v0.1.json", 56.7, 44.46),
    "Qwen1.5-110B-Chat": ("Qwen1.5-110B-Chat.json", 33.78, 43.91),
    "Storm-7B": ("storm_7b.json", 50.27, 50.45),
    "claude-2": ("claude_2.json", 17.19, 28.16),
    "gemini-pro": ("gemini_pro.json", 18.18, 24.38),
    "mistral-large-2402": ("mistral_large.json", 21.44, 32.65),
    "yi-large-preview": ("yi_large.json", 57.47, 51.89),
}
_LLAMA, _MISTRAL, _YI, _STORM, _GEMINI = ("Meta-Llama-3-70B-Instruct", "mistral-large-2402", "yi-large-preview",
                                          "Storm-7B", "gemini-pro")
_ZEPHYR, _NANBEIGE, _CLAUDE, _EIN, _QWEN = ("FsfairX-Zephyr-Chat-v0.1", "Nanbeige-Plus-Chat-v0.1", "claude-2",
                                            "Ein-70B-v0.1", "Qwen1.5-110B-Chat")
TRIALS = [  # the paper's ten ensembles, in trial order
    [_LLAMA, _MISTRAL, _YI, _STORM, _GEMINI],
    [_LLAMA, _STORM, _ZEPHYR, _YI, _NANBEIGE],
    [_YI, _GEMINI, _CLAUDE, _NANBEIGE, _EIN],
    [_CLAUDE, _YI, _GEMINI, _LLAMA, _STORM],
    [_QWEN, _MISTRAL, _YI, _STORM, _LLAMA],
    [_STORM, _CLAUDE, _LLAMA, _YI, _EIN],
    [_MISTRAL, _GEMINI, _EIN, _NANBEIGE, _ZEPHYR],
    [_MISTRAL, _CLAUDE, _NANBEIGE, _LLAMA, _GEMINI],
    [_MISTRAL, _ZEPHYR, _STORM, _NANBEIGE, _LLAMA],
    [_MISTRAL, _YI, _EIN, _LLAMA, _GEMINI],
]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download(url: str, timeout: float) -> bytes:
    import httpx

    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise cli.UserError(f"{url}: could not download ({type(exc).__name__}: {exc}); check the network or "
                            "--base_url") from None
    if response.status_code != 200:
        raise cli.UserError(f"{url}: the server answered {response.status_code}; check --base_url")
    return response.content


def fetch(out: Path, base_url: str = SOURCE, timeout: float = 60.0, progress=print) -> Path:
    """Build ``out`` (``downloaded_outputs/``, ``ensembles.json``, ``leaderboard.json``); every
    downloaded file is checked against its pinned hash before it is written."""
    folder = out / "downloaded_outputs"
    base = base_url if base_url.endswith("/") else base_url + "/"
    for i, (name, digest) in enumerate(sorted(OUTPUTS.items()), 1):
        path = folder / name
        if path.is_file() and sha256(path.read_bytes()) == digest:
            progress(f"[{i}/{len(OUTPUTS)}] {name}: already in place")
            continue
        data = _download(base + name, timeout)
        got = sha256(data)
        if got != digest:
            raise cli.UserError(f"{base + name}: SHA-256 {got[:16]}... is not the pinned {digest[:16]}...; the file "
                                "is not the one the paper used, so it was not kept")
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{name}.partial")
        tmp.write_bytes(data)
        tmp.replace(path)
        progress(f"[{i}/{len(OUTPUTS)}] {name}: {len(data) / 1e6:.1f} MB, hash checked")
    atomic_write_text(out / "ensembles.json", json.dumps(TRIALS, indent=1) + "\n")
    board = {m: {"file": f, "leaderboard_win_rate": w, "leaderboard_lc_win_rate": lc}
             for m, (f, w, lc) in sorted(LEADERBOARD.items())}
    atomic_write_text(out / "leaderboard.json", json.dumps(board, indent=1) + "\n")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    p = cli.parser("src.paper.fetch_alpaca_inputs",
                   "Download the paper's AlpacaEval inputs (hash-checked) and build src.paper.alpaca's input folder.")
    p.add_argument("--output", default=None, help=f"the folder to build (default {alpaca_paper_inputs()})")
    p.add_argument("--base_url", default=SOURCE, help="where the ten output files are served (a mirror)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per download")
    args = p.parse_args(argv)
    out = fetch(alpaca_paper_inputs(args.output), args.base_url, args.timeout)
    print(f"built {out}: run python -m src.paper.alpaca" + (f" --inputs {out}" if args.output else ""))


if __name__ == "__main__":
    cli.run(main)
