"""Office and e-book files as text: .docx (Word), .odt (OpenDocument) and .epub. Each is a zip
of XML (XHTML for EPUB), read with the standard library's zipfile and ElementTree: paragraphs
become lines, headings markdown headings (Word's Heading N styles, ODF's text:h outline level,
EPUB chapters through kb's HTML reader, in the spine's order). A zip member is read up to
MAX_MEMBER bytes and at most MAX_MEMBERS chapters, so a small file cannot inflate without end;
Python's expat refuses entity expansion attacks."""

from __future__ import annotations

import io
import posixpath
import zipfile
from xml.etree import ElementTree

MAX_MEMBER = 64 << 20
MAX_MEMBERS = 2000
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
_OPF = "{http://www.idpf.org/2007/opf}"
_CONTAINER = "{urn:oasis:names:tc:opendocument:xmlns:container}"


class Unreadable(Exception):
    """Not a readable file of its kind; the message says why."""


def text(data: bytes, kind: str) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return {"docx": _docx, "odt": _odt, "epub": _epub}[kind](z)
    except (zipfile.BadZipFile, KeyError, ElementTree.ParseError, ValueError) as e:
        raise Unreadable(f"not a readable {kind} file ({type(e).__name__}: {e})") from None


def _member(z: zipfile.ZipFile, name: str) -> bytes:
    with z.open(name) as f:
        data = f.read(MAX_MEMBER + 1)
    if len(data) > MAX_MEMBER:
        raise ValueError(f"{name} is larger than {MAX_MEMBER >> 20} MB inflated")
    return data


def _docx(z: zipfile.ZipFile) -> str:
    body = ElementTree.fromstring(_member(z, "word/document.xml"))
    lines = []
    for p in body.iter(_W + "p"):
        words = "".join(t.text or "" for t in p.iter() if t.tag in (_W + "t", _W + "tab"))
        style = p.find(f"{_W}pPr/{_W}pStyle")
        level = (style.get(_W + "val", "") if style is not None else "").lower().removeprefix("heading")
        lines.append(("#" * int(level) + " " if level.isdigit() and 0 < int(level) < 7 else "") + words)
    return "\n".join(lines)


def _odt(z: zipfile.ZipFile) -> str:
    body = ElementTree.fromstring(_member(z, "content.xml"))
    lines = []
    for el in body.iter():
        if el.tag == _TEXT + "h":
            level = int(el.get(_TEXT + "outline-level", "1") or 1)
            lines.append("#" * min(max(level, 1), 6) + " " + "".join(el.itertext()))
        elif el.tag == _TEXT + "p":
            lines.append("".join(el.itertext()))
    return "\n".join(lines)


def _epub(z: zipfile.ZipFile) -> str:
    from kb.index.formats import decode, html_text

    container = ElementTree.fromstring(_member(z, "META-INF/container.xml"))
    opf_path = container.find(f".//{_CONTAINER}rootfile").get("full-path")
    opf = ElementTree.fromstring(_member(z, opf_path))
    items = {i.get("id"): i.get("href") for i in opf.iter(_OPF + "item")}
    base = posixpath.dirname(opf_path)
    chapters = [posixpath.normpath(posixpath.join(base, items[r.get("idref")]))
                for r in opf.iter(_OPF + "itemref") if r.get("idref") in items][:MAX_MEMBERS]
    return "\n".join(html_text(decode(_member(z, c))[0]) for c in chapters)
