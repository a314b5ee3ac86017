"""Hostile but ordinary input through the real `kb` command: file names that are not UTF-8 or hold
newlines, markup in queries and names, unreadable folders, read-only stores, full disks, queries
during a rebuild, runs killed while embedding. Each test failed on the code before issue 17."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from conftest import REPO, kb, kb_json


def corpus_of(root, files: dict) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = os.path.join(os.fsencode(root), name if isinstance(name, bytes) else os.fsencode(name))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def documents(db) -> list[str]:
    conn = sqlite3.connect(db / "kb.sqlite")
    try:
        return sorted(r[0] for r in conn.execute("SELECT path FROM documents"))
    finally:
        conn.close()


@pytest.mark.slow
def test_a_file_name_that_is_not_utf8_is_indexed_and_shown_escaped(tmp_path, db):
    root = tmp_path / "c"
    corpus_of(root, {b"bad\xff\xfe.md": "# Bad\nquokka habitat notes\n", "good.md": "# Good\nwombat burrows\n"})
    report = kb_json("index", root, "--db", db, "--vector-index", "none")
    assert report["added"] == 2 and not report["errors"]
    assert kb_json("index", root, "--db", db, "--vector-index", "none")["unchanged"] == 2  # every run, not once
    hit = kb_json("query", "quokka", "--db", db)["results"][0]
    assert hit["path"] == "bad\\xff\\xfe.md"
    assert "bad\\xff\\xfe.md:1-2" in kb("query", "quokka", "--db", db).stdout
    os.unlink(os.path.join(os.fsencode(root), b"bad\xff\xfe.md"))
    assert kb_json("index", root, "--db", db, "--vector-index", "none")["removed"] == 1


@pytest.mark.slow
def test_an_unreadable_folder_is_a_warning_and_the_rest_is_indexed(tmp_path, db):
    root = tmp_path / "c"
    corpus_of(root, {"good.md": "wombat burrows\n", "closed/secret.md": "hidden words\n"})
    os.chmod(root / "closed", 0)
    try:
        proc = kb("index", root, "--db", db, "--vector-index", "none", "--json", unprivileged=True)
    finally:
        os.chmod(root / "closed", 0o755)
    report = json.loads(proc.stdout)
    assert report["added"] == 1 and any("closed: cannot list folder" in w for w in report["warnings"])


@pytest.mark.slow
def test_markup_in_queries_and_names_is_text(tmp_path, db):
    root = tmp_path / "root[/b]"  # a folder "b]" in a folder "root["
    corpus_of(root, {"[link=http:evil]x[bold].md": "hello wombat\n"})
    kb("index", root, "--db", db, "--vector-index", "none")
    queries = "hello\n[/bold]\n[link=http://evil.example]hello[/link]\n:warning: wombat\n"
    proc = kb("query", "--file", "-", "--db", db, input=queries)
    assert "query: [/bold]" in proc.stdout and "query: :warning: wombat" in proc.stdout
    assert "[link=http:evil]x[bold].md:1-1" in proc.stdout
    assert "documents" in kb("status", "--db", db).stdout  # exit 0: the folder's name is text
    assert kb_json("status", "--db", db)["roots"][0].endswith("root[/b]")
    # on a terminal, rich would turn [link=...] into an OSC 8 hyperlink: run under a pty
    import pty

    (tmp_path / "q.txt").write_text("[link=http://evil.example]hello[/link]\n")
    out = _on_terminal([sys.executable, "-m", "kb.cli", "query", "--file", str(tmp_path / "q.txt"),
                        "--db", str(db)], pty)
    assert b"\x1b]8" not in out and b"http://evil.example]hello" in out


def _on_terminal(argv, pty) -> bytes:
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.pop("NO_COLOR", None)
        os.execv(argv[0], argv)
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.waitpid(pid, 0)
    return b"".join(chunks)


@pytest.mark.slow
def test_a_newline_in_a_file_name_stays_on_its_line(tmp_path, db):
    root = tmp_path / "c"
    corpus_of(root, {"new\nline.md": "wombat burrows\n", "bin\nary.md": "\x00\x01"})
    proc = kb("index", root, "--db", db, "--vector-index", "none")
    warnings = proc.stderr.strip().splitlines()
    assert len(warnings) == 1 and "bin\\nary.md: skipped, binary file" in warnings[0]
    lines = kb("query", "wombat", "--db", db).stdout.splitlines()
    assert lines[0].split()[-1] == "new\\nline.md:1-1" and len(lines) == 2
    assert kb_json("query", "wombat", "--db", db)["results"][0]["path"] == "new\nline.md"


@pytest.mark.slow
def test_a_huge_path_glob_is_a_usage_error(corpus, db):
    kb("index", corpus, "--db", db, "--vector-index", "none")
    proc = kb("query", "sourdough", "--db", db, "--path", "*" * 100_000, check=2)
    assert "too long" in proc.stderr and len(proc.stderr.splitlines()) == 1


@pytest.mark.slow
def test_a_read_only_store_answers_queries_and_refuses_index_runs(corpus, db):
    kb("index", corpus, "--db", db, "--vector-index", "none")
    os.chmod(db, 0o555)
    try:
        assert kb("query", "sourdough", "--db", db, unprivileged=True).stdout
        assert kb_json("status", "--db", db, unprivileged=True)["documents"] > 30
        proc = kb("index", corpus, "--db", db, check=73, unprivileged=True)
        assert "read-only" in proc.stderr and len(proc.stderr.splitlines()) == 1
    finally:
        os.chmod(db, 0o700)
    os.chmod(db / "kb.sqlite", 0o400)
    (corpus / "new.md").write_text("a new note about quokkas\n")
    proc = kb("index", corpus, "--db", db, check=73, unprivileged=True)
    assert "read-only" in proc.stderr
    assert kb("query", "sourdough", "--db", db, unprivileged=True).stdout


@pytest.mark.slow
def test_a_full_disk_says_so_and_loses_nothing(corpus, db, small_disk):
    store = small_disk.path / "store"
    kb("index", corpus / "tech", "--db", store, "--vector-index", "none")
    before = documents(store)
    small_disk.resize(4 * 1024)
    with open(small_disk.path / "filler", "wb") as f:  # a disk that is already full
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    assert kb("query", "dns", "--db", store).stdout  # reading needs no space
    assert kb_json("status", "--db", store)["documents"] == len(before)
    proc = kb("index", corpus, "--db", store, "--vector-index", "none", check=74)
    assert "full" in proc.stderr and len(proc.stderr.splitlines()) == 1
    os.unlink(small_disk.path / "filler")
    # a disk that fills in the middle of a run
    small_disk.resize(700)
    proc = kb("index", corpus, "--db", small_disk.path / "second", "--vector-index", "none", check=74)
    assert "full" in proc.stderr and "no transaction" not in proc.stderr
    for where in (store, small_disk.path / "second"):
        conn = sqlite3.connect(where / "kb.sqlite")
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()
    assert documents(store) == before
    small_disk.resize(16 * 1024)
    assert kb_json("index", corpus, "--db", small_disk.path / "second", "--vector-index", "none")["errors"] == []


@pytest.mark.slow
def test_a_new_store_is_private_even_in_a_folder_made_before(corpus, tmp_path):
    db = tmp_path / "made-by-hand"
    db.mkdir(mode=0o755)
    os.chmod(db, 0o755)
    kb("index", corpus / "tech", "--db", db, "--vector-index", "none")
    assert (db.stat().st_mode & 0o777) == 0o700 and (db / "kb.sqlite").stat().st_mode & 0o077 == 0


@pytest.mark.slow
def test_an_empty_database_file_is_damage_not_a_new_store(db):
    db.mkdir()
    (db / "kb.sqlite").write_bytes(b"")
    for args in (("status",), ("query", "x")):
        proc = kb(*args, "--db", db, check=4)
        assert "damaged" in proc.stderr and "empty" in proc.stderr


@pytest.mark.slow
def test_queries_see_the_old_index_during_a_rebuild(tmp_path):
    from test_crash import make_corpus

    corpus = tmp_path / "corpus"
    make_corpus(corpus, 400, 7)
    db = tmp_path / "db"
    kb("index", corpus, "--db", db, "--vector-index", "none", "--quiet")
    writer = subprocess.Popen([sys.executable, "-m", "kb.cli", "index", str(corpus), "--db", str(db), "--rebuild",
                               "--vector-index", "none", "--quiet"], cwd=REPO)
    queries = tmp_path / "q.txt"
    queries.write_text("note\n" * 50)
    empty = rounds = 0
    while writer.poll() is None:
        for line in kb("query", "--file", queries, "--db", db, "--json", "--mode", "bm25").stdout.splitlines():
            empty += not json.loads(line)["results"]
        rounds += 1
    assert writer.returncode == 0 and rounds >= 1 and empty == 0


@pytest.mark.slow
def test_a_run_killed_while_embedding_says_so_and_the_next_completes(tmp_path, tiny_encoder):
    from test_crash import make_corpus, same_vectors

    corpus = tmp_path / "corpus"
    make_corpus(corpus, 300, 11)
    db, model = tmp_path / "db", ("--model", str(tiny_encoder))  # a small encoder: the kill lands all the same
    proc = subprocess.Popen([sys.executable, "-m", "kb.cli", "index", str(corpus), "--db", str(db), "--quiet", *model],
                            cwd=REPO)
    vectors = 0
    while proc.poll() is None and not vectors:  # embedding is committed batch by batch
        time.sleep(0.02)
        try:
            conn = sqlite3.connect(f"file:{db / 'kb.sqlite'}?mode=ro", uri=True, timeout=0.1)
            vectors = conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]
            conn.close()
        except sqlite3.Error:
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert vectors > 0, "the kill was meant to land while embedding"
    info = kb_json("status", "--db", db)
    assert info["last_run"]["status"] == "interrupted" and info["vectors"]["complete"] is False
    assert 0 < info["vectors"]["embedded_texts"] < info["vectors"]["chunk_texts"]
    assert "incomplete" in kb("status", "--db", db).stdout
    proc = kb("query", "note", "--db", db, "--mode", "vector", check=4)
    assert "incomplete" in proc.stderr and "--vector-index none" not in proc.stderr
    kb("index", corpus, "--db", db, "--quiet", *model)
    kb("index", corpus, "--db", tmp_path / "reference", "--quiet", *model)
    same_vectors(db, tmp_path / "reference")
    assert kb_json("status", "--db", db)["vectors"]["complete"] is True


@pytest.mark.slow
def test_a_store_remembers_it_has_no_vectors(corpus, db):
    kb("index", corpus / "tech", "--db", db, "--vector-index", "none")
    (corpus / "tech" / "new.md").write_text("a new note about quokkas\n")
    report = kb_json("index", corpus / "tech", "--db", db)  # no flag: the store's setting
    assert report["embedded"] == 0 and report["vector_index"] is None
    report = kb_json("index", corpus / "tech", "--db", db, "--vector-index", "auto")  # explicit
    assert report["embedded"] > 0


@pytest.mark.slow
def test_a_bad_vector_index_names_every_choice(corpus, db):
    proc = kb("index", corpus, "--db", db, "--vector-index", "bogus", check=2)
    assert "none" in proc.stderr and "hnsw" in proc.stderr


@pytest.mark.slow
def test_same_relative_path_in_two_folders_is_told_apart(tmp_path, db):
    for name in ("a", "b"):
        corpus_of(tmp_path / name, {"README.md": f"wombat notes from {name}\n"})
    kb("index", tmp_path / "a", tmp_path / "b", "--db", db, "--vector-index", "none")
    lines = [l for l in kb("query", "wombat", "--db", db).stdout.splitlines() if "README.md" in l]
    assert len(lines) == 2 and lines[0].split()[-1] != lines[1].split()[-1]
    assert {l.split()[-1].rsplit("/", 2)[-2] for l in lines} == {"a", "b"}


@pytest.mark.slow
def test_json_help_mentions_file_only_where_there_is_one():
    for command, has_file in (("index", False), ("status", False), ("eval", False), ("query", True)):
        text = " ".join(kb(command, "--help").stdout.split())
        assert ("with --file" in text) == has_file, command


@pytest.mark.slow
def test_status_times_are_iso_8601(corpus, db):
    from datetime import datetime

    kb("index", corpus / "tech", "--db", db, "--vector-index", "none")
    last = kb_json("status", "--db", db)["last_run"]
    assert datetime.fromisoformat(last["started"]).tzinfo is not None
    assert datetime.fromisoformat(last["finished"]) >= datetime.fromisoformat(last["started"])


@pytest.mark.slow
def test_a_closed_pipe_ends_the_output_quietly(corpus, db):
    kb("index", corpus, "--db", db, "--vector-index", "none")
    (corpus / "q.txt").write_text("sourdough starter\n" * 2000)  # far more than a pipe holds
    proc = subprocess.run(f"{sys.executable} -m kb.cli query --file {corpus / 'q.txt'} --db {db} --mode bm25 | head -1; "
                          "echo \"status=${PIPESTATUS[0]}\"", shell=True, executable="/bin/bash",
                          capture_output=True, text=True, cwd=REPO)
    assert "status=141" in proc.stdout and proc.stderr == "", proc.stderr


def test_kv_cache_files_are_private(tmp_path):
    import numpy as np

    from kb.index.store.kv import record_sources

    torch = pytest.importorskip("torch")
    from kb.rag.disk_cache import DiskCache

    cache = DiskCache(tmp_path / "store" / "kv", "fp")
    cache.save(b"\x01" * 16, (1, 2), torch.zeros(2, 2), torch.zeros(2, 2))
    record_sources(cache.folder, 2, [([1, 2], [(0, 7)])])
    for path in [tmp_path / "store" / "kv", *(tmp_path / "store" / "kv").rglob("*")]:
        assert path.stat().st_mode & 0o077 == 0, path
    assert np.load(next((tmp_path / "store" / "kv").rglob("*.npz")))["tokens"].tolist() == [1, 2]


@pytest.mark.slow
def test_the_built_wheel_holds_every_package(tmp_path):
    """pip wheel . (what pipx and any non-editable install do) must ship every package."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    src = tmp_path / "src"
    for name in files:
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((REPO / name).read_bytes())
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(tmp_path / "w")],
                   check=True, capture_output=True)
    import zipfile

    (wheel,) = (tmp_path / "w").glob("*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    wanted = {"kb/" + f for f in files if f.endswith(".py") and "/" in f and f.split("/")[0] not in
              ("tests", "bench", "sample_corpus")} | {"kb/__init__.py", "kb/errors.py", "kb/names.py"}
    assert wanted <= shipped, sorted(wanted - shipped)
    assert "kb/setup.py" not in shipped
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = "import kb, kb.index.indexer, kb.index.vectors.hnsw, kb.cli.app; print(kb.__file__)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(site)},
                         capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert out.startswith(str(site))


