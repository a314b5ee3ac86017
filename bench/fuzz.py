"""Fuzz the real `kb` command with hostile files and queries (issue 17).

    python bench/fuzz.py [--files 5000] [--tiny 10000] [--queries 1000] [--seed 0] [--vectors] [--keep DIR]

Generates a seeded tree (tests/hostile.py: bad bytes, odd names, huge lines, broken and encrypted
PDFs, hostile HTML, FIFOs, symlink loops, links out of the root, ...) plus a folder of tiny files,
then runs `kb index` (first run, a no-change run, a run after mutating files on a pseudo-terminal,
a run on a root whose own name is hostile, files named directly), `kb query` (every hostile query
in one `--file` batch, as JSON and on a terminal; a sample one process each, some on a terminal),
`kb query --path` with hostile globs, and `kb status`. Checks: no traceback, no "internal error",
no hang, every exit code in README.md's table, every planted good file indexed, nothing outside the
root indexed, valid JSON, and on a terminal no escape sequence but SGR styling and cursor/erase
controls. Also times `read_document` on every generated file in this process.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import stat
import tempfile
import time
from pathlib import Path

from common import emit
from fuzz_runs import ARG_MAX_ONE, REPO, Checks, check_store, exit_codes, index_json, run_piped, run_tty

import hostile  # tests/hostile.py (fuzz_runs puts tests/ on the path)


def query_batch(checks: Checks, work: Path, db: Path, queries: list[str], a) -> None:
    qfile = work / "queries.txt"
    qfile.write_bytes("\n".join(queries).encode("utf-8", "surrogateescape"))
    text = qfile.read_bytes().decode("utf-8", "replace")
    expected = {len([l for l in text.splitlines() if l.strip()]), len([l for l in text.split("\n") if l.strip()])}
    run = checks.see(run_piped("query --file --json", ["query", "--file", str(qfile), "--db", str(db), "--json",
                                                       "-k", "5"], work, a.timeout))
    lines = run.out.decode("utf-8", "replace").rstrip("\n").split("\n") if run.out else []
    bad = 0
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            bad += 1
    if run.rc == 0 and (bad or len(lines) not in expected):
        checks.add("json_invalid", run, f"{len(lines)} lines for {sorted(expected)} queries, {bad} not JSON")
    checks.see(run_tty("query --file on a terminal", ["query", "--file", str(qfile), "--db", str(db), "-k", "5"],
                       work, a.timeout))


def query_good(checks: Checks, work: Path, db: Path, planted: list[hostile.Planted], a) -> None:
    """Each good file's unique word finds that file first."""
    goods = [(g, w, p.root) for p in planted for g, w in p.good.items()]
    qfile = work / "good.txt"
    qfile.write_text("\n".join(w for _, w, _ in goods) + "\n")
    run = checks.see(run_piped("good words", ["query", "--file", str(qfile), "--db", str(db), "--json", "-k", "3",
                                              "--mode", "bm25"], work, a.timeout))
    results = [json.loads(l) for l in run.out.decode("utf-8", "replace").split("\n") if l.startswith("{")]
    missed = [g for (g, _, root), r in zip(goods, results + [None] * len(goods))
              if not r or not r["results"] or r["results"][0]["path"] != str(g.relative_to(root))]
    if missed:
        checks.add("good_not_found", run, f"{len(missed)} good words do not find their file first, "
                   f"e.g. {ascii(str(missed[0]))}", n=len(missed))


