"""Everything the CLI prints. Text from documents and users is data: the console parses no markup
and no emoji codes, document text goes through `safe()` and names and messages through
`kb.names.one_line`, so neither markup nor escape sequences take effect and one result stays one
line whatever a file name holds."""

from __future__ import annotations

import json
import re
import sys

from kb.index.formats import clean
from kb.names import one_line

_WORD = re.compile(r"\w+")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def safe(s: str) -> str:
    """Strip control characters; undecodable file-name bytes become U+FFFD."""
    return clean(s.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))


def console(stderr: bool = False):
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:  # rich's own exits 1; kb's main() exits as Unix tools do
            raise BrokenPipeError

    return _Console(stderr=stderr, highlight=False, soft_wrap=True, markup=False, emoji=False)


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


def warn(message: str) -> None:
    sys.stderr.write(f"kb: {one_line(message)}\n")


def index_summary(r: dict) -> str:
    """One line for an index report (`IndexReport.to_json()`, also kept in the runs table)."""
    s = (f"{r['added']} added, {r['updated']} updated, {r['unchanged']} unchanged, {r['removed']} removed; "
         f"{r['chunks_added']} chunks added, {r['chunks_removed']} removed")
    if r.get("vector_index"):
        s += f"; {r['embedded']} embedded ({r['vector_index']} index)"
    if r.get("skipped"):
        s += f"; {r['skipped']} skipped"
    if r.get("passed_over"):
        s += "; passed over: " + ", ".join(f"{n} {why}" for why, n in r["passed_over"].items())
    return f"indexed in {r['seconds']:.2f}s: {s}"


def _highlights(text: str, terms: set[str]) -> list[tuple[int, int]]:
    """Spans of words whose analysed form is a query term; CJK terms match as substrings."""
    from kb.index.analyzer import analyze

    cjk = [t for t in terms if _CJK.search(t)]
    spans = []
    for m in _WORD.finditer(text):
        word = m.group()
        if _CJK.search(word):
            spans += [(m.start() + i.start(), m.start() + i.end())
                      for t in cjk for i in re.finditer(re.escape(t), word)]
        elif terms.intersection(analyze(word)):
            spans.append(m.span())
    return sorted(spans)


