"""Alias of ``src.make_dataset`` for group configs (the paper's command name); same flags."""

from src import cli
from src.make_dataset import main

if __name__ == "__main__":
    cli.run(main)
