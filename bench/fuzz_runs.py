"""The half of bench/fuzz.py that runs `kb` and judges what it did: a command run under pipes or on
a pseudo-terminal (with a timeout, its output and exit code kept), the checks a run must pass
(no traceback, an exit code from README.md's table, no escape sequence but styling), and what a
fuzzed store must hold (every planted good file, nothing from outside the root)."""

from __future__ import annotations

import collections
import fcntl
import json
import os
import pty
import re
import select
import signal
import sqlite3
import struct
import subprocess
import sys
import termios
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
import hostile  # noqa: E402

KB = [sys.executable, "-m", "kb.cli"]
ARG_MAX_ONE = 131072  # Linux MAX_ARG_STRLEN: a longer argument cannot be passed at all
CSI = re.compile(rb"\x1b\[([0-?]*)([ -/]*)([@-~])")
CSI_OK = set(b"ABCDEFGHIJKlhm")  # SGR styling, cursor moves, erase, mode set/reset (cursor hide/show)
BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def exit_codes(readme: Path) -> dict[int, str]:
    """The table under '## Exit codes and errors' in the README: {code: meaning}."""
    section = readme.read_text().split("## Exit codes and errors", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*(.*?)\s*\|\s*$", section, re.M)
    assert rows, "no exit-code table in README.md"
    return {int(code): meaning for code, meaning in rows}


def escape_violations(data: bytes) -> list[str]:
    """What in terminal output is not SGR or a cursor/erase control: other escape sequences (OSC,
    DCS, bare ESC, ...), C0/C1 controls, bidi overrides, bytes that are not UTF-8."""
    found = []
    for m in re.finditer(rb"\x1b", data):
        csi = CSI.match(data, m.start())
        if not (csi and csi.group(3)[0] in CSI_OK):
            found.append("escape " + ascii(data[m.start():m.start() + 16]))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        found.append("bytes that are not UTF-8: " + ascii(data[max(0, e.start - 20):e.end + 20]))
        text = data.decode("utf-8", "replace")
    for m in BAD_CHARS.finditer(text.replace("\x1b", "")):
        found.append(f"control {ascii(m.group())} in " + ascii(text[max(0, m.start() - 20):m.end() + 20]))
    return found


@dataclass
class Run:
    label: str
    argv: list
    rc: int | None  # None: killed at the timeout
    out: bytes
    err: bytes
    seconds: float
    tty: bool = False

    def first_error(self) -> str:
        plain = CSI.sub(b"", self.err or self.out).decode("utf-8", "replace")
        lines = [l for l in plain.splitlines() if l.strip()]
        hits = [l for l in lines if "error" in l.lower() or "Error" in l]
        return ascii((hits or lines or [""])[-1 if "Traceback" in "".join(lines) else 0])[1:-1][:200]


def env_for(work: Path, tty: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("KB_DB", "NO_COLOR", "FORCE_COLOR", "COLUMNS")}
    env["XDG_DATA_HOME"] = str(work / "xdg")  # never the user's default store
    env.update({"TERM": "xterm-256color"} if tty else {"NO_COLOR": "1"})
    return env


def run_piped(label, args, work, timeout) -> Run:
    t = time.perf_counter()
    proc = subprocess.Popen(KB + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env_for(work, False), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        rc = None
    return Run(label, args, rc, out, err, time.perf_counter() - t)


def run_tty(label, args, work, timeout) -> Run:
    """Run with stdout and stderr on a pseudo-terminal (120x50), so rich and the progress bar
    behave as for a person; all output comes back in `out`."""
    t = time.perf_counter()
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
    proc = subprocess.Popen(KB + args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                            env=env_for(work, True), start_new_session=True)
    os.close(slave)
    chunks, deadline, rc = [], time.monotonic() + timeout, 0
    while True:
        ready, _, _ = select.select([master], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = None
            break
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # EIO: every writer of the terminal has closed it
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    code = proc.wait()
    return Run(label, args, None if rc is None else code, b"".join(chunks), b"", time.perf_counter() - t, True)


@dataclass
class Checks:
    codes: dict[int, str]
    findings: dict = field(default_factory=lambda: collections.defaultdict(list))
    counts: collections.Counter = field(default_factory=collections.Counter)
    exits: collections.Counter = field(default_factory=collections.Counter)
    runs: int = 0
    verbose: bool = False

    def see(self, run: Run) -> Run:
        self.runs += 1
        if self.verbose:
            print(f"  rc={run.rc} {run.seconds:6.1f}s {run.label}: {run.first_error()[:100]}", flush=True)
        self.exits[run.rc] += 1
        both = run.out + run.err
        if b"Traceback" in both:
            self.add("traceback", run)
        if b"internal error" in both or run.rc == 1:  # README: exit 1 is an internal error
            self.add("internal_error", run)
        if run.rc is None:
            self.add("hang", run, f"killed after {run.seconds:.0f}s")
        elif run.rc not in self.codes:
            self.add("bad_exit_code", run)
        if run.tty:
            for v in escape_violations(run.out):
                self.add("escape", run, v)
        return run

    def add(self, kind: str, run: Run | None, detail: str = "", n: int = 1) -> None:
        self.counts[kind] += n
        if run is not None:
            detail = detail or run.first_error()
            cmd = " ".join(_short(ascii(str(a))[1:-1]) for a in ["kb", *run.argv])
            self.findings[kind].append({"label": run.label, "cmd": cmd, "rc": run.rc, "detail": detail})
        else:
            self.findings[kind].append({"label": "", "cmd": "", "rc": None, "detail": detail})


PLANTED_WORD = re.compile(r"kb(?:good|tiny|outside)[a-z]+")


def _short(arg: str, width: int = 70) -> str:
    return arg if len(arg) <= width else f"{arg[:20]}...({len(arg)} chars)...{arg[-30:]}"


def store_words(db: Path) -> tuple[int, set[str], int]:
    """(documents with chunks, planted unique words found in chunk text, documents from outside the
    root). Words, not paths: how a store spells a path that is not UTF-8 is kb's business."""
    conn = sqlite3.connect(f"file:{db / 'kb.sqlite'}?mode=ro", uri=True)
    try:
        docs = conn.execute("SELECT count(DISTINCT doc_id) FROM chunks").fetchone()[0]
        words = {w for (text,) in conn.execute(
            "SELECT text FROM chunks WHERE text LIKE '%kbgood%' OR text LIKE '%kbtiny%' OR text LIKE '%kboutside%'")
            for w in PLANTED_WORD.findall(text)}
        outside = conn.execute("SELECT count(*) FROM documents WHERE path LIKE '%-outside%'").fetchone()[0]
        return docs, words, outside
    finally:
        conn.close()


def check_store(checks: Checks, db: Path, planted: list[hostile.Planted], label: str) -> int:
    """Every good file has chunks in the store; nothing from outside the root is there."""
    try:
        docs, words, outside = store_words(db)
    except sqlite3.Error as e:
        checks.add("index_nothing", None, f"{label}: store unreadable ({e})")
        return 0
    if not docs:
        checks.add("index_nothing", None, f"{label}: no document with chunks")
    for p in planted:
        missing = [g for g, w in p.good.items() if w not in words]
        if missing:
            checks.add("good_missing", None, f"{label}: {len(missing)} of {len(p.good)} good files not indexed, "
                       f"e.g. {ascii(str(missing[0]))}", n=len(missing))
    outside += any(w.startswith("kboutside") for w in words)
    if outside:
        checks.add("outside_indexed", None, f"{label}: {outside} document(s) from outside the root", n=outside)
    return docs


def index_json(checks: Checks, run: Run) -> dict:
    try:
        return json.loads(run.out.decode("utf-8").strip().split("\n")[-1])  # not splitlines: JSON may hold U+2028
    except (ValueError, IndexError):
        checks.add("json_invalid", run, "kb index --json printed no JSON object")
        return {}