@pytest.mark.slow
def test_index_checks_the_store_after_a_run_that_ended_badly(corpus, db):
    """Pages overwritten (a crash, a bad disk) go unnoticed by a run that reads only what it needs;
    after a run that did not end well, `kb index` runs SQLite's quick check first."""
    import random

    kb("index", corpus, "--db", db, "--vector-index", "none")
    conn = sqlite3.connect(db / "kb.sqlite")
    # leaves of the postings: an unchanged run never reads them (damage to the pages it reads,
    # SQLite reports by itself)
    pages = [p for (p,) in conn.execute(
        "SELECT pageno FROM dbstat WHERE name = 'chunk_terms' AND pagetype = 'leaf' ORDER BY pageno")]
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    path = db / "kb.sqlite"
    data = bytearray(path.read_bytes())
    for p in pages[:4]:
        data[(p - 1) * page:p * page] = random.Random(p).randbytes(page)
    path.write_bytes(bytes(data))
    kb("index", corpus, "--db", db, "--vector-index", "none")  # after a run that ended well: not checked
    conn = sqlite3.connect(db / "kb.sqlite")
    conn.execute("INSERT INTO runs(started, status) VALUES (0, 'running')")  # as a killed run leaves
    conn.commit()
    conn.close()
    proc = kb("index", corpus, "--db", db, "--vector-index", "none", check=4)
    assert "damaged" in proc.stderr and len(proc.stderr.splitlines()) == 1


