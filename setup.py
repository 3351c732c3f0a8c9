"""Build hook: the wheel carries both editor plugins, as ``easel/plugins/krita`` and ``easel/plugins/gimp``,
so ``easel install-plugin`` works from an installed wheel. Everything else is declared in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PLUGINS = {"krita": "plugin_krita", "gimp": "plugin_gimp"}


class BuildPyWithPlugins(build_py):
    """``build_py`` that also copies plugin_krita/ and plugin_gimp/ into the built package."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the plugins from the checkout
            return
        for editor, folder in PLUGINS.items():
            dst = Path(self.build_lib) / "easel" / "plugins" / editor
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(HERE / folder, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "shared", "vendor"))


setup(cmdclass={"build_py": BuildPyWithPlugins})
