"""Files built to break or stall reading: each is skipped with a one-line warning or read into
bounded chunks, never stops a run. Sizes are small (under 1 MB); speed is bench/read_rate.py's."""

import re
import sys

import pytest
from conftest import REPO
from pdfgen import make_pdf

from kb.embed.tokenizer import load_tokenizer
from kb.index.chunker import MAX_TITLE_CHARS, ChunkConfig, chunk_text, headings
from kb.index.formats import Skip, extract, html_text
from kb.index.readpool import ReadConfig, ReadJob, read_document

sys.path.insert(0, str(REPO / "bench"))
from read_rate import HTML, VISIBLE, make_case  # noqa: E402  the bench's generators, smaller

TOK = load_tokenizer()
CFG = ChunkConfig()


def read(tmp_path, data: bytes, kind: str):
    path = tmp_path / f"file.{kind}"
    path.write_bytes(data)
    return read_document(ReadJob(str(path), str(tmp_path), kind, len(data), 0), ReadConfig(20.0, CFG, None))


PDF = make_pdf([["hello world"]])
HOSTILE_PDFS = {
    "encryption V9": PDF.replace(b"/Root 1 0 R >>", b"/Root 1 0 R /Encrypt << /Filter /Standard /V 9 /R 9 "
                                 b"/O (x) /U (y) /P -4 >> /ID [<00> <00>] >>"),
    "unknown filter": PDF.replace(b"<< /Length", b"<< /Filter /FooDecode /Length"),
}


@pytest.mark.parametrize("name", HOSTILE_PDFS)
def test_pdf_that_pypdf_cannot_handle_is_skipped(name, tmp_path):
    with pytest.raises(Skip, match=r"unreadable PDF \(NotImplementedError\)"):
        extract(HOSTILE_PDFS[name], "pdf")
    out = read(tmp_path, HOSTILE_PDFS[name], "pdf")
    assert out.skipped and out.doc.chunks == [] and out.error is None
    assert out.warnings == [f"{tmp_path / 'file.pdf'}: skipped, unreadable PDF (NotImplementedError)"]


@pytest.mark.parametrize("error", [AssertionError, AttributeError, RecursionError])
def test_any_failure_of_pypdf_is_a_skip(error, monkeypatch):
    import pypdf

    def broken(*args, **kwargs):
        raise error("deep\ninside pypdf")

    monkeypatch.setattr(pypdf, "PdfReader", broken)
    with pytest.raises(Skip, match=rf"^unreadable PDF \({error.__name__}\)$"):
        extract(PDF, "pdf")


@pytest.mark.parametrize("error", [RecursionError, MemoryError, ValueError])
def test_an_unexpected_error_skips_the_file_with_one_line(error, tmp_path, monkeypatch):
    from kb.index import readpool

    def broken(*args, **kwargs):
        raise error("two\nlines")

    monkeypatch.setattr(readpool, "chunk_text", broken)
    out = read(tmp_path, b"# Fine\n\ntext\n", "markdown")
    assert out.skipped and out.doc.chunks == [] and out.doc.note == f"cannot be read ({error.__name__})"
    assert out.warnings == [f"{tmp_path / 'file.markdown'}: skipped, cannot be read ({error.__name__})"]


# (case, scale): about 0.2-0.5 MB each; CJK smaller, jieba reads it at ~0.2 MB/s
PATHOLOGICAL = [("one_line", 0.1), ("one_word", 0.1), ("cjk_line", 0.01), ("headings", 0.03),
                ("nested_list", 0.02), ("html_huge_attribute", 0.5), ("html_deep_nesting", 0.5)]


@pytest.mark.parametrize("case, scale", PATHOLOGICAL)
def test_every_chunk_is_bounded_in_tokens_and_characters(case, scale, tmp_path):
    kind, data = make_case(case, scale)
    out = read(tmp_path, data, kind)
    assert not out.skipped and out.doc.chunks
    for c in out.doc.chunks:
        assert 0 < len(c.token_ids) <= CFG.max_tokens
        assert 0 < len(c.text) <= CFG.max_chars == 16 * CFG.max_tokens


@pytest.mark.parametrize("case", ["one_line", "one_word"])
def test_a_one_line_file_makes_many_chunks(case):
    _, data = make_case(case, 0.1)  # 0.5 MB on one line; one_word is a single [UNK] to WordPiece
    text = data.decode()
    out = chunk_text(text, "text", TOK, CFG)
    assert len(out) >= len(text) // CFG.max_chars
    assert all(len(c.text) <= CFG.max_chars and len(c.token_ids) <= CFG.max_tokens for c in out)
    if case == "one_word":  # cut into pieces of max_chars: too long to overlap
        assert "".join(c.text for c in out) == text