def query_singles(checks: Checks, work: Path, db: Path, queries: list[str], a) -> None:
    rng = random.Random(a.seed + 7)
    first = list(range(min(a.singles // 3, 12, len(queries))))  # the 100k-character ones, then SQL-ish
    picks = first + rng.sample(range(len(queries)), min(len(queries), a.singles - len(first)))
    for j, i in enumerate(picks):
        q = queries[i]
        if len(os.fsencode(q)) >= ARG_MAX_ONE:
            one = work / f"single{i}.txt"
            one.write_bytes(q.encode("utf-8", "surrogateescape"))
            args = ["query", "--file", str(one), "--db", str(db)]
        else:
            args = ["query", q, "--db", str(db)]
        if j < a.pty:
            checks.see(run_tty(f"query #{i} on a terminal", args, work, 120))
        else:
            checks.see(run_piped(f"query #{i}", args + ["--json"], work, 120))


def query_globs(checks: Checks, work: Path, db: Path, a) -> None:
    for i, glob in enumerate(hostile.hostile_globs()[:a.globs]):
        args = ["query", "fuzzpayload", "--db", str(db), "--path", glob]
        checks.see(run_piped(f"--path glob #{i}", args + ["--json"], work, 120))
        if i < a.pty:
            checks.see(run_tty(f"--path glob #{i} on a terminal", args, work, 120))


def index_direct(checks: Checks, work: Path, planted: hostile.Planted) -> None:
    """Paths named on the command line: a FIFO, /dev/zero through a link, loops, dangling links,
    a file whose name holds escapes, a missing path with escapes in its name."""
    db, root = work / "store-direct", planted.root
    odd = [p for p in planted.files if "\x1b" in p.name][:1]
    for path in [root / "fifo" / "pipe.md", root / "links" / "zero.md", root / "links" / "up",
                 root / "links" / "self", root / "links" / "dangling.md", root / "locked", *odd,
                 root / "missing\x1b]8;;http://evil.example\x07[bold]x\udcff"]:
        checks.see(run_tty(f"index {ascii(path.name)}", ["index", str(path), "--db", str(db), "--vector-index",
                                                          "none", "--wait", "5"], work, 120))


def time_reads(roots: list[Path], top: int = 10) -> tuple[list[tuple[float, int, str]], list[str]]:
    """read_document on every regular file, one at a time: (slowest [(seconds, bytes, path)], errors)."""
    from kb.index.chunker import ChunkConfig
    from kb.index.formats import kind_of
    from kb.index.readpool import ReadConfig, ReadJob, read_document

    cfg = ReadConfig(max_file_mb=20.0, chunk=ChunkConfig(), model=None)
    times, errors = [], []
    for kind, data in (("markdown", "# warm-up\n\nloads the tokenizer and jieba: 长城\n".encode()),
                       ("pdf", hostile.make_pdf([["loads pypdf"]]))):  # before any file is timed
        warm = Path(roots[0]) / "warm-up"
        warm.write_bytes(data)
        read_document(ReadJob(str(warm), str(roots[0]), kind, len(data), 0), cfg)
        warm.unlink()

    def alarm(*_):
        raise TimeoutError("read_document took over 120 s")

    signal.signal(signal.SIGALRM, alarm)
    for root in roots:
        for folder, _, names in os.walk(root):
            for name in names:
                path = os.path.join(folder, name)
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode):
                    continue
                job = ReadJob(path, str(root), kind_of(Path(path)) or "text", st.st_size, st.st_mtime_ns)
                t = time.perf_counter()
                signal.alarm(120)
                try:
                    read_document(job, cfg)
                except Exception as e:  # noqa: BLE001 - any exception here is a finding
                    errors.append(f"{ascii(path)}: {type(e).__name__}: {ascii(str(e))[:120]}")
                finally:
                    signal.alarm(0)
                times.append((time.perf_counter() - t, st.st_size, path))
    return sorted(times, reverse=True)[:top], errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=5000, help="hostile files (good ones among them)")
    ap.add_argument("--tiny", type=int, default=10000, help="tiny files, in a folder of their own")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--singles", type=int, default=40, help="queries run one process each")
    ap.add_argument("--pty", type=int, default=15, help="of those (and of the globs), how many on a terminal")
    ap.add_argument("--globs", type=int, default=1000, help="hostile --path globs to run (most hostile first)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", "-v", action="store_true", help="print every kb run")
    ap.add_argument("--vectors", action="store_true", help="embed too (default: --vector-index none)")
    ap.add_argument("--timeout", type=int, default=1200, help="seconds for one index run or query batch")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it")
    a = ap.parse_args()
    checks = Checks(exit_codes(REPO / "README.md"), verbose=a.verbose)
    work = (a.keep or Path(tempfile.mkdtemp(prefix="kb-fuzz-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    vec = [] if a.vectors else ["--vector-index", "none"]
    try:
        summary = fuzz(checks, work, vec, a)
    finally:
        for r in (work / "root", work / "hroot"):
            hostile.unlock(r)
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    report(checks, summary)


def fuzz(checks: Checks, work: Path, vec: list[str], a) -> dict:
    t = time.perf_counter()
    root, tiny = work / "root", work / "tiny"
    hroot = work / "hroot" / "root\x1b]8;;https:evil.example\x07[bold]\udcff"
    planted = [hostile.hostile_files(root, a.files, a.seed), hostile.tiny_files(tiny, a.tiny, a.seed)]
    named = hostile.hostile_files(hroot, max(60, a.files // 50), a.seed + 11, n_big=0)
    queries = hostile.hostile_queries(a.queries, a.seed)
    n_files = sum(len(p.files) + len(p.fifos) + len(p.links) for p in [*planted, named])
    print(f"generated {n_files} files and {len(queries)} queries in {time.perf_counter() - t:.1f}s under {work}")
    db, db2 = work / "store", work / "store-named"
    first = checks.see(run_piped("index (first run)", ["index", str(root), str(tiny), "--db", str(db), "--json", *vec],
                                 work, a.timeout))
    first_json = index_json(checks, first)
    documents = check_store(checks, db, planted, "first run")
    again = checks.see(run_piped("index (no change)", ["index", str(root), str(tiny), "--db", str(db), "--json",
                                                       *vec], work, a.timeout))
    again_json = index_json(checks, again)
    changed = sum(again_json.get(k, 0) for k in ("added", "updated", "removed"))
    if again_json and changed > len(first_json.get("errors", [])):
        checks.add("no_change_run_changed", again, f"{changed} documents added/updated/removed", n=changed)
    mutated = hostile.mutate(planted[0], a.seed, max(20, a.files // 25))
    checks.see(run_tty("index (after mutation) on a terminal", ["index", str(root), str(tiny), "--db", str(db),
                                                                 *vec], work, a.timeout))
    check_store(checks, db, planted, "after mutation")
    checks.see(run_tty("index (hostile root name) on a terminal", ["index", str(hroot), "--db", str(db2), *vec],
                       work, a.timeout))
    check_store(checks, db2, [named], "hostile root name")
    index_direct(checks, work, planted[0])
    query_batch(checks, work, db, queries, a)
    query_good(checks, work, db, planted, a)
    query_singles(checks, work, db, queries, a)
    query_globs(checks, work, db, a)
    for store in (db, db2):
        checks.see(run_piped("status --json", ["status", "--db", str(store), "--json"], work, 120))
        checks.see(run_tty("status on a terminal", ["status", "--db", str(store)], work, 120))
    checks.see(run_tty("query on a terminal (hostile root)", ["query", "fuzzpayload markup", "--db", str(db2)],
                       work, 120))
    t = time.perf_counter()
    slowest, read_errors = time_reads([root, tiny, hroot])
    for e in read_errors:
        checks.add("read_document_error", None, e)
    print(f"timed read_document on every file in {time.perf_counter() - t:.1f}s")
    return {"files": n_files, "queries": len(queries), "documents": documents, "index": first_json,
            "index_seconds": round(first.seconds, 2), "mutated": mutated, "slowest": slowest,
            "good": sum(len(p.good) for p in [*planted, named])}


def report(checks: Checks, s: dict) -> None:
    c = checks.counts
    print(f"\n{'check':<24}{'count':>8}  first example")
    for kind in ("traceback", "internal_error", "bad_exit_code", "hang", "escape", "index_nothing", "good_missing",
                 "good_not_found", "outside_indexed", "json_invalid", "no_change_run_changed", "read_document_error"):
        ex = checks.findings[kind][0] if checks.findings[kind] else None
        print(f"{kind:<24}{c[kind]:>8}  " + (f"[{ex['label']}] rc={ex['rc']} {ex['detail'][:110]}" if ex else ""))
    print("\ndistinct failures (kind, label, rc, first error line):")
    seen = set()
    for kind, items in checks.findings.items():
        for ex in items:
            what = ex["detail"] if ex["cmd"] else ex["detail"].rsplit("': ", 1)[-1]  # a file's error, not its path
            key = (kind, re.sub(r"#\d+", "#", ex["label"]), ex["rc"], re.sub(r"\d+", "N", what)[:80])
            if key not in seen and len(seen) < 60:
                seen.add(key)
                where = f"\n      $ {ex['cmd']}" if ex["cmd"] else ""
                print(f"  {kind}: [{ex['label']}] rc={ex['rc']}: {ex['detail'][:160]}{where}")
    print(f"\nexit codes seen: {dict(sorted(checks.exits.items(), key=str))} (README: {sorted(checks.codes)})")
    idx = s["index"]
    print(f"first index run: {s['index_seconds']}s, added {idx.get('added')}, skipped {idx.get('skipped')}, "
          f"errors {len(idx.get('errors', []))}, warnings {len(idx.get('warnings', []))}; "
          f"{s['documents']} documents with chunks; mutation {s['mutated']}")
    print("slowest read_document:")
    for sec, size, path in s["slowest"]:
        print(f"  {sec:8.3f}s {size:>10} B  {ascii(os.path.relpath(path, Path(path).parents[2]))[:100]}")
    worst = s["slowest"][0] if s["slowest"] else (0.0, 0, "")
    ok = not any(c[k] for k in c) and s["documents"] > 0
    emit("fuzz", **{
        "files": s["files"], "queries": s["queries"], "runs": checks.runs, "tracebacks": c["traceback"],
        "internal_errors": c["internal_error"], "bad_exit_codes": c["bad_exit_code"], "hangs": c["hang"],
        "escape_violations": c["escape"], "good_missing": c["good_missing"], "good_not_found": c["good_not_found"],
        "good_planted": s["good"],
        "index_nothing": c["index_nothing"], "outside_indexed": c["outside_indexed"],
        "json_invalid": c["json_invalid"], "no_change_run_changed": c["no_change_run_changed"],
        "read_document_errors": c["read_document_error"], "documents": s["documents"],
        "worst_file": {"name": os.path.basename(worst[2]), "bytes": worst[1], "seconds": round(worst[0], 3)},
        "index_seconds": s["index_seconds"], "ok": ok})


if __name__ == "__main__":
    main()
