"""The real `kb` command in a subprocess: output schemas, exit codes, terminal safety. Argument
parsing, rendering and the error map alone are tested in-process (test_cli_commands.py)."""

import fcntl
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from conftest import kb, kb_json

INDEX_KEYS = {"added", "updated", "unchanged", "removed", "chunks_added", "chunks_removed", "seconds"}
HIT_KEYS = {"rank", "score", "path", "start_line", "end_line", "heading", "text"}


def test_help_is_light():
    """`kb --help` in a fresh process loads none of the heavy libraries (they cost seconds)."""
    code = ("import sys; sys.argv = ['kb', '--help']\n"
            "from kb.cli.app import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "heavy = [m for m in ('torch', 'transformers', 'faiss', 'triton', 'numpy', 'jieba', 'tokenizers')\n"
            "         if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out and "index" in out and "query" in out and "models" in out


@pytest.mark.slow
def test_index_query_status_json(corpus, db):
    report = kb_json("index", corpus, "--db", db)
    assert INDEX_KEYS <= report.keys() and report["added"] >= 30
    assert report["embedded"] == report["chunks_added"] and report["vector_index"] == "flat"
    for mode in ("bm25", "vector"):
        assert kb_json("query", "sourdough starter", "--db", db, "--mode", mode)["results"][0]["path"] \
            == "cooking/sourdough-starter.md"
    result = kb_json("query", "sourdough starter", "--db", db, "-k", "3")
    assert {"query", "mode", "results", "timings_ms"} <= result.keys()
    assert result["mode"] == "hybrid" and "note" not in result
    assert {"embed", "vector", "bm25"} <= result["timings_ms"].keys()
    assert 1 <= len(result["results"]) <= 3
    hit = result["results"][0]
    assert HIT_KEYS <= hit.keys() and hit["path"] == "cooking/sourdough-starter.md"
    assert [h["rank"] for h in result["results"]] == list(range(1, len(result["results"]) + 1))
    lines = (corpus / hit["path"]).read_text().splitlines()
    assert lines[hit["start_line"] - 1] in hit["text"]
    info = kb_json("status", "--db", db)
    assert info["documents"] == report["added"] and info["chunks"] == report["chunks_added"]
    assert info["fingerprint"]["tokenizer"] == "all-MiniLM-L6-v2"
    assert info["last_run"]["status"] == "ok"
    assert info["vectors"]["kind"] == "flat" and info["vectors"]["count"] == report["chunks_added"]


@pytest.mark.slow
def test_human_output(corpus, db):
    out = kb("index", corpus, "--db", db, "--vector-index", "none").stdout  # BM25 only
    assert "added" in out
    proc = kb("query", "git rebase", "--db", db)
    assert "tech/git-rebase.md:" in proc.stdout and "fell back to bm25" in proc.stderr
    assert "documents" in kb("status", "--db", db).stdout
    assert kb("index", corpus, "--db", db, "--vector-index", "none", "--quiet").stdout == ""


@pytest.mark.slow
def test_query_file_one_json_per_line(corpus, db):
    kb("index", corpus, "--db", db, "--vector-index", "none")
    qfile = corpus.parent / "queries.txt"
    qfile.write_text("sourdough\n\nTCP handshake\n长城\n")
    lines = kb("query", "--file", qfile, "--db", db, "--json").stdout.splitlines()
    assert [json.loads(l)["query"] for l in lines] == ["sourdough", "TCP handshake", "长城"]
    assert json.loads(lines[2])["results"][0]["path"] == "zh/great-wall.md"
    stdin = kb("query", "--file", "-", "--db", db, "--json", input="dns ttl\n").stdout
    assert json.loads(stdin)["results"][0]["path"] == "tech/dns-resolution.md"


@pytest.mark.slow
def test_kb_db_environment_variable(corpus, tmp_path):
    env = {"KB_DB": str(tmp_path / "envstore")}
    kb("index", corpus / "tech", "--quiet", "--vector-index", "none", env=env)
    assert (tmp_path / "envstore" / "kb.sqlite").exists()


@pytest.mark.slow
def test_exit_codes(corpus, db, tmp_path):
    assert "no such file" in kb("index", tmp_path / "missing", "--db", db, "--vector-index", "none", check=3).stderr
    assert "no knowledge base" in kb("query", "x", "--db", tmp_path / "none", check=3).stderr
    kb("index", corpus, "--db", db, "--vector-index", "none")
    assert "empty query" in kb("query", "   ", "--db", db, check=2).stderr
    kb("query", "--db", db, check=2)  # neither text nor --file
    assert "no vectors" in kb("query", "x", "--mode", "vector", "--db", db, check=4).stderr
    conn = sqlite3.connect(db / "kb.sqlite")
    conn.execute("PRAGMA user_version = 42")
    conn.commit()
    conn.close()
    proc = kb("query", "x", "--db", db, check=4)
    assert "newer" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_errors_are_one_line_and_debug_shows_traceback(tmp_path):
    proc = kb("query", "x", "--db", tmp_path / "none", check=3)
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = kb("query", "x", "--db", tmp_path / "none", check=None, env={"KB_DEBUG": "1"})
    assert "Traceback" in proc.stderr


@pytest.mark.slow
def test_second_index_waits_then_gives_up(corpus, db):
    kb("index", corpus, "--db", db, "--vector-index", "none")
    with open(db / "index.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write("12345")
        f.flush()
        proc = kb("index", corpus, "--db", db, "--vector-index", "none", "--wait", "0.5", check=75)
    assert "another kb index (pid 12345)" in proc.stderr
    kb("query", "sourdough", "--db", db)  # readers are not blocked by the lock


@pytest.mark.slow
def test_escape_sequences_never_reach_the_terminal(tmp_path, db):
    root = tmp_path / "evil"
    root.mkdir()
    (root / "evil.md").write_text("# Title \x1b]0;pwned\x07\nred \x1b[31malert\x1b[0m text \x9b2J here\n")
    (root / "name\x1b[2J.md").write_text("alert file name\n")
    kb("index", root, "--db", db, "--vector-index", "none")
    for args in (("query", "alert"), ("query", "alert", "--json"), ("status",)):
        proc = kb(*args, "--db", db)
        for stream in (proc.stdout, proc.stderr):
            assert "\x1b" not in stream and "\x07" not in stream and "\x9b" not in stream, args


@pytest.mark.slow
def test_unreadable_file_exit_code(corpus, db, monkeypatch):
    # Root can read anything, so unreadability is simulated in the child through sitecustomize.
    hook = corpus.parent / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import pathlib\n_real = pathlib.Path.read_bytes\n"
        "def _deny(self):\n"
        "    if self.name == 'git-rebase.md':\n        raise PermissionError(13, 'Permission denied')\n"
        "    return _real(self)\n"
        "pathlib.Path.read_bytes = _deny\n")
    env = {"PYTHONPATH": f"{hook}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = kb("index", corpus, "--db", db, "--vector-index", "none", "--json", check=5, env=env)
    assert json.loads(proc.stdout)["errors"] and "git-rebase.md" in proc.stderr


@pytest.mark.slow
def test_special_paths(tmp_path, db):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert "not a regular file" in kb("index", fifo, "--db", db, "--vector-index", "none", check=2).stderr
    somefile = tmp_path / "file.txt"
    somefile.write_text("x")
    assert "cannot create a store" in kb("index", somefile, "--db", somefile, "--vector-index", "none", check=2).stderr
    binary = tmp_path / "photo.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    proc = kb("index", binary, "--db", db, "--vector-index", "none")
    assert "skipped, binary file" in proc.stderr and "1 skipped" in proc.stdout


@pytest.mark.slow
def test_a_folder_that_is_no_model_is_a_one_line_error_before_the_store_is_touched(corpus, db, tmp_path):
    proc = kb("index", corpus, "--db", db, "--model", tmp_path, check=3)
    assert len(proc.stderr.strip().splitlines()) == 1 and "no tokenizer.json" in proc.stderr
    assert not db.exists()


def test_progress_lines_show_tokens_per_second(tmp_path, capsys):
    """Without a terminal, progress is a plain line at most every `every` seconds, with the rate
    of tokens read; the real run hands each file's tokens to it."""
    from kb.cli.progress import PlainProgress, rate
    from kb.index.indexer import IndexConfig, index_paths

    assert [rate(850, 1.0), rate(42_100, 1.0), rate(4_320_000, 2.0)] == \
        ["850 tokens/s", "42.1K tokens/s", "2.16M tokens/s"]
    notes = tmp_path / "notes"
    notes.mkdir()
    for i in range(3):
        (notes / f"{i}.md").write_text(f"# Note {i}\n\n" + "plain words here " * 40)
    progress = PlainProgress()
    progress.every = 0.0
    index_paths([notes], tmp_path / "db", IndexConfig(vector_index="none"), progress)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3 and lines[-1].startswith("kb index: indexing 3/3, ")
    assert lines[-1].endswith("tokens/s") and progress.tokens > 3 * 100


@pytest.mark.slow
def test_damaged_store_is_a_one_line_error(corpus, db):
    """A store whose SQLite pages are broken (bit rot, a bad disk) is exit 4 with one line that
    says so, from every command, not an internal error quoting half a chunk."""
    kb("index", corpus, "--db", db, "--quiet", "--vector-index", "none")
    path = db / "kb.sqlite"
    data = bytearray(path.read_bytes())
    for i in range(20000, len(data), 3000):  # past the header page: still an SQLite file
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    (db / "bm25.npz").unlink()  # so that the query reads every posting from SQLite
    for args in (("query", "sourdough"), ("status",), ("index", corpus)):
        proc = kb(*args, "--db", db, check=4)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "the store is damaged" in lines[0] and "internal error" not in lines[0]