def snippet(text: str, terms: list[str], width: int = 240):
    """A rich Text window of the chunk around its first query-term hit, hits in bold."""
    from rich.text import Text

    flat = " ".join(text.split())
    spans = _highlights(flat, set(terms))
    start = max(0, spans[0][0] - width // 4) if spans else 0
    if start:
        start = flat.rfind(" ", 0, start) + 1
    end = min(len(flat), start + width)
    out = Text(("…" if start else "") + flat[start:end] + ("…" if end < len(flat) else ""))
    shift = 1 if start else 0
    for a, b in spans:
        if a >= start and b <= end:
            out.stylize("bold yellow", a - start + shift, b - start + shift)
    return out


def query_result(result, out) -> None:
    from rich.text import Text

    if not result.results:
        out.print("no results")
    for i, h in enumerate(result.results):
        where = f"{one_line(_shown_path(h, result.results))}:{h.start_line}-{h.end_line}"
        line = Text.assemble((f"{h.rank:>2}. ", "bold"), (f"{h.score:7.3f}  ", "dim"), (where, "cyan"))
        if h.heading:
            line.append(f"  § {one_line(h.heading)}", "magenta")
        out.print(line)
        near = result.around[i] if result.around is not None else {"before": [], "after": []}
        for n, text in enumerate(near["before"], h.start_line - len(near["before"])):
            out.print(Text(f"    {n}- {safe(text)}", style="dim"))
        out.print(Text("    ") + snippet(h.text, result.terms))
        for n, text in enumerate(near["after"], h.end_line + 1):
            out.print(Text(f"    {n}- {safe(text)}", style="dim"))


def _shown_path(hit, hits) -> str:
    """A hit's path, relative to its indexed folder; the whole path where another folder of the
    results holds a file of the same relative path (two README.md must not look alike)."""
    if any(h.path == hit.path and h.root != hit.root for h in hits):
        import os

        return os.path.join(hit.root, hit.path)
    return hit.path


def status(info: dict, out) -> None:
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    last = info["last_run"] or {}
    fp = info["fingerprint"] or {}
    rows = [
        ("store", info["db"] + (f"  (from the {info['settings']['store_from']})" if "settings" in info else "")),
        ("config", (info.get("settings") or {}).get("config_file") or "none"),
        ("documents", f"{info['documents']} ({info['skipped_documents']} skipped)"),
        ("chunks", str(info["chunks"])),
        ("terms / postings", f"{info['terms']} / {info['postings']}"),
        ("size", f"{info['bytes']['database'] / 2**20:.1f} MB database, "
                 f"{info['bytes']['bm25_cache'] / 2**20:.1f} MB BM25 cache"),
        ("folders", ", ".join(info["roots"]) or "-"),
        ("tokenizer", f"{fp.get('tokenizer', '-')} ({fp.get('tokenizer_sha256', '-')})"),
        ("chunking", json.dumps(fp.get("chunking")) if fp else "-"),
        ("analyzer", fp.get("analyzer", "-")),
        ("vectors", _vectors(info["vectors"])),
        ("last run", f"{last.get('status', 'never')}"
                     + (f", {index_summary(last['stats'])}" if last.get("stats") else "")),
    ]
    from rich.text import Text

    for key, value in rows:
        table.add_row(key, Text(one_line(value)))
    out.print(table)


def _vectors(v: dict | None) -> str:
    if v is None:
        return "none (BM25 only)"
    done = f"{v['embedded_texts']} of {v['chunk_texts']} chunk texts embedded"
    if v["kind"] is None:
        return f"incomplete: {done} (`kb index` completes them)"
    state = "" if v["up_to_date"] else ", behind the database (caught up on next use)"
    if not v["complete"]:
        state += f"; {done} (`kb index` completes them)"
    return (f"{v['count']} x {v['dims']} ({v['model']}), index {v['kind']}{state}; "
            f"{_fusion_line(v['fusion'])}")


def evaluation(report: dict, out) -> None:
    from rich.table import Table

    table = Table("mode", "nDCG@10", "recall@10", "recall@100", "MRR@10", "queries/s")
    for mode, m in report["modes"].items():
        table.add_row(mode, f"{m['ndcg@10']:.4f}", f"{m['recall@10']:.4f}", f"{m['recall@100']:.4f}",
                      f"{m['mrr@10']:.4f}", f"{m['queries_per_s']:.0f}")
    out.print(table)
    if "tuning" in report:
        best = report["tuning"][0]
        out.print(f"best: {_fusion_line(report['chosen'])} (nDCG@10 {best['ndcg@10']:.4f})")
    out.print(f"used by kb query: {_fusion_line(report['fusion'])}")


def _fusion_line(f: dict) -> str:
    line = f"{f['method']} fusion, vector weight {f['weight']:g}, title weight {f['title_weight']:g}"
    for lang, g in sorted(f.get("languages", {}).items()):
        line += f"; {lang} queries: {g['method']}, vector weight {g['weight']:g}"
    return line


def stream(piece: str) -> None:
    """A piece of an answer as it is generated, escape sequences stripped."""
    sys.stdout.write(safe(piece))
    sys.stdout.flush()


def answer(a, out, streamed: bool = False, header: bool = False) -> None:
    """An answer (kb.rag.answer.Answer), then the sources it cited (all of them if it cited none)."""
    from rich.text import Text

    if header:
        out.print(Text("question: " + safe(a.question), style="bold"))
    if not streamed:
        out.print(Text(safe(a.answer)))
    else:
        sys.stdout.write("\n")
        if a.declined:
            out.print(Text(safe(a.answer)))
        elif dropped := [n for n in a.model_cited if n not in a.cited]:  # streamed as the model wrote them
            out.print(Text("not backed by their source: " + " ".join(f"[{n}]" for n in dropped), style="dim"))
    if a.flag:
        from kb.rag.grounding import FLAGS

        out.print(Text(f"warning: {FLAGS[a.flag]}", style="yellow"))
    shown = [s for s in a.sources if s.n in a.cited] or a.sources
    if shown:
        out.print(Text("sources:" if a.cited else "sources (none cited):", style="dim"))
    for s in shown:
        out.print(Text(f"  [{s.n}] {one_line(s.path)}:{s.start_line}-{s.end_line}", style="cyan"))
    if header:
        out.print()


def models(rows: list[dict], where: str, out) -> None:
    from rich.text import Text

    out.print(Text(f"models in {one_line(where)}", style="dim"))
    for r in rows:
        mark = f"installed, {r['bytes'] / 2**30:.2f} GB" if r["installed"] else "not installed"
        default = " (default)" if r["default"] else ""
        out.print(Text(f"  {r['name']}{default} ({r['kind']}): {mark}; {r['note']}"))


def check_report(report: dict, out) -> None:
    """`kb check`: what was repaired, each problem left, then the verdict."""
    from rich.text import Text

    for line in report["repaired"]:
        out.print(Text(f"repaired: {safe(line)}"))
    for p in report["problems"]:
        mark = "" if p["repairable"] else " (not repairable)"
        out.print(Text(f"problem: {p['what']}: {safe(p['detail'])}{mark}"))
    verdict = "ok" if report["ok"] else f"{len(report['problems'])} problem(s)"
    out.print(Text(f"{safe(report['db'])}: {verdict}"))


def collections(rows: list[dict], out) -> None:
    from rich.text import Text

    if not rows:
        out.print("no collections yet: `kb index FOLDER` adds one")
    for r in rows:
        rules = "".join(f"  +{p}" for p in r["include"]) + "".join(f"  -{p}" for p in r["exclude"])
        out.print(Text(f"{one_line(r['name'])}  {one_line(r['root'])}  {r['documents']} documents{one_line(rules)}"))
        if r["context"]:
            out.print(Text("    " + one_line(r["context"])))
