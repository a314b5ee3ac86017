"""Split a document into overlapping, heading-aware chunks measured in the embedding tokenizer's
tokens. The whole document is tokenised once; each chunk keeps the slice of ids that covers it,
which is exactly what the encoder will eat.

Units: a line is one piece, or several when it is longer than `piece_tokens` (cut after a sentence
end where one is near). Pieces are packed into chunks of at most `max_tokens`; a new chunk repeats
the last pieces of the previous one, up to `overlap_tokens`. A heading starts a new chunk once the
current one holds `min_tokens`, and chunks never overlap across a heading.

A chunk also spans at most `max_chars` characters, whatever the file holds: a line of a million
spaces, or a 5 MB "word" that WordPiece reads as one [UNK], is cut into pieces of that length.
Time is linear in the text's length.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from array import array
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np

from kb.embed.tokenizer import Tokenizer
from kb.errors import UsageError


@dataclass(frozen=True)
class ChunkConfig:
    max_tokens: int = 240  # all-MiniLM-L6-v2 reads 256 word pieces including [CLS] and [SEP]
    overlap_tokens: int = 48
    min_tokens: int = 64
    piece_tokens: int = 32  # the granularity of overlap: long lines are cut this fine

    def __post_init__(self):
        if not 0 < self.piece_tokens <= self.max_tokens:
            raise UsageError("chunking: need 0 < piece_tokens <= max_tokens")
        if not 0 <= self.overlap_tokens < self.max_tokens:
            raise UsageError("chunking: need 0 <= overlap_tokens < max_tokens")

    @property
    def max_chars(self) -> int:
        """The most characters a chunk spans (3,840 for 240 tokens); not a field, so that it
        stays out of the fingerprint: it changes no chunk of a normal document."""
        return CHARS_PER_TOKEN * self.max_tokens

    def fingerprint(self) -> dict:
        return asdict(self)


# Prose and code average 4-5 characters per token, and the longest chunk of 88,802 cut from 4,537
# Python, markdown and reST files of the standard library and site-packages spans 2,522 (p99.9:
# 1,492), but for one holding a 6,833-digit literal. 16 a token leaves room for indentation and
# aligned tables while keeping a chunk small enough to show, store and quote in a prompt.
CHARS_PER_TOKEN = 16
MAX_TITLE_CHARS = 200  # of a heading in a chunk's heading path, which is stored with each chunk


@dataclass(frozen=True)
class Chunk:
    seq: int
    start_line: int  # 1-based, inclusive
    end_line: int
    heading: str  # heading path, ' > ' joined
    text: str
    token_ids: array  # int32 ("i"): what the encoder eats, and it crosses from a reader process as bytes
    hash: str = field(init=False)  # of the text: the key of the embedding cache

    def __post_init__(self):
        object.__setattr__(self, "hash", text_hash(self.text))  # once, where the chunk is made


class _Piece(NamedTuple):  # a tuple: made once per line, cheap to create
    line: int  # 0-based
    tok_start: int
    tok_end: int
    char_start: int
    char_end: int
    opens_section: bool  # first piece of a heading line


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


# The title is what follows, stripped of a closing run of "#" (str methods: a regex for the
# title backtracks, minutes on a heading line with a few thousand spaces inside).
_ATX = re.compile(r" {0,3}(#{1,6})\s")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+:.])\1{2,}\s*$")
# A code symbol's definition: Python, JavaScript/TypeScript, Go, Rust, Java/C#/Kotlin-style keywords.
_SYMBOL = re.compile(r"([ \t]*)(?:(?:export|default|pub(?:\([\w ]+\))?|async|static|public|private|protected|"
                     r"abstract|final|unsafe)\s+)*(?:def|class|function|func|fn|struct|interface|trait|enum|impl)"
                     r"\s+(?:\([^)]*\)\s*)?([A-Za-z_$][\w$]*)")


def headings(lines: list[str], kind: str) -> list[tuple[int, int, str]]:
    """(line index, level, title) of each heading, for markdown/HTML (ATX), reST (underlines) and
    code (a class's or function's definition, its level by indentation, its name as the title)."""
    found: list[tuple[int, int, str]] = []
    kind = kind.removesuffix("+gz")  # kb.index.formats.GZIP: the same text, compressed
    if kind in ("markdown", "html", "notebook", "docx", "odt", "epub"):
        fenced = False
        for i, line in enumerate(lines):
            if _FENCE.match(line):
                fenced = not fenced
            elif not fenced and (m := _ATX.match(line)):
                title = line[m.end():].strip().rstrip("#").rstrip()
                found.append((i, len(m.group(1)), title[:MAX_TITLE_CHARS]))
    elif kind == "rst":
        levels: list[str] = []  # reST levels are the order in which underline characters appear
        for i in range(1, len(lines)):
            title, under = lines[i - 1].strip(), lines[i]
            m = _RST_UNDERLINE.match(under)
            if m and title and not _RST_UNDERLINE.match(title) and len(under.strip()) >= len(title):
                if m.group(1) not in levels:
                    levels.append(m.group(1))
                found.append((i - 1, levels.index(m.group(1)) + 1, title[:MAX_TITLE_CHARS]))
    elif kind == "code":
        for i, line in enumerate(lines):
            if m := _SYMBOL.match(line):
                found.append((i, len(m.group(1).expandtabs(4)) // 4 + 1, m.group(2)[:MAX_TITLE_CHARS]))
    return found


def _heading_paths(n_lines: int, marks: list[tuple[int, int, str]]) -> list[str]:
    paths = [""] * n_lines  # lines under one heading share its path string
    stack: list[tuple[int, str]] = []
    for k, (line, level, title) in enumerate(marks):
        stack = [s for s in stack if s[0] < level] + [(level, title)]
        end = marks[k + 1][0] if k + 1 < len(marks) else n_lines
        paths[line:end] = [" > ".join(t for _, t in stack)] * (end - line)
    return paths


def _line_starts(lines: list[str]) -> np.ndarray:
    """Character offset of each line's start, from the text split at "\n"."""
    starts = np.zeros(len(lines), np.int64)
    np.cumsum(np.fromiter(map(len, lines[:-1]), np.int64, len(lines) - 1) + 1, out=starts[1:])
    return starts


