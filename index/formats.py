"""Turn a file's bytes into plain text: markdown, text, reST, code and data files (JSON, YAML,
TOML) as they are, HTML as its visible text (headings kept as markdown headings), PDF through
pypdf, Word, OpenDocument and EPUB files as their paragraphs (kb.index.office), Jupyter
notebooks as their cells (markdown as is, code fenced; outputs and metadata left out), and any
of these gzip-compressed (`notes.md.gz`: kind "markdown+gz").

Text that comes out of here is safe to show: control characters and escape sequences are gone.
"""

from __future__ import annotations

import codecs
import io
import logging
import re
from html import unescape
from pathlib import Path

MARKDOWN = {".md", ".markdown", ".mdx"}
HTML = {".html", ".htm", ".xhtml"}
TEXT = {".txt", ".text", ".org", ".adoc", ".tex"}
RST = {".rst"}
PDF = {".pdf"}
NOTEBOOK = {".ipynb"}
OFFICE = {".docx": "docx", ".odt": "odt", ".epub": "epub"}  # zips of XML (kb.index.office)
CODE = set(
    """.py .pyi .json .jsonc .jsonl .js .mjs .cjs .ts .tsx .jsx .java .kt .kts .scala .go .rs .c .h .cc .cpp .cxx
    .hpp .hh .cs .rb .php .swift .m .mm .sh .bash .zsh .fish .ps1 .sql .r .jl .lua .pl .pm .hs .ml
    .mli .ex .exs .erl .clj .dart .vue .svelte .css .scss .less .toml .yaml .yml .ini .cfg .conf
    .proto .graphql .cmake .gradle .nim .zig .v .sv .vhd""".split()
)
NAMES = {"readme", "license", "changelog", "makefile", "dockerfile", "notes", "todo"}
GZIP = "+gz"
MAX_INFLATED = 64 << 20  # a compressed file's text is read up to this; past it, the file is skipped

# C0/C1 controls except tab and newline, DEL, and bidi overrides that can disguise text.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class Skip(Exception):
    """The file is not indexed, by policy (binary, empty PDF, encrypted, ...). The message says why."""


def kind_of(path: Path) -> str | None:
    """The reader for a file name, or None where kb does not index that kind of file by default."""
    ext = path.suffix.lower()
    if ext == ".gz":
        inner = kind_of(path.with_suffix(""))
        return inner + GZIP if inner and inner != "pdf" and not inner.endswith(GZIP) else None
    if ext in OFFICE:
        return OFFICE[ext]
    for kind, exts in (("markdown", MARKDOWN), ("html", HTML), ("text", TEXT), ("rst", RST),
                       ("pdf", PDF), ("notebook", NOTEBOOK), ("code", CODE)):
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
    if kind.endswith(GZIP):
        data, kind = _inflate(data), kind.removesuffix(GZIP)
    if kind == "pdf":
        return clean(_pdf_text(data)), []
    if kind in OFFICE.values():
        from kb.index import office

        try:
            return clean(office.text(data, kind)), []
        except office.Unreadable as e:
            raise Skip(str(e)) from None
    text, warnings = decode(data)
    if kind == "html":
        text = html_text(text)
    elif kind == "notebook":
        text = notebook_text(text)
    return clean(text), warnings


def _inflate(data: bytes) -> bytes:
    """The gzip stream's content, refused past MAX_INFLATED (a small file can inflate to gigabytes)."""
    import zlib

    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(data, MAX_INFLATED)
    except zlib.error as e:
        raise Skip(f"not a readable gzip file ({e})") from None
    if d.unconsumed_tail:
        raise Skip(f"compressed text larger than {MAX_INFLATED >> 20} MB")
    return out


def notebook_text(raw: str) -> str:
    """A Jupyter notebook's cells as markdown: markdown cells as they are, code cells fenced in the
    notebook's language; outputs, metadata and attachments are not text a person wrote."""
    import json

    try:
        nb = json.loads(raw)
        cells = nb["cells"] if isinstance(nb, dict) else None
    except (ValueError, KeyError):
        cells = None
    if not isinstance(cells, list):
        raise Skip("not a Jupyter notebook (no cells)")
    lang = str(((nb.get("metadata") or {}).get("language_info") or {}).get("name", "python"))
    parts = []
    for cell in cells:
        if not isinstance(cell, dict):
            continue
        src = cell.get("source", "")
        src = "".join(map(str, src)) if isinstance(src, list) else str(src)
        if cell.get("cell_type") == "code":
            parts.append(f"```{lang}\n{src}\n```")
        elif src.strip():
            parts.append(src)
    return "\n\n".join(parts)


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

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # it logs every odd object it meets
    try:
        reader = PdfReader(io.BytesIO(data))
        encrypted = reader.is_encrypted and not reader.decrypt("")
        text = "" if encrypted else "\n".join(page.extract_text() or "" for page in reader.pages)
    except Exception as e:  # noqa: BLE001 - pypdf fails in many ways on odd files (NotImplementedError
        # for unknown filters and encryption, AssertionError, AttributeError, RecursionError...): each
        # is this one file's problem
        raise Skip(f"unreadable PDF ({type(e).__name__})") from e
    if encrypted:
        raise Skip("encrypted PDF")
    if not text.strip():
        raise Skip("PDF has no extractable text (scanned?)")
    return text


