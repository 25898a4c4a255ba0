"""Shared command-line plumbing: one-line errors with exit status 2, and common flags.

Every command module builds its parser with :func:`parser` and runs through :func:`run`, so a
user mistake anywhere ends the same way: ``<prog>: error: <what and where>`` on stderr, exit 2,
no traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn


class UserError(Exception):
    """A mistake the user can fix (bad flag, missing file, malformed data).

    The message must name the file or flag at fault; it is printed as one line.
    """


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse prints usage too; we keep one line
        self.exit(2, f"{self.prog}: error: {message}\n")


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    return _Parser(prog=prog, description=description)


def run(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> None:
    """Run ``main`` and turn :class:`UserError` into a one-line message and exit status 2."""
    prog = getattr(main, "__module__", "smoothie")
    try:
        main(argv)
    except UserError as exc:
        msg = " ".join(str(exc).split("\n"))
        print(f"{prog}: error: {msg}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished work is kept", file=sys.stderr)
        sys.exit(130)


def add_setting_flags(p: argparse.ArgumentParser) -> None:
    """Flags that say which results folder a command works on (SPEC 3.2-3.5)."""
    p.add_argument("--dataset_config", required=True, help="dataset_configs/<config>.yaml")
    p.add_argument("--results_dir", default=None, help="results root (default $RESULTS_DIR or results)")
    p.add_argument("--data_dir", default=None,
                   help="folder holding <config>_train/test.jsonl (default $HF_DATASETS_DIR/datasets)")
    p.add_argument("--model_group", default=None, help="model group (multi-model setting)")
    p.add_argument("--model", default=None, help="one model (multi-prompt setting)")
    p.add_argument("--multi_model", action="store_true", help="route among the models of --model_group")
    p.add_argument("--multi_prompt", action="store_true", help="route among prompt variants of --model")


def add_redo_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redo", action="store_true", help="recompute even if the output exists")


def already_done(path, redo: bool) -> bool:
    """True (and says so) when ``path`` exists and --redo was not given: finished work is reused."""
    from pathlib import Path

    if Path(path).exists() and not redo:
        print(f"{path} exists; skipping (use --redo to recompute)")
        return True
    return False
