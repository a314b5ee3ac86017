"""File names and other outside text as kb stores and shows them.

A file name is bytes to the kernel: Python hands a name that is not valid UTF-8 over with each bad
byte as a lone surrogate, which SQLite, JSON and a terminal all refuse. `path_text` spells such
bytes as `\\xNN`, the one form every one of them takes (a real name spelt that way cannot be told
apart, a collision the indexer reports instead of failing on). `one_line` is for showing a name or a
message: control characters (a newline in a file name, an escape sequence) are spelt out, so one
result stays one line and nothing reaches a terminal as a command.
"""

from __future__ import annotations

import os
import re

# C0/C1 controls (newline and tab too), DEL, and the bidi overrides that can disguise text.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def path_text(p: str | os.PathLike) -> str:
    """A path (or a message quoting one) as valid text: undecodable bytes become `\\xNN`."""
    s = os.fspath(p)
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def one_line(s: str | os.PathLike) -> str:
    """Text for one line of output: `path_text`, with control characters spelt out."""
    return _CONTROL.sub(_spell, path_text(s))


def _spell(m: re.Match) -> str:
    c = m.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
