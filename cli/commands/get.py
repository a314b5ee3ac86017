"""`kb get PATH[:LINE[-LINE]]`"""

from __future__ import annotations

import sys

from kb.cli import options, render


def get(target: options.GetTarget, db: options.Db = None, json_out: options.Json = False,
        numbers: options.LineNumbers = False) -> None:
    """Print an indexed document, or lines of it (PATH:10 or PATH:10-20), as the index read it."""
    from kb.index.search.document import get as read
    from kb.index.store import Store

    lines = read(Store.open(db), target)
    if lines.source == "store":
        render.warn(f"{lines.path} changed or is gone since it was indexed: these are the indexed lines")
    if json_out:
        render.print_json(lines.to_json())
        return
    text = render.safe(lines.text)
    if numbers:
        text = "\n".join(f"{lines.start_line + i}: {line}" for i, line in enumerate(text.split("\n")))
    sys.stdout.write(text + "\n")
