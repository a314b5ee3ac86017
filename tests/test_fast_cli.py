"""The fast tier's end-to-end loop: `kb` in this process (tests/inprocess.py) with the tiny encoder
(tests/tiny.py): index -> status -> query in every mode -> check, and the documented exit codes.
The same commands in a real process, with the real model, are the slow tier (test_cli.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import SAMPLE, damage
from inprocess import kb_run, kb_run_json

INDEX_KEYS = {"added", "updated", "unchanged", "removed", "chunks_added", "chunks_removed", "seconds",
              "embedded", "vector_index", "skipped", "passed_over", "errors", "warnings", "phases"}
QUERY_KEYS = {"query", "mode", "results", "timings_ms"}
HIT_KEYS = {"rank", "score", "path", "start_line", "end_line", "heading", "text"}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_encoder):
    """sample_corpus indexed once with the tiny encoder: (corpus, store, the index run's JSON).
    The tests of this module only read it."""
    root = tmp_path_factory.mktemp("fast-cli")
    corpus = Path(shutil.copytree(SAMPLE, root / "corpus"))
    report = kb_run_json("index", corpus, "--db", root / "store", "--model", tiny_encoder)
    return corpus, root / "store", report


def test_index_embeds_every_chunk(indexed):
    _, _, report = indexed
    assert report.keys() == INDEX_KEYS and report["added"] >= 30
    assert report["embedded"] == report["chunks_added"] > report["added"]
    assert report["vector_index"] == "flat" and report["errors"] == report["warnings"] == []
    assert set(report["phases"]) == {"plan", "read", "write", "feed", "embed", "derive"}
    assert all(s >= 0 for s in report["phases"].values())


def test_status_counts_what_was_indexed(indexed):
    _, db, report = indexed
    info = kb_run_json("status", "--db", db)
    assert info["documents"] == report["added"] and info["chunks"] == report["chunks_added"]
    assert info["fingerprint"]["tokenizer"] == "tiny-bert" and info["last_run"]["status"] == "ok"
    vectors = info["vectors"]
    assert (vectors["kind"], vectors["count"], vectors["dims"], vectors["model"]) == \
        ("flat", report["chunks_added"], 32, "tiny-bert")
    assert "documents" in kb_run("status", "--db", db).stdout


@pytest.mark.parametrize("mode", ["bm25", "vector", "hybrid"])
def test_query_json_in_every_mode(indexed, mode):
    corpus, db, _ = indexed
    result = kb_run_json("query", "sourdough starter", "--db", db, "--mode", mode, "-k", "3")
    assert result.keys() == QUERY_KEYS and result["mode"] == mode  # no note: nothing fell back
    hits = result["results"]
    assert 1 <= len(hits) <= 3 and [h["rank"] for h in hits] == list(range(1, len(hits) + 1))
    assert all(HIT_KEYS <= h.keys() for h in hits)
    for hit in hits:  # the tiny encoder's ranking means nothing; where a hit points must hold
        lines = (corpus / hit["path"]).read_text().splitlines()
        assert lines[hit["start_line"] - 1] in hit["text"]
    if mode == "bm25":
        assert hits[0]["path"] == "cooking/sourdough-starter.md"
    if mode == "hybrid":
        assert {"embed", "vector", "bm25"} <= result["timings_ms"].keys()


def test_query_human_output_and_file_of_queries(indexed):
    _, db, _ = indexed
    assert "cooking/sourdough-starter.md:" in kb_run("query", "sourdough starter", "--db", db,
                                                     "--mode", "bm25").stdout
    lines = kb_run("query", "--file", "-", "--db", db, "--json", input="sourdough\n\ndns ttl\n").stdout
    assert len(lines.splitlines()) == 2


def test_check_passes_and_a_second_run_changes_nothing(indexed, tiny_encoder):
    corpus, db, report = indexed
    assert kb_run_json("check", "--db", db)["ok"]
    assert kb_run("check", "--db", db).stdout.strip().endswith(": ok")
    again = kb_run_json("index", corpus, "--db", db, "--model", tiny_encoder)
    assert (again["unchanged"], again["added"], again["embedded"]) == (report["added"], 0, 0)


@pytest.mark.parametrize("harm", ["vectors.npz", "bm25.npz"])
def test_check_finds_a_damaged_derived_file_and_repair_rebuilds_it(indexed, tmp_path, harm):
    _, pristine, _ = indexed
    db = Path(shutil.copytree(pristine, tmp_path / "store"))
    damage(next(db.rglob(harm)))
    proc = kb_run("check", "--db", db, "--json", check=4)
    assert len(proc.stderr.splitlines()) == 1 and "--repair" in proc.stderr
    assert not json.loads(proc.stdout)["ok"]
    assert kb_run_json("check", "--db", db, "--repair")["repaired"]
    assert kb_run_json("check", "--db", db)["ok"]


def test_kb_db_names_the_store(indexed):
    _, db, report = indexed
    assert kb_run_json("status", env={"KB_DB": str(db)})["documents"] == report["added"]


def test_errors_are_one_line_with_the_documented_exit_code(indexed, tmp_path):
    corpus, db, _ = indexed
    cases = [
        (("query", "x", "--db", tmp_path / "none"), 3, "no knowledge base"),
        (("index", tmp_path / "missing", "--db", tmp_path / "new"), 3, "no such file"),
        (("index", corpus, "--db", tmp_path / "new", "--model", tmp_path), 3, "no tokenizer.json"),
        (("query", "x", "--db", db, "--bogus"), 2, "--bogus"),
        (("query", "   ", "--db", db), 2, "empty query"),
        (("query", "x", "--db", db, "--mode", "sideways"), 2, "mode"),
    ]
    for args, code, said in cases:
        proc = kb_run(*args, check=code)
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and said in lines[0] and "internal error" not in lines[0], (args, lines)
    assert not (tmp_path / "new").exists()


def test_vector_query_of_a_bm25_store_is_exit_4(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Ferries\n\nThe ferry leaves at noon.\n")
    kb_run("index", tmp_path / "docs", "--db", tmp_path / "store", "--vector-index", "none", "--quiet")
    proc = kb_run("query", "ferry", "--db", tmp_path / "store", "--mode", "vector", check=4)
    assert "no vectors" in proc.stderr
    hybrid = kb_run("query", "ferry", "--db", tmp_path / "store")
    assert "a.md:" in hybrid.stdout and "fell back to bm25" in hybrid.stderr


def test_a_bad_file_is_skipped_with_a_warning_and_an_unreadable_one_is_exit_5(tmp_path, tiny_encoder,
                                                                              monkeypatch):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.md").write_text("# Lighthouses\n\nThe keeper trims the wick at dusk.\n")
    (docs / "binary.txt").write_bytes(b"\x00\x01\x02" * 100)
    proc = kb_run("index", docs, "--db", tmp_path / "store", "--model", tiny_encoder)
    assert "binary file" in proc.stderr and "binary.txt" in proc.stderr
    (docs / "good.md").write_text("# Lighthouses\n\nThe keeper trims the wick at dawn.\n")
    real = Path.read_bytes
    # Root reads anything: the denial is simulated (fewer files than the read pool needs: read here).
    monkeypatch.setattr(Path, "read_bytes", lambda p: _deny(p) if p.name == "good.md" else real(p))
    proc = kb_run("index", docs, "--db", tmp_path / "store", "--model", tiny_encoder, "--json", check=5)
    assert "good.md" in proc.stderr and "1 file(s) could not be read" in proc.stderr
    assert "wick" in kb_run("query", "wick", "--db", tmp_path / "store", "--mode", "bm25").stdout  # kept


def _deny(path: Path) -> bytes:
    raise PermissionError(13, "Permission denied", str(path))
