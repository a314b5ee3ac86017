"""Package discovery, which pyproject.toml alone cannot state for this layout: the repository's
root is the `kb` package, so every folder below it holding an __init__.py is `kb.<folder>`.
Found, not listed: a listed package that was forgotten (kb.index.vectors once) is missing from
every wheel, and so from every non-editable install."""

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class _BuildPy(build_py):
    def find_package_modules(self, package, package_dir):
        # this file lies in the root, which is the kb package: it is not a module of kb
        return [m for m in super().find_package_modules(package, package_dir) if m[:2] != ("kb", "setup")]


setup(
    packages=["kb"] + [f"kb.{p}" for p in find_packages(exclude=["tests", "tests.*", "bench", "bench.*"])],
    package_dir={"kb": "."},
    cmdclass={"build_py": _BuildPy},
)
