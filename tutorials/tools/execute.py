"""Execute notebooks in place, saving their outputs: python tutorials/tools/execute.py tutorials/*.ipynb

Run from the repository root after rebuilding a notebook with build_algorithm.py or build_tutorial.py.
"""
import sys

import nbformat
from nbclient import NotebookClient

for path in sys.argv[1:]:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": "tutorials"}}).execute()
    nbformat.write(nb, path)
    print("executed", path)
