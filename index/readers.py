"""Turn a file's bytes into plain text: markdown, text, reST and code as they are, HTML as its
visible text (headings kept as markdown headings), PDF through pypdf.

Text that comes out of here is safe to show: control characters and escape sequences are gone.
"""

from __future__ import annotations

import codecs
import io
import logging
import re
from html.parser import HTMLParser
from pathlib import Path

MARKDOWN = {".md", ".markdown", ".mdx"}
HTML = {".html", ".htm", ".xhtml"}
TEXT = {".txt", ".text", ".org", ".adoc", ".tex"}
RST = {".rst"}
PDF = {".pdf"}
CODE = set(
    """.py .pyi .ipynb .js .mjs .cjs .ts .tsx .jsx .java .kt .kts .scala .go .rs .c .h .cc .cpp .cxx
    .hpp .hh .cs .rb .php .swift .m .mm .sh .bash .zsh .fish .ps1 .sql .r .jl .lua .pl .pm .hs .ml
    .mli .ex .exs .erl .clj .dart .vue .svelte .css .scss .less .toml .yaml .yml .ini .cfg .conf
    .proto .graphql .cmake .gradle .nim .zig .v .sv .vhd""".split()
)
NAMES = {"readme", "license", "changelog", "makefile", "dockerfile", "notes", "todo"}

# C0/C1 controls except tab and newline, DEL, and bidi overrides that can disguise text.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class Skip(Exception):
    """The file is not indexed, by policy (binary, empty PDF, encrypted, ...). The message says why."""


def kind_of(path: Path) -> str | None:
    """The reader for a file name, or None where kb does not index that kind of file by default."""
    ext = path.suffix.lower()
    for kind, exts in (("markdown", MARKDOWN), ("html", HTML), ("text", TEXT), ("rst", RST),
                       ("pdf", PDF), ("code", CODE)):
        if ext in exts:
            return kind
    if path.stem.lower() in NAMES and ext in ("", ".txt", ".md"):
        return "text"
    return None


def clean(text: str) -> str:
    """Normalise newlines and drop control characters (terminal escapes never reach a screen)."""
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def extract(data: bytes, kind: str) -> tuple[str, list[str]]:
    """(text, warnings) for the bytes of a file of `kind`; raises Skip for files kb does not index."""
    if kind == "pdf":
        return clean(_pdf_text(data)), []
    text, warnings = decode(data)
    if kind == "html":
        text = html_text(text)
    return clean(text), warnings


def decode(data: bytes) -> tuple[str, list[str]]:
    """UTF-8 (or UTF-16/32 with a BOM); invalid bytes become U+FFFD with a warning."""
    for bom, codec in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                       (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            return data.decode(codec, errors="replace"), []
    if b"\x00" in data[:8192]:
        raise Skip("binary file")
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), ["invalid UTF-8, decoded with replacement"]


def _pdf_text(data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # it logs every odd object it meets
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise Skip("encrypted PDF")
        text = "\n".join(page.extract_text() or "" for page in reader.pages)
    except (PyPdfError, ValueError, KeyError, TypeError) as e:
        raise Skip(f"unreadable PDF ({type(e).__name__})") from e
    if not text.strip():
        raise Skip("PDF has no extractable text (scanned?)")
    return text


_BLOCK = set("p div section article header footer nav aside main li ul ol table tr br hr pre "
             "blockquote dl dt dd figure figcaption form title h1 h2 h3 h4 h5 h6".split())
_HIDDEN = {"script", "style", "noscript", "template", "svg", "head"}


class _HtmlText(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0  # depth inside elements whose text is not shown
        self.pre = 0

    def handle_starttag(self, tag, attrs):
        if tag in _HIDDEN:
            self.hidden += 1
        elif tag == "pre":
            self.pre += 1
        if tag in _BLOCK:
            self.parts.append("\n")
        if len(tag) == 2 and tag[0] == "h" and tag[1] in "123456" and not self.hidden:
            self.parts.append("#" * int(tag[1]) + " ")

    def handle_endtag(self, tag):
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if self.hidden:
            return
        self.parts.append(data if self.pre else re.sub(r"\s+", " ", data))


def html_text(html: str) -> str:
    """The visible text of an HTML page, one block per line, h1..h6 as markdown headings."""
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    lines = (line.strip() for line in "".join(parser.parts).split("\n"))
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip() + "\n"
