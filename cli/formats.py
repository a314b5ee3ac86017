"""`kb query --format`: the result list for other programs. text is the terminal view
(kb.cli.render.query_result); json is one object per query (the schema in the README); jsonl one
hit per line; csv and md tables; files one path per line; grep `path:line:heading: first line`,
as editors read compiler and grep output (vim's quickfix, Emacs' grep-mode, VS Code's terminal).
Paths are absolute where a program opens them (files, grep), as shown otherwise."""

from __future__ import annotations

import csv
import json
import os
import sys

from kb.names import one_line

FORMATS = ("text", "json", "jsonl", "csv", "md", "files", "grep")
_COLUMNS = ("rank", "score", "path", "start_line", "end_line", "heading", "text")


class Writer:
    """Prints the results of one run's queries in a format (not text): a csv header once, and a
    path once in a `files` listing."""

    def __init__(self, fmt: str):
        self.fmt, self.seen, self.header = fmt, set(), False

    def write(self, result) -> None:
        if self.fmt == "csv":
            _csv(result, sys.stdout, not self.header)
            self.header = True
        else:
            _write(result, self.fmt, self.seen)


def _write(result, fmt: str, seen: set[str]) -> None:
    out = sys.stdout
    if fmt == "json":
        out.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
    elif fmt == "jsonl":
        for row in result.to_json()["results"]:
            out.write(json.dumps({"query": result.query, **row}, ensure_ascii=False) + "\n")
    elif fmt == "md":
        _markdown(result, out)
    elif fmt == "files":
        for h in result.results:
            path = os.path.join(h.root, h.path)
            if path not in seen:
                seen.add(path)
                out.write(one_line(path) + "\n")
    else:  # grep
        for h in result.results:
            first = next((ln.strip() for ln in h.text.split("\n") if ln.strip()), "")
            heading = f"{one_line(h.heading)}: " if h.heading else ""
            out.write(f"{one_line(os.path.join(h.root, h.path))}:{h.start_line}: {heading}{one_line(first)[:200]}\n")


def _csv(result, out, header: bool) -> None:
    writer = csv.writer(out)
    if header:
        writer.writerow(("query", *_COLUMNS))
    for row in result.to_json()["results"]:
        writer.writerow((result.query, *(row[c] for c in _COLUMNS)))


def _markdown(result, out) -> None:
    cell = lambda s: one_line(str(s)).replace("|", "\\|")
    out.write(f"### {cell(result.query)}\n\n| # | score | where | heading | text |\n|---|---|---|---|---|\n")
    for h in result.results:
        text = " ".join(h.text.split())[:160]
        out.write(f"| {h.rank} | {h.score:.3f} | {cell(h.path)}:{h.start_line}-{h.end_line} "
                  f"| {cell(h.heading)} | {cell(text)} |\n")
    out.write("\n")
