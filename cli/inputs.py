"""What `kb query` and `kb ask` run on: a TEXT argument or the lines of a --file."""

from __future__ import annotations

import sys
from pathlib import Path

from kb.errors import NotFound, UsageError
from kb.names import path_text


def texts(words: list[str] | None, file: Path | None, what: str) -> list[str]:
    """TEXT (its words joined by spaces, as search tools take an unquoted query), or the non-blank
    lines of --file ('-': stdin): exactly one of them, else UsageError. Bytes that are not UTF-8
    are spelt `\\xNN` in TEXT and replaced in a file's lines."""
    if (not words) == (file is None):
        raise UsageError(f"give either a {what} TEXT or --file F")
    return [" ".join(path_text(w) for w in words)] if file is None else _lines(file)


def _lines(file: Path) -> list[str]:
    try:
        data = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
        raw = data.decode("utf-8", errors="replace")
    except OSError as e:
        raise NotFound(f"cannot read query file {file}: {e.strerror or e}") from e
    return [line.strip() for line in raw.splitlines() if line.strip()]
