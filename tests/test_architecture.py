"""The architecture stated in pyproject.toml holds: layers import only downwards (import-linter),
and the library stays readable in pieces (files and functions within the sizes STYLE.md sets)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARY = ("cli", "embed", "index", "rag", "kernels")
MAX_FILE_LINES = 300
MAX_FUNCTION_LINES = 40


def _library_files() -> list[Path]:
    top = [p for p in REPO.glob("*.py") if p.name != "setup.py"]
    return top + [p for d in LIBRARY for p in (REPO / d).rglob("*.py")]


def test_layer_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert lint, "import-linter is a test dependency: pip install -e '.[test]'"
    proc = subprocess.run([lint, "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_files_are_small_enough_to_read_at_once():
    files = _library_files() + list((REPO / "bench").glob("*.py"))
    long = {str(p.relative_to(REPO)): n for p in files if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}
    assert not long, long


def test_functions_are_short():
    long = {}
    for path in _library_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(REPO)}:{node.name}"] = n
    assert not long, long


def test_sql_lives_in_the_data_layer():
    """Every SQL statement of the library is in kb.index.store: nothing else calls a connection."""
    store = REPO / "index" / "store"
    calls = (".execute(", ".executemany(", ".executescript(")
    outside = [str(p.relative_to(REPO)) for p in _library_files()
               if store not in p.parents and any(c in p.read_text() for c in calls)]
    assert not outside, outside