@pytest.mark.slow
def test_a_query_of_100k_words_and_a_glob_with_bad_bytes(corpus, db, tmp_path):
    """Found by bench/fuzz.py: more distinct terms than SQLite takes variables in one statement;
    a --path holding a byte that is not UTF-8."""
    kb("index", corpus, "--db", db, "--vector-index", "none")
    import random

    rng = random.Random(5)
    (tmp_path / "q.txt").write_text("长城" + "".join(chr(rng.randrange(0x4e00, 0x9fff)) for _ in range(100_000)) + "\n")
    assert kb_json("query", "--file", tmp_path / "q.txt", "--db", db)["results"]
    env = {**os.environ}
    proc = subprocess.run([sys.executable, "-m", "kb.cli", "query", "sourdough", "--db", str(db), "--json",
                           "--path", os.fsdecode(b"\xff*")], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and json.loads(proc.stdout)["results"] == [], proc.stderr


@pytest.mark.slow
def test_a_file_that_kills_its_reader_process_is_skipped_and_the_rest_indexed(tmp_path, db):
    """A reader killed for its memory (or a crash in a native library) broke the whole pool, and
    with it every run. Simulated: reading poison.md ends the reader process at once."""
    root = tmp_path / "c"
    corpus_of(root, {f"n{i:02d}.md": f"note {i} about wombat number {i}\n" for i in range(40)})
    corpus_of(root, {"poison.md": "never read\n"})
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import multiprocessing, os, pathlib\n_real = pathlib.Path.read_bytes\n"
        "def _read(self):\n"
        "    if self.name == 'poison.md' and multiprocessing.current_process().name != 'MainProcess':\n"
        "        os._exit(9)\n"
        "    return _real(self)\n"
        "pathlib.Path.read_bytes = _read\n")
    env = {"PYTHONPATH": f"{hook}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    report = kb_json("index", root, "--db", db, "--vector-index", "none", env=env)
    assert report["added"] == 41 and report["skipped"] == 1 and report["errors"] == []
    assert any("poison.md: skipped, its reader process died" in w for w in report["warnings"])
    assert len(kb_json("query", "wombat", "--db", db, "-k", "50")["results"]) == 40
    assert kb_json("index", root, "--db", db, "--vector-index", "none", env=env)["unchanged"] == 41