def test_a_token_longer_than_the_cap_is_cut_into_pieces_holding_its_id():
    word = "q" * 20_000
    out = chunk_text(f"before words\n{word}\nafter words", "text", TOK, CFG)
    unk = TOK.encode(word).ids
    assert unk == [TOK._tok.token_to_id("[UNK]")]
    middle = [c for c in out if set(c.text) == {"q"}]
    assert "".join(c.text for c in middle) == word[:sum(len(c.text) for c in middle)]
    assert all(c.token_ids.tolist() == unk and len(c.text) <= CFG.max_chars for c in middle)
    assert out[0].text.startswith("before words") and out[-1].text.endswith("after words")


def test_spaces_between_tokens_do_not_make_a_long_chunk():
    text = "start " + " " * 100_000 + " end\n" + "\n" * 100_000 + "last line"
    out = chunk_text(text, "text", TOK, CFG)
    assert [c.text.strip() for c in out] == ["start", "end", "last line"]


def test_word_cache_does_not_keep_giant_words(monkeypatch):
    from kb.embed import tokenizer
    from kb.embed.tokenizer import Tokenizer, default_model_dir

    monkeypatch.setattr(tokenizer, "WORD_CACHE_FROM", 0)
    tok = Tokenizer(default_model_dir(), "all-MiniLM-L6-v2")
    text = "Some words " + "x" * 50_000 + " and " + "y" * 101 + " more words"
    fast, full = tok.encode(text), tok._tok.encode(text, add_special_tokens=False)
    assert (fast.ids, fast.offsets) == (full.ids, full.offsets)
    assert max(map(len, tok._words.index)) <= 100


_OLD_ATX = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")  # the regex the title rule replaced


@pytest.mark.parametrize("line", ["# Title", "## a b ##", "#  a#  #", "# ###", "### x #", "#\tTab\t#\t",
                                  "####### seven", "#no space", "    # four spaces", "   # three", "# a # b",
                                  "# trailing   ", "#", "# ", "## # #"])
def test_atx_titles_are_the_old_regexs(line):
    m = _OLD_ATX.match(line)
    assert headings([line], "markdown") == ([(0, len(m.group(1)), m.group(2))] if m else [])


def test_a_heading_full_of_spaces_is_read_quickly_and_its_title_capped():
    line = "# a" + " " * 200_000 + "b"  # minutes for the old title regex at 5,000 spaces
    assert headings([line, "text"], "markdown") == [(0, 1, ("a" + " " * 200_000 + "b")[:MAX_TITLE_CHARS])]
    out = chunk_text(line + "\n" + "more text\n" * 2000, "markdown", TOK, CFG)
    assert {len(c.heading) for c in out} == {MAX_TITLE_CHARS}


@pytest.mark.parametrize("case", sorted(HTML))
def test_hostile_html_shows_its_visible_text(case):
    _, data = make_case(case, 0.2)
    text = html_text(data.decode())
    assert text.startswith(f"# Title\n\n{VISIBLE}\n")
    assert not any(markup in text for markup in ("<!", "<?", "<script", "<a ", "href", "title="))


@pytest.mark.parametrize("html, visible", [
    ("<p>a < b</p><p>c</p>", "a < b\n\nc"),
    ("<p>x</p><!-- hidden <p>y</p>", "x"),
    ("<p>x</p><script>var s = '</p>'; <b>", "x"),
    ("<p>x</p><a title='>'>link</a><a href=\"a>b\">two</a>", "x\nlinktwo"),
    ("<div>" * 50_000 + "deep" + "</div>" * 50_000, "deep"),
    ("<p>x</p><a href=\"never closed>text", "x"),
    ("<h2>Sub</h2><br/>after<br>", "## Sub\n\nafter"),
    ("<!DOCTYPE html><?php echo 1 ?><![CDATA[x]]></ odd>text", "text"),
    ("<pre>  keep\n  this</pre><p>a &amp; b &lt;c&gt;</p>", "keep\nthis\n\na & b <c>"),
    ("<SCRIPT>x</Script >seen<STYLE a='b'>p{}</style>", "seen"),
])
def test_html_tokens(html, visible):
    assert html_text(html) == visible + "\n"
