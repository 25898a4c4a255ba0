"""Build hook: a wheel carries ``dataset_configs/`` and ``prompt_templates/`` inside the package,
as ``src/_data/``, where ``src.paths.shipped`` finds them when the project is installed (a
clone uses its own folders). Everything else is in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("dataset_configs", "prompt_templates")  # as src.paths.SHIPPED


class BuildWithData(build_py):
    def run(self):
        super().run()
        for folder in SHIPPED:
            shutil.copytree(folder, Path(self.build_lib) / "src" / "_data" / folder, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithData})