_BLOCK = set("p div section article header footer nav aside main li ul ol table tr br hr pre "
             "blockquote dl dt dd figure figcaption form title h1 h2 h3 h4 h5 h6".split())
_HIDDEN = {"script", "style", "noscript", "template", "svg", "head"}


_SPACES = re.compile(r"\s+")


def html_text(html: str) -> str:
    """The visible text of an HTML page, one block per line, h1..h6 as markdown headings."""
    parts: list[str] = []
    hidden = pre = 0  # depth inside elements whose text is not shown, and inside <pre>
    for kind, value in _tokens(html):
        if kind == "text":
            if not hidden:
                text = unescape(value)
                parts.append(text if pre else _SPACES.sub(" ", text))
            continue
        opens = kind == "start"
        if value in _HIDDEN:
            hidden = hidden + 1 if opens else max(0, hidden - 1)
        elif value == "pre":
            pre = pre + 1 if opens else max(0, pre - 1)
        if value in _BLOCK:
            parts.append("\n")
        if opens and len(value) == 2 and value[0] == "h" and value[1] in "123456" and not hidden:
            parts.append("#" * int(value[1]) + " ")
    lines = (line.strip() for line in "".join(parts).split("\n"))
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip() + "\n"


_NAME_END = re.compile(r"[\t\n\f\r />]|$")
_TAG_STOP = re.compile(r"[>=]")
_SPACE_RUN = re.compile(r"[\t\n\f\r ]*")
_COMMENT_END = re.compile(r"--!?>")
_RAW_END = {tag: re.compile(rf"</{tag}[\t\n\f\r />]", re.IGNORECASE) for tag in ("script", "style")}


def _tokens(html: str):
    """("text", data), ("start", tag) and ("end", tag) items of a page (tags lower-cased),
    found as an HTML5 tokenizer does in one pass. A construct left open (a comment, a tag, a quoted
    attribute, a script) runs to the end of the page and is dropped, as browsers do; each search
    starts where the last one ended, so a page costs time linear in its length whatever it holds
    (Python's html.parser rescans to the end for each unclosed "</" or "<!": 136 s for 1 MB)."""
    n, i = len(html), 0
    while i < n:
        lt = html.find("<", i)
        if lt < 0:
            lt = n
        if lt > i:
            yield "text", html[i:lt]
        if lt == n:
            return
        is_end = html.startswith("</", lt)
        start = lt + 2 if is_end else lt + 1
        if html[start:start + 1].isascii() and html[start:start + 1].isalpha():
            items, i = _element(html, start, is_end)
            yield from items
            if i < 0:
                return  # the page ends inside the tag
        elif html.startswith("<!--", lt):
            end = _COMMENT_END.search(html, lt + 2)
            i = end.end() if end else n
        elif html[lt + 1:lt + 2] in ("!", "?", "/"):  # doctype, CDATA, <?php, "</ x>": up to ">"
            end = html.find(">", lt + 2)
            i = end + 1 if end >= 0 else n
        else:
            yield "text", "<"  # "a < b"
            i = lt + 1


def _element(html: str, start: int, is_end: bool) -> tuple[list, int]:
    """The items of the tag whose name begins at `start` (with a script's or style's text), and
    where scanning resumes: -1 when the page ends inside the tag."""
    name_end = _NAME_END.search(html, start).start()
    i = _tag_end(html, name_end)
    if i < 0:
        return [], -1
    name = html[start:name_end].lower()
    if is_end:
        return [("end", name)], i
    items = [("start", name)]
    if html[i - 2] == "/":  # <br/>: its end tag too
        items.append(("end", name))
    elif name in _RAW_END:  # script, style: text up to their end tag
        end = _RAW_END[name].search(html, i)
        stop = end.start() if end else len(html)
        items.append(("text", html[i:stop]))
        i = stop
    return items, i


def _tag_end(html: str, pos: int) -> int:
    """Where the tag whose attributes start at `pos` ends (after its ">"), or -1 at the page's end;
    a ">" inside a quoted attribute value does not end it."""
    while True:
        stop = _TAG_STOP.search(html, pos)
        if stop is None:
            return -1
        if stop.group() == ">":
            return stop.end()
        value = _SPACE_RUN.match(html, stop.end()).end()
        if html[value:value + 1] in ("\"", "'"):
            close = html.find(html[value], value + 1)
            if close < 0:
                return -1
            pos = close + 1
        else:
            pos = value
