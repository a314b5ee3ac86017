import pytest
from pdfgen import make_pdf

from kb.index.formats import Skip, extract, html_text, kind_of
from pathlib import Path


def test_kinds():
    assert kind_of(Path("a.md")) == "markdown"
    assert kind_of(Path("a.RST")) == "rst"
    assert kind_of(Path("x.py")) == "code"
    assert kind_of(Path("README")) == "text"
    assert kind_of(Path("photo.png")) is None


def test_html_visible_text_with_headings():
    text = html_text("<html><head><title>t</title><script>var x = 'secret';</script></head><body>"
                     "<h1>Main</h1><p>Hello <b>bold</b>\n world &amp; more</p><style>p{}</style>"
                     "<h2>Sub</h2><ul><li>one</li><li>two</li></ul></body></html>")
    assert "secret" not in text and "p{}" not in text
    assert text.splitlines() == ["# Main", "", "Hello bold world & more", "", "## Sub", "", "one", "", "two"]


def test_pdf_text():
    data = make_pdf([["First page line"], ["Second page (with parens)"]])
    text, warnings = extract(data, "pdf")
    assert "First page line" in text and "Second page (with parens)" in text
    assert warnings == []


def test_broken_pdf_is_skipped():
    with pytest.raises(Skip):
        extract(b"%PDF-1.4 garbage", "pdf")


def test_binary_is_skipped():
    with pytest.raises(Skip, match="binary"):
        extract(b"abc\x00\x01\x02", "text")


def test_invalid_utf8_is_replaced_with_a_warning():
    text, warnings = extract("caf\xe9 ok".encode("latin-1"), "text")
    assert text == "caf\ufffd ok" and warnings == ["invalid UTF-8, decoded with replacement"]


def test_utf16_with_bom():
    text, _ = extract("hello wörld".encode("utf-16"), "text")
    assert text == "hello wörld"


def test_control_characters_and_escapes_are_removed():
    text, _ = extract(b"red \x1b[31mALERT\x1b[0m\r\nbell\x07 \xc2\x9b2J", "text")
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text and "\r" not in text
    assert "ALERT" in text
