"""Read rate of pathological files: how fast `read_document` (extract, chunk, analyse) gets
through files built to be slow, and whether their chunks stay bounded.

    python bench/read_rate.py [--scale 1.0] [--only NAME ...] [--limit 300]

Cases (sizes at --scale 1, as reported in issue 17): one 5 MB line of words without a sentence
end; one 5 MB "word" without a space (a single [UNK] to WordPiece); one 4.8 MB line of CJK;
500k markdown headings; 1 MB of headings with 100 spaces inside; a 20 MB nested markdown list;
and 12 hostile HTML files of 1 MB each
(unclosed comments, tags, scripts and quotes, `<` without `>`, deep nesting, a huge attribute...).
Each case runs in a child process (a warm tokenizer, jieba loaded) with a time limit, so a
quadratic case shows as a timeout instead of stalling the table. Fixed seed.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from common import emit

VISIBLE = "Visible words stay"  # every HTML case shows this text somewhere
_WORDS = ("alpha beta gamma delta index chunk token reader query store vector heading list item "
          "parser write table graph model layer").split()
_CJK = "".join(map(chr, range(0x4E00, 0x4E00 + 3000)))  # common ideographs among them


def one_line(size: int, rng: random.Random) -> bytes:
    return " ".join(rng.choice(_WORDS) for _ in range(size // 6)).encode()[:size]


def one_word(size: int, rng: random.Random) -> bytes:
    return bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=size))


def cjk_line(size: int, rng: random.Random) -> bytes:
    return "".join(rng.choices(_CJK, k=size // 3)).encode()


def headings(size: int, rng: random.Random) -> bytes:
    lines, n = [], 0
    while n < size:
        lines.append("#" * rng.randint(1, 6) + f" Heading {len(lines)}")
        n += len(lines[-1]) + 1
    return "\n".join(lines).encode()


def spaced_headings(size: int, rng: random.Random) -> bytes:
    """Headings with a run of spaces inside their title (a backtracking title regex: cubic)."""
    lines, n = [], 0
    while n < size:
        lines.append(f"## {rng.choice(_WORDS)}" + " " * 100 + f"{rng.choice(_WORDS)} {len(lines)}")
        n += len(lines[-1]) + 1
    return "\n".join(lines).encode()


def nested_list(size: int, rng: random.Random) -> bytes:
    lines, n, depth = [], 0, 0
    while n < size:
        depth = max(0, depth + rng.choice((-1, 1, 1)))
        lines.append("  " * depth + f"- item {len(lines)} " + rng.choice(_WORDS))
        n += len(lines[-1]) + 1
    return "\n".join(lines).encode()


def _html(body: Callable[[int, random.Random], bytes]) -> Callable[[int, random.Random], bytes]:
    """A case whose page is `<p>VISIBLE</p>` followed by `body(size, rng)`."""
    def make(size: int, rng: random.Random) -> bytes:
        return f"<html><body><h1>Title</h1><p>{VISIBLE}</p>".encode() + body(size, rng)[:size]
    return make


def _words(size: int, rng: random.Random) -> str:
    return one_line(size, rng).decode()


HTML = {
    "html_open_comment": _html(lambda s, r: ("<!--" + _words(s, r)).encode()),
    "html_lt_no_gt": _html(lambda s, r: ("a < b " * (s // 6)).encode()),
    "html_open_script": _html(lambda s, r: ("<script>" + "var a = b < c; " * (s // 15)).encode()),
    "html_deep_nesting": _html(lambda s, r: ("<div>" * (s // 22) + "deep" + "</div>" * (s // 22)).encode()),
    "html_huge_attribute": _html(lambda s, r: ('<a href="' + "x" * (s - 20) + '">link</a>').encode()),
    "html_open_quote": _html(lambda s, r: ('<a title="' + _words(s, r)).encode()),
    "html_unclosed_tags": _html(lambda s, r: ("<b>word " * (s // 8)).encode()),
    "html_open_end_tags": _html(lambda s, r: ("x </" * (s // 4)).encode()),
    "html_open_declaration": _html(lambda s, r: ("<!x " * (s // 4)).encode()),
    "html_open_pi": _html(lambda s, r: ("<?" + _words(s, r)).encode()),
    "html_open_cdata": _html(lambda s, r: ("<![CDATA[" + _words(s, r)).encode()),
    "html_many_attributes": _html(lambda s, r: ("<a " + "x=1 " * (s // 4) + ">").encode()),
}

MB = 2**20
# name: (kind, generator, size in bytes at --scale 1)
CASES = {
    "one_line": ("text", one_line, 5 * MB),
    "one_word": ("text", one_word, 5 * MB),
    "cjk_line": ("text", cjk_line, int(4.8 * MB)),
    "headings": ("markdown", headings, 8 * MB),  # 500k headings
    "spaced_headings": ("markdown", spaced_headings, MB),
    "nested_list": ("markdown", nested_list, 20 * MB),
    **{name: ("html", make, MB) for name, make in HTML.items()},
}


def make_case(name: str, scale: float = 1.0, seed: int = 0) -> tuple[str, bytes]:
    kind, make, size = CASES[name]
    return kind, make(int(size * scale), random.Random(seed))


def read_case(name: str, scale: float) -> dict:
    """Read one case (after a warm-up read) and describe its chunks."""
    from kb.index.chunker import ChunkConfig
    from kb.index.readpool import ReadConfig, ReadJob, read_document

    kind, data = make_case(name, scale)
    cfg = ReadConfig(100.0, ChunkConfig(), None)
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / "warm.md"
        warm.write_text("# Warm\n\nwarm up the tokenizer and jieba 中文分词\n")
        read_document(ReadJob(str(warm), tmp, "markdown", warm.stat().st_size, 0), cfg)
        path = Path(tmp) / f"case.{kind}"
        path.write_bytes(data)
        t0 = time.perf_counter()
        out = read_document(ReadJob(str(path), tmp, kind, len(data), 0), cfg)
        seconds = time.perf_counter() - t0
    chunks = out.doc.chunks
    return {"case": name, "kind": kind, "mb": round(len(data) / MB, 2), "s": round(seconds, 2),
            "mb_per_s": round(len(data) / MB / seconds, 2), "chunks": len(chunks),
            "max_chars": max((len(c.text) for c in chunks), default=0),
            "max_tokens": max((len(c.token_ids) for c in chunks), default=0),
            "skipped": out.doc.note}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every case's size")
    ap.add_argument("--only", nargs="*", choices=sorted(CASES), help="run these cases only")
    ap.add_argument("--limit", type=float, default=300, help="seconds a case may take")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # the child process: one case, one JSON line
    args = ap.parse_args()
    if args.case:
        print(json.dumps(read_case(args.case, args.scale)))
        return
    rows = []
    print(f"{'case':24} {'MB':>6} {'s':>7} {'MB/s':>7} {'chunks':>7} {'max chars':>9} {'max tok':>7}")
    for name in args.only or CASES:
        cmd = [sys.executable, __file__, "--case", name, "--scale", str(args.scale)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.limit, check=True)
            row = json.loads(proc.stdout.splitlines()[-1])
        except subprocess.TimeoutExpired:
            row = {"case": name, "mb": round(CASES[name][2] * args.scale / MB, 2), "s": None,
                   "timeout_s": args.limit}
        rows.append(row)
        if row.get("s") is None:
            print(f"{name:24} {row['mb']:6.2f} {'>' + str(int(args.limit)):>7}", flush=True)
        else:
            print(f"{name:24} {row['mb']:6.2f} {row['s']:7.2f} {row['mb_per_s']:7.2f} {row['chunks']:7d} "
                  f"{row['max_chars']:9d} {row['max_tokens']:7d}", flush=True)
    emit("read_rate", scale=args.scale, cases=rows)


if __name__ == "__main__":
    main()
