"""Shared command-line plumbing: one-line errors with exit status 2, and common flags.

Every command module builds its parser with :func:`parser` and runs through :func:`run`, so a
user mistake anywhere ends the same way: ``<prog>: error: <what and where>`` on stderr, exit 2,
no traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import NoReturn


class UserError(Exception):
    """A mistake the user can fix (bad flag, missing file, malformed data).

    The message must name the file or flag at fault; it is printed as one line.
    """


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse prints usage too; we keep one line
        self.exit(2, f"{self.prog}: error: {message}\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" to an option's help, unless the help already says its default or
    there is none to state (None, a switch that is off)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    return _Parser(prog=prog, description=description, formatter_class=_Formatter)


def command_name(main: Callable) -> str:
    """``src.run_smoothie`` for a command's ``main``, also when it runs as ``python -m`` (where
    its module is called ``__main__``)."""
    module = getattr(main, "__module__", None) or "smoothie"
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec is not None else sys.argv[0]
    return module


def run(main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None) -> None:
    """Run ``main`` and turn :class:`UserError` into a one-line message and exit status 2."""
    prog = command_name(main)

    def one_line(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"{prog}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = one_line  # what happened and what to do, not a source line
            main(argv)
    except UserError as exc:
        msg = " ".join(str(exc).split("\n"))
        print(f"{prog}: error: {msg}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished work is kept", file=sys.stderr)
        sys.exit(130)


def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0, where 0 has a meaning of its own (no labels)."""
    return _whole_number(text, 0)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (0 would silently mean 'all' or 'none' elsewhere)."""
    return _whole_number(text, 1)


def add_setting_flags(p: argparse.ArgumentParser) -> None:
    """Flags that say which results folder and files a command works on (SPEC 3.2-3.5)."""
    p.add_argument("--dataset_config", required=True, help="dataset_configs/<config>.yaml")
    p.add_argument("--results_dir", default=None, help="results root (default $RESULTS_DIR or results)")
    p.add_argument("--data_dir", default=None,
                   help="folder holding <config>_train/test.jsonl (default $HF_DATASETS_DIR/datasets)")
    p.add_argument("--model_group", default=None, help="model group (multi-model setting)")
    p.add_argument("--model", default=None, help="one model (multi-prompt setting; with --multi_model: one member)")
    p.add_argument("--multi_model", action="store_true", help="route among the models of --model_group")
    p.add_argument("--multi_prompt", action="store_true", help="route among prompt variants of --model")
    p.add_argument("--n_generations", type=positive_int, default=1,
                   help="sampled generations per sample (files named *_<n>_gens_*)")
    p.add_argument("--max_samples", type=positive_int, default=None,
                   help="only the first N rows of each split (a quick run; recorded in every output)")
    p.add_argument("--no_clean", action="store_true",
                   help="use outputs as they are; default: the config's clean key, else special tokens dropped "
                        "and the first line kept (not for gsm8k, mix_instruct)")


def add_redo_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--redo", action="store_true", help="recompute even if the output exists")
