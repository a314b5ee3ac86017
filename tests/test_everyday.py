"""The everyday CLI (issue 20), in this process with the tiny encoder: several words as one
query, -h and --version, the output formats, --min-score, --type, --since and --path as a folder,
`kb get`, .gitignore and the files people keep (JSON, notebooks, gzip), pass-over counts."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import shutil
from pathlib import Path
from unittest import mock

import pytest

from conftest import SAMPLE
from inprocess import kb_run, kb_run_json


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_encoder):
    root = tmp_path_factory.mktemp("everyday")
    corpus = Path(shutil.copytree(SAMPLE, root / "corpus"))
    kb_run("index", corpus, "--db", root / "store", "--model", tiny_encoder, "--quiet")
    return corpus, root / "store"


def _q(store, *args, **kw):
    return kb_run("query", *args, "--db", store, **kw).stdout


def test_several_words_are_one_query(indexed):
    _, store = indexed
    words, quoted = (json.loads(_q(store, *q, "--json")) for q in (("sqlite", "write", "ahead", "log"),
                                                                    ("sqlite write ahead log",)))
    assert words["query"] == quoted["query"] and words["results"] == quoted["results"]


def test_help_and_version():
    assert "Usage:" in kb_run("-h").stdout and "--json " in kb_run("query", "-h").stdout
    assert "<bool>" not in kb_run("query", "-h").stdout  # flags are shown as flags
    assert kb_run("--version").stdout.startswith("kb ")
    assert "--install-completion" in kb_run("-h").stdout  # Typer's shell completion is on
    # Typer finds the shell among the process's ancestors; under cron or a detached runner there is
    # none, so the test names it (what is checked is kb's completion script, not the detection)
    with mock.patch("shellingham.detect_shell", return_value=("bash", "/bin/bash")):
        script = kb_run("--show-completion").stdout
    assert "complete" in script and "_KB_COMPLETE" in script


def test_formats_agree_with_json(indexed):
    corpus, store = indexed
    whole = json.loads(_q(store, "espresso grind", "--json"))["results"]
    rows = [json.loads(line) for line in _q(store, "espresso grind", "--format", "jsonl").splitlines()]
    assert [(r["path"], r["start_line"]) for r in rows] == [(h["path"], h["start_line"]) for h in whole]
    table = list(csv.DictReader(io.StringIO(_q(store, "espresso grind", "--format", "csv"))))
    assert [t["path"] for t in table] == [h["path"] for h in whole] and table[0]["query"] == "espresso grind"
    files = _q(store, "espresso grind", "-l").splitlines()
    assert files == list(dict.fromkeys(str(corpus / h["path"]) for h in whole))
    grep = _q(store, "espresso grind", "--format", "grep").splitlines()
    assert grep[0].startswith(f"{corpus / whole[0]['path']}:{whole[0]['start_line']}: ")
    md = _q(store, "espresso grind", "--format", "md")
    assert md.startswith("### espresso grind") and md.count("\n| ") == len(whole) + 1
    clash = kb_run("query", "x", "--db", store, "--json", "-l", check=2)
    assert "give one" in clash.stderr


def test_min_score_type_since_and_path(indexed, tiny_encoder):
    corpus, store = indexed
    all_hits = json.loads(_q(store, "espresso grind", "--json"))["results"]
    floor = all_hits[2]["score"]
    kept = json.loads(_q(store, "espresso grind", "--json", "--min-score", str(floor)))["results"]
    assert kept == [h for h in all_hits if h["score"] >= floor]
    code = json.loads(_q(store, "function", "--json", "--type", "code", "-k", "50"))["results"]
    assert code and all(h["path"].startswith("code/") for h in code)
    py = json.loads(_q(store, "function", "--json", "--type", "py", "-k", "50"))["results"]
    assert py and all(h["path"].endswith(".py") for h in py)
    os.utime(corpus / "cooking" / "espresso-extraction.md", (1e9, 1e9))  # 2001
    os.utime(corpus / "tech" / "sqlite-wal.md")  # now
    kb_run("index", corpus, "--db", store, "--model", tiny_encoder, "--quiet")  # the store keeps each mtime
    recent = {h["path"] for h in json.loads(_q(store, "espresso sqlite", "--json", "--since", "2w", "-k", "50"))["results"]}
    assert "tech/sqlite-wal.md" in recent and "cooking/espresso-extraction.md" not in recent
    assert json.loads(_q(store, "espresso", "--json", "--since", "2000-01-01", "--mode", "bm25"))["results"]
    for where in ("tech", "tech/", str(corpus / "tech"), "tech/*"):
        hits = json.loads(_q(store, "sqlite", "--json", "--path", where))["results"]
        assert hits and all(h["path"].startswith("tech/") for h in hits), where
    assert kb_run("query", "x", "--db", store, "--since", "soon", check=2).stderr.count("\n") == 1


def test_get_prints_lines_as_indexed(indexed):
    corpus, store = indexed
    path = corpus / "tech" / "sqlite-wal.md"
    lines = path.read_text().split("\n")
    assert kb_run("get", "tech/sqlite-wal.md:2-4", "--db", store).stdout == "\n".join(lines[1:4]) + "\n"
    got = kb_run_json("get", f"{path}:3", "--db", store)
    assert (got["text"], got["source"], got["start_line"], got["end_line"]) == (lines[2], "file", 3, 3)
    numbered = kb_run("get", "tech/sqlite-wal.md:5-6", "-n", "--db", store).stdout
    assert numbered.startswith("5: ") and "\n6: " in numbered
    assert kb_run("get", "no/such.md", "--db", store, check=3).stderr.startswith("kb: error:")
    assert kb_run("get", "tech/sqlite-wal.md:9999", "--db", store, check=2).stderr.count("\n") == 1
    assert kb_run("get", "tech/sqlite-wal.md:5-2", "--db", store, check=2)


def test_get_falls_back_to_the_stored_chunks(tmp_path, tiny_encoder):
    corpus = Path(shutil.copytree(SAMPLE / "tech", tmp_path / "c"))
    kb_run("index", corpus, "--db", tmp_path / "s", "--model", tiny_encoder, "--quiet")
    path = corpus / "sqlite-wal.md"
    before = path.read_text().split("\n")
    path.write_text("rewritten\n")
    proc = kb_run("get", "sqlite-wal.md:1-3", "--db", tmp_path / "s")
    assert proc.stdout == "\n".join(before[:3]) + "\n" and "changed or is gone" in proc.stderr


def test_gitignore_file_types_and_pass_over_counts(tmp_path):
    root = tmp_path / "repo"
    for rel, text in {"src/a.md": "alpha notes", "build/out.md": "built", "node_modules/m/r.md": "dep",
                      "conf/settings.json": '{"retention_days": 30}', "img/logo.png": "png",
                      ".hidden/h.md": "hidden"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / ".gitignore").write_text("build/\nnode_modules/\n")
    nb = {"cells": [{"cell_type": "markdown", "source": ["# Plotting\n", "We plot the quokka census."]},
                    {"cell_type": "code", "source": "plot(census)", "outputs": [{"data": {"image/png": "iVBOR"}}]}],
          "metadata": {"language_info": {"name": "python"}}}
    (root / "nb.ipynb").write_text(json.dumps(nb))
    (root / "old.md.gz").write_bytes(gzip.compress(b"# Archive\n\nthe wombat ledger\n"))
    (root / "bomb.txt.gz").write_bytes(gzip.compress(b"\0" * (80 << 20)))
    store = tmp_path / "s"
    report = kb_run_json("index", root, "--db", store, "--vector-index", "none")
    assert report["passed_over"] == {"hidden": 2, "ignored": 2, "other type": 1}  # .gitignore, .hidden/
    listed = set(_q(store, "quokka census wombat ledger retention_days alpha", "-l", "--mode", "bm25",
                    "-k", "20").splitlines())
    assert listed == {str(root / p) for p in ("nb.ipynb", "old.md.gz", "conf/settings.json", "src/a.md")}
    cell = json.loads(_q(store, "quokka", "--json", "--mode", "bm25"))["results"][0]
    assert cell["heading"] == "Plotting" and "iVBOR" not in cell["text"] and "image/png" not in cell["text"]
    assert any("bomb.txt.gz: skipped" in w for w in report["warnings"])
    again = kb_run_json("index", root, "--db", store, "--vector-index", "none", "--no-gitignore")
    assert again["added"] == 2 and "ignored" not in again["passed_over"]


def test_a_file_named_once_stays_when_its_folder_is_indexed(tmp_path):
    root = tmp_path / "f"
    root.mkdir()
    (root / "a.md").write_text("alpha")
    (root / "notes.xyz").write_text("the kakapo roster")
    store = tmp_path / "s"
    kb_run("index", root / "notes.xyz", "--db", store, "--vector-index", "none", "--quiet")
    report = kb_run_json("index", root, "--db", store, "--vector-index", "none")
    assert report["removed"] == 0 and report["added"] == 1
    assert json.loads(_q(store, "kakapo", "--json", "--mode", "bm25"))["results"]


def test_the_embedding_bar_moves_within_a_batch_on_a_cpu(tmp_path, tiny_encoder, monkeypatch):
    """A batch of 256 texts takes tens of seconds on a CPU: the bar moves every PROGRESS_EVERY."""
    from kb.embed.encoder import EmbedConfig
    from kb.index.indexer import IndexConfig, index_paths
    from kb.index.phases import embed

    from kb.embed.encoder import Encoder

    monkeypatch.setattr(embed, "PROGRESS_EVERY", 4)
    seen = []
    real = Encoder.embed_passages
    monkeypatch.setattr(Encoder, "embed_passages", lambda self, ids: seen.append(("embed", len(ids))) or real(self, ids))

    class Recording:
        def start(self, total, label="indexing"):
            seen.append(("start", label, total))

        def advance(self, path, tokens=0):
            seen.append(("advance",))

        def finish(self):
            seen.append(("finish",))
    cfg = IndexConfig(embed=EmbedConfig(model=str(tiny_encoder), device="cpu"), workers=1)
    index_paths([shutil.copytree(SAMPLE, tmp_path / "c")], tmp_path / "s", cfg, Recording())
    start = max(i for i, e in enumerate(seen) if e[:2] == ("start", "embedding"))
    total, run = seen[start][2], seen[start + 1:]
    assert total > 8 and run.count(("advance",)) == total
    assert all(e[1] <= 4 for e in run if e[0] == "embed")  # each slice is followed by its advances
    assert run[:6] == [("embed", 4)] + [("advance",)] * 4 + [("embed", 4)]


def _zip(path: Path, members: dict[str, str]) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        for name, text in members.items():
            z.writestr(name, text)
    return path


W = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
ODF = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
       'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"')


def test_word_opendocument_and_epub_files_are_read_as_their_paragraphs(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    _zip(root / "report.docx", {"word/document.xml": (
        f'<w:document {W}><w:body><w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Budget</w:t></w:r></w:p>'
        '<w:p><w:r><w:t>The narwhal fund is </w:t></w:r><w:r><w:t>closed.</w:t></w:r></w:p></w:body></w:document>')})
    _zip(root / "minutes.odt", {"content.xml": (
        f'<office:document-content {ODF}><office:body><office:text><text:h text:outline-level="2">Minutes</text:h>'
        '<text:p>The axolotl motion <text:span>passed</text:span>.</text:p></office:text></office:body>'
        '</office:document-content>')})
    _zip(root / "book.epub", {
        "META-INF/container.xml": ('<container xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
                                   '<rootfile full-path="OEBPS/content.opf"/></rootfiles></container>'),
        "OEBPS/content.opf": ('<package xmlns="http://www.idpf.org/2007/opf"><manifest>'
                              '<item id="c2" href="two.xhtml"/><item id="c1" href="one.xhtml"/></manifest>'
                              '<spine><itemref idref="c1"/><itemref idref="c2"/></spine></package>'),
        "OEBPS/one.xhtml": "<html><body><h1>Chapter One</h1><p>The pangolin sleeps.</p></body></html>",
        "OEBPS/two.xhtml": "<html><body><h1>Chapter Two</h1><p>The pangolin wakes.</p></body></html>"})
    (root / "broken.docx").write_bytes(b"PK\x03\x04 not really a zip")
    store = tmp_path / "s"
    report = kb_run_json("index", root, "--db", store, "--vector-index", "none")
    assert report["added"] == 4 and report["skipped"] == 1 and any("broken.docx" in w for w in report["warnings"])
    hit = lambda q: json.loads(_q(store, q, "--json", "--mode", "bm25"))["results"][0]  # noqa: E731
    assert (hit("narwhal")["path"], hit("narwhal")["heading"]) == ("report.docx", "Budget")
    assert "narwhal fund is closed." in hit("narwhal")["text"]
    assert (hit("axolotl")["path"], hit("axolotl")["heading"]) == ("minutes.odt", "Minutes")
    assert "The axolotl motion passed." in hit("axolotl")["text"]
    book = kb_run("get", "book.epub", "--db", store).stdout
    assert book.index("Chapter One") < book.index("Chapter Two")  # the spine's order, not the manifest's


def test_context_lines_around_each_hit(indexed):
    corpus, store = indexed
    hits = json.loads(_q(store, "checkpoint pages", "--json", "-C", "2", "-k", "3"))["results"]
    for h in hits:
        lines = (corpus / h["path"]).read_text().split("\n")
        assert h["before"] == lines[max(0, h["start_line"] - 3):h["start_line"] - 1]
        assert h["after"] == lines[h["end_line"]:h["end_line"] + 2]
    assert any(h["before"] for h in hits) and "before" not in json.loads(_q(store, "checkpoint", "--json"))["results"][0]
    text = _q(store, "checkpoint pages", "-C", "1", "-k", "1")
    first = hits[0]
    if first["before"]:
        assert f"    {first['start_line'] - 1}- " in text
