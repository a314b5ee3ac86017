"""`kb get`: an indexed document, or lines of it, as the index read it (a hit's line numbers
count in that text: HTML's visible text, a PDF's extracted text). The file is read again when
its bytes are still those indexed; otherwise (changed or gone) the lines come from the stored
chunks, which cover every indexed line."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from kb.errors import NotFound, UsageError
from kb.index.store import Store, lookup

_RANGE = re.compile(r":(\d+)(?:-(\d+))?$")


@dataclass(frozen=True)
class Lines:
    path: str  # relative to its indexed folder, as results show it
    root: str
    kind: str
    start_line: int  # 1-based, inclusive
    end_line: int
    source: str  # "file": read again; "store": from the chunks (the file changed or is gone)
    text: str

    def to_json(self) -> dict:
        return asdict(self)


def target(spec: str) -> tuple[str, int | None, int | None]:
    """PATH[:LINE[-LINE]] -> (path, first line or None, last line or None)."""
    m = _RANGE.search(spec)
    if not m:
        return spec, None, None
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) else first
    if first < 1 or last < first:
        raise UsageError(f"bad line range {m.group(0)[1:]}: give LINE or FIRST-LAST, counting from 1")
    return spec[:m.start()], first, last


def get(store: Store, spec: str) -> Lines:
    """The lines `spec` names. NotFound when no indexed document has that path; UsageError when
    several do (the same relative path under two folders: give the absolute one)."""
    rows = _find(store, spec)  # a name that ends in ":12" is a name first
    name, first, last = (spec, None, None) if rows else target(spec)
    rows = rows or _find(store, name)
    if not rows:
        raise NotFound(f"no indexed document at {name} (kb query -l lists paths)")
    if len(rows) > 1:
        raise UsageError(f"{name} is indexed under {len(rows)} folders; give its absolute path")
    doc_id, path, root, kind, digest = rows[0]
    lines, source = _lines(store, doc_id, Path(path), kind, digest)
    first, last = first or 1, min(last or len(lines), len(lines))
    if first > max(len(lines), 1):
        raise UsageError(f"{name} has {len(lines)} lines; line {first} is past its end")
    return Lines(os.path.relpath(path, root), root, kind, first, last, source, "\n".join(lines[first - 1:last]))


def around(store: Store, results: list, n: int) -> list[dict]:
    """For each hit, up to `n` lines of its document before its first line and after its last
    ({"before": [...], "after": [...]}), read as `get` reads them; a document read once."""
    read: dict[int, list[str]] = {}
    out = []
    for h in results:
        row = lookup.document_of_chunk(store.conn, h.chunk_id)
        if row is None:
            out.append({"before": [], "after": []})
            continue
        if row[0] not in read:
            read[row[0]] = _lines(store, row[0], Path(row[1]), row[2], row[3])[0]
        lines = read[row[0]]
        out.append({"before": lines[max(0, h.start_line - 1 - n):h.start_line - 1], "after": lines[h.end_line:h.end_line + n]})
    return out


def _find(store: Store, name: str) -> list[tuple]:
    absolute = os.path.abspath(os.path.expanduser(name))
    return lookup.documents_named(store.conn, name) or lookup.documents_named(store.conn, absolute)


def _lines(store: Store, doc_id: int, path: Path, kind: str, digest: str) -> tuple[list[str], str]:
    from kb.index.formats import Skip, extract

    try:
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() == digest:
            return extract(data, kind)[0].split("\n"), "file"
    except (OSError, Skip, ValueError):
        pass
    lines: dict[int, str] = {}
    for start, end, text in lookup.document_chunks(store.conn, doc_id):
        parts = text.split("\n")
        if len(parts) == end - start + 1:  # a chunk that starts inside a long line is left to the one before
            for i, line in enumerate(parts):
                lines.setdefault(start + i, line)
    return [lines.get(i, "") for i in range(1, max(lines, default=0) + 1)], "store"
