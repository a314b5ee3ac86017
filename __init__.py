"""kb: a local knowledge-base engine (index, query, ask)."""

import os as _os
import sys as _sys

__version__ = "0.1.0"

# This folder is the kb package, so its subfolders are kb.kernels, kb.index, ... A process started
# in it (`python -m kb.cli`, `python -m pytest`) would also have them importable as top-level
# names, where `kernels` hides the PyPI package of that name that transformers imports. The folder
# is never a place for top-level modules: drop it from the import path.
_here = _os.path.realpath(_os.path.dirname(__file__))
_sys.path[:] = [p for p in _sys.path if _os.path.realpath(p or _os.curdir) != _here]