def _pieces(text: str, offsets: list[tuple[int, int]], line_starts: np.ndarray, heading_lines: set[int],
            piece_tokens: int, max_chars: int) -> list[_Piece]:
    """A line's tokens (those that start on it) make one piece, or several of at most
    `piece_tokens` and `max_chars`. Lines are found for all tokens at once; only long lines are walked
    token by token."""
    n = len(offsets)
    if n == 0:
        return []
    starts = np.fromiter(itertools.chain.from_iterable(offsets), np.int64, 2 * n)[::2]
    token_line = np.searchsorted(line_starts, starts, side="right") - 1
    cuts = (np.flatnonzero(np.diff(token_line)) + 1).tolist()
    first_of_line, line_of = [0] + cuts, token_line[[0] + cuts].tolist()
    ls, n_lines = line_starts.tolist(), len(line_starts)
    pieces: list[_Piece] = []
    for t, end_of_line, line in zip(first_of_line, cuts + [n], line_of):
        line_end = ls[line + 1] - 1 if line + 1 < n_lines else len(text)
        heading = line in heading_lines
        if end_of_line - t <= piece_tokens and line_end - ls[line] <= max_chars:
            pieces.append(_Piece(line, t, end_of_line, ls[line], line_end, heading))
        else:
            pieces += _cut_line(text, offsets, (t, end_of_line), (ls[line], line_end), line, heading,
                                piece_tokens, max_chars)
    return pieces


_SENTENCE_END = frozenset(".!?;。！？")


def _cut_line(text: str, offsets: list[tuple[int, int]], tokens: tuple[int, int], chars: tuple[int, int],
              line: int, heading: bool, piece_tokens: int, max_chars: int) -> list[_Piece]:
    """The pieces of a line (its `tokens` and `chars` ranges) too long for one: at most
    `piece_tokens`, cut after a sentence end where one is near; and at most `max_chars`, where they
    leave out the spaces (or other text without tokens) at their ends, and cut a token longer than
    that (a [UNK] "word" of megabytes) into pieces of `max_chars` holding its id."""
    first, last = tokens
    pieces: list[_Piece] = []
    start = first
    while start < last:
        stop = min(start + piece_tokens, last)
        if stop < last:  # cut after a sentence end in the second half, if there is one
            for k in range(stop - 1, start + piece_tokens // 2, -1):
                a, b = offsets[k]
                if b - a == 1 and text[a] in _SENTENCE_END:
                    stop = k + 1
                    break
        lo = chars[0] if start == first else offsets[start][0]
        hi = chars[1] if stop == last else offsets[stop - 1][1]
        if hi - lo > max_chars:
            lo = offsets[start][0]
            while stop - start > 1 and offsets[stop - 1][1] - lo > max_chars:
                stop -= 1
            hi = offsets[stop - 1][1]
        opens = start == first and heading
        cuts = range(lo, hi, max_chars) if hi - lo > max_chars else (lo,)  # one token longer than max_chars
        for cut in cuts:
            pieces.append(_Piece(line, start, stop, cut, min(cut + max_chars, hi), opens and cut == lo))
        start = stop
    return pieces


def chunk_text(text: str, kind: str, tokenizer: Tokenizer, cfg: ChunkConfig) -> list[Chunk]:
    lines = text.split("\n")
    marks = headings(lines, kind)
    paths = _heading_paths(len(lines), marks)
    enc = tokenizer.encode(text)
    pieces = _pieces(text, enc.offsets, _line_starts(lines), {m[0] for m in marks}, cfg.piece_tokens,
                     cfg.max_chars)

    groups: list[list[_Piece]] = []
    current: list[_Piece] = []
    size = 0
    for piece in pieces:
        n = piece.tok_end - piece.tok_start
        heading_break = piece.opens_section and size >= cfg.min_tokens
        too_long = current and piece.char_end - current[0].char_start > cfg.max_chars
        if current and (size + n > cfg.max_tokens or too_long or heading_break):
            groups.append(current)
            current = [] if heading_break else _tail(current, cfg.overlap_tokens, cfg.max_tokens - n,
                                                     piece.char_end - cfg.max_chars)
            size = sum(p.tok_end - p.tok_start for p in current)
        current.append(piece)
        size += n
    if current:
        groups.append(current)

    return [
        Chunk(
            seq=i,
            start_line=g[0].line + 1,
            end_line=g[-1].line + 1,
            heading=paths[g[0].line],
            text=text[g[0].char_start:g[-1].char_end],
            token_ids=array("i", enc.ids[g[0].tok_start:g[-1].tok_end]),
        )
        for i, g in enumerate(groups)
    ]


def _tail(pieces: list[_Piece], overlap: int, room: int, from_char: int) -> list[_Piece]:
    """The last pieces of a chunk that fit in min(overlap, room) tokens and start at `from_char` or
    later: the next chunk's start."""
    budget = min(overlap, room)
    tail: list[_Piece] = []
    for piece in reversed(pieces):
        budget -= piece.tok_end - piece.tok_start
        if budget < 0 or piece.char_start < from_char:
            break
        tail.insert(0, piece)
    return tail
