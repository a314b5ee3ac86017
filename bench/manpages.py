"""Labelled retrieval sets from Debian's manual pages, text nobody here wrote, in English and in
French, German and Spanish (the manpages-l10n translations).

    from manpages import build
    folder, queries = build("en")   # or "fr", "de", "es", "fr+de+es"

Pages come from Debian bookworm packages fetched with `apt-get download` (English: the Linux
man-pages, FreeBSD's, Perl, OpenSSL, GnuTLS, XCB, X11, Erlang, OCaml, curl, Tcl/Tk, tcllib, Open MPI,
ncurses and git; translations: manpages-xx and manpages-xx-dev), turned from troff into markdown by a small converter (macros dropped, `.SH` a
heading), one file per page; `.so` stubs (aliases) are left out. Known-item queries: a page's
one-line summary from its NAME section ("ls - list directory contents" gives "list directory
contents"), cut out of the indexed page (the inverse cloze task), only where no other page has the
same summary and it has 4 words or more. Queries are shuffled with a fixed seed; even positions are
for tuning, odd ones held out for final scoring.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
PACKAGES = {
    "en": ("manpages", "manpages-dev", "libssl-doc", "perl-doc", "tcl8.6-doc", "tk8.6-doc", "git-man",
           "freebsd-manpages", "gnutls-doc", "libxcb-doc", "erlang-manpages", "libcurl4-doc", "tcllib",
           "openmpi-doc", "libx11-doc", "ocaml-man", "ncurses-doc"),
    "fr": ("manpages-fr", "manpages-fr-dev"), "de": ("manpages-de", "manpages-de-dev"),
    "es": ("manpages-es", "manpages-es-dev"),
}
NAME_HEADINGS = {"NAME", "NOM", "BEZEICHNUNG", "NOMBRE"}
_ESCAPES = [(re.compile(p), r) for p, r in (
    (r"\\f(\[[^\]]*\]|\(..|.)", ""), (r"\\s[+-]?\d+", ""), (r"\\\*(\(..|\[[^\]]*\]|.)", ""),
    (r"\\\((em|en)", "-"), (r"\\\((aq|cq)", "'"), (r"\\\((dq|lq|rq)", '"'), (r"\\\(bu", "*"),
    (r"\\\(..", ""), (r"\\\[[^\]]*\]", ""), (r"\\[-]", "-"), (r"\\[ ~0]", " "), (r"\\e", "\\\\"),
    (r"\\[&%,/|^c:]", ""), (r"\\(.)", r"\1"))]
_MACRO = re.compile(r"^[.'](\S+)\s*(.*)$")
_TEXT_MACROS = {"B", "I", "BR", "IR", "RB", "RI", "BI", "IB", "SM", "SB", "IP", "TP", "Nm", "Nd"}


def inline(text: str) -> str:
    for pattern, repl in _ESCAPES:
        text = pattern.sub(repl, text)
    return text


def to_markdown(troff: str) -> str | None:
    """The page as markdown, or None for a `.so` stub."""
    out = []
    for line in troff.splitlines():
        if line.startswith(('.\\"', "'\\\"", '.\\#')):
            continue
        m = _MACRO.match(line)
        if not m:
            out.append(inline(line))
            continue
        name, args = m.groups()
        if name == "so":
            return None
        if name in ("SH", "SS"):
            out.append(("\n# " if name == "SH" else "\n## ") + inline(args.replace('"', "")).strip() + "\n")
        elif name in _TEXT_MACROS and args:
            out.append(inline(" ".join(a.strip('"') for a in re.findall(r'"[^"]*"|\S+', args))))
        elif name in ("PP", "P", "LP", "sp", "br"):
            out.append("")
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip() + "\n"


def _pages(langs: list[str]) -> dict[str, str]:
    """relative path -> troff source of every page of `langs`' packages."""
    pages = {}
    with tempfile.TemporaryDirectory() as tmp:
        pkgs = [p for lang in langs for p in PACKAGES[lang]]
        subprocess.run(["apt-get", "download", *pkgs], cwd=tmp, check=True, capture_output=True)
        for deb in Path(tmp).glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), f"{tmp}/x"], check=True)
        for lang in langs:
            root = Path(tmp, "x/usr/share/man") / ("" if lang == "en" else lang)
            for f in sorted(root.glob("man*/*.gz")) + sorted(Path(tmp, "x/usr/share/man").glob("mann/*.gz")) * (lang == "en"):
                if f.is_file() and not f.is_symlink():
                    pages[f"{lang}/{f.parent.name}/{f.name[:-3]}.md"] = gzip.decompress(f.read_bytes()).decode(
                        "utf-8", "replace")
    return pages


def _summary(md: str) -> tuple[str, str] | None:
    """(the page without its summary, the summary) from the NAME section's first line."""
    lines = md.splitlines()
    for i, line in enumerate(lines[:-2]):
        if line.startswith("# ") and line[2:].strip().upper() in NAME_HEADINGS:
            j = next((k for k in range(i + 1, len(lines)) if lines[k].strip()), None)
            if j is None:
                return None
            end = next((k for k in range(j, len(lines)) if not lines[k].strip() or lines[k].startswith("#")),
                       len(lines))
            names, dash, summary = " ".join(lines[j:end]).partition(" - ")
            if not dash:
                return None
            return "\n".join(lines[:j] + [names] + lines[end:]) + "\n", " ".join(summary.split())
    return None


def build(lang: str, n_queries: int = 1000, seed: int = 0, cap: int = 1200) -> tuple[Path, list[dict]]:
    """(the corpus folder, its queries), built once under bench/data/man-<lang>-<cap>: each page
    cut to about its first `cap` characters (at a line end; the summary comes first), so that the
    2-core CPU embeds 10,000 pages in minutes."""
    folder = DATA / f"man-{lang}-{cap}"
    if (folder / ".complete").exists():
        return folder, json.loads((folder / ".queries.json").read_text())
    shutil.rmtree(folder, ignore_errors=True)
    docs, summaries = {}, {}
    for rel, troff in _pages(lang.split("+")).items():
        md = to_markdown(troff)
        if md is None or len(md.split()) < 20:
            continue
        docs[rel] = md
        if (cut := _summary(md)) and len(cut[1].split()) >= 4:
            summaries[rel] = cut
    counts: dict[str, int] = {}
    for _, s in summaries.values():
        counts[s.lower()] = counts.get(s.lower(), 0) + 1
    unique = sorted(r for r, (_, s) in summaries.items() if counts[s.lower()] == 1)
    rng = random.Random(seed)
    picked = rng.sample(unique, min(n_queries, len(unique)))
    for rel, md in docs.items():
        out = folder / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        text = summaries[rel][0] if rel in picked else md
        out.write_text(text[:text.find("\n", cap) + 1 or None] if len(text) > cap else text, encoding="utf-8")
    queries = [{"_id": f"m{i}", "text": summaries[rel][1], "doc": rel, "type": "summary"}
               for i, rel in enumerate(picked)]
    (folder / ".queries.json").write_text(json.dumps(queries, ensure_ascii=False))
    (folder / ".complete").write_text(str(len(docs)))
    return folder, queries


ASK_SECTIONS = ("man1", "man2", "man5", "man7")
_OPTION = re.compile(r"^--?[A-Za-z][\w-]*(?:[=\[ ]\S*)?(?:, --?[A-Za-z][\w-]*(?:[=\[ ]\S*)?)*$")
_LONG = re.compile(r"--[A-Za-z][\w-]*")


def _names(md: str) -> tuple[list[str], str] | None:
    """(the names, the summary) of a page's NAME line."""
    lines = md.splitlines()
    for i, line in enumerate(lines[:-2]):
        if line.startswith("# ") and line[2:].strip().upper() in NAME_HEADINGS:
            names, dash, summary = lines[i + 2 if not lines[i + 1].strip() else i + 1].partition(" - ")
            return ([n.strip() for n in names.split(",") if n.strip()], " ".join(summary.split())) if dash else None
    return None


def _options(md: str) -> list[tuple[list[str], str]]:
    """(long option names, description) for each option whose description is one whole sentence
    on the line after it, followed by a blank line."""
    lines = md.splitlines() + [""]
    out = []
    for i in range(len(lines) - 2):
        desc = lines[i + 1].strip()
        if (_OPTION.match(lines[i].strip()) and not lines[i + 2].strip() and desc[:1].isupper()
                and desc.endswith(".") and desc.count(".") == 1 and 6 <= len(desc.split()) <= 25):
            longs = _LONG.findall(lines[i])
            if longs:
                out.append((longs, desc))
    return out


def ask_set(n: int = 60, seed: int = 0, cap: int = 6000) -> tuple[Path, list[dict]]:
    """(a corpus folder, questions with known answers), built once under bench/data/man-ask-<cap>:
    the English pages of sections 1, 2, 5 and 7, each cut to about `cap` characters. Half the
    questions ask which page a NAME line's summary describes ("Which command or function is
    described as \"create a child process\"?": fork), half which option of a command does what
    its description says (git log's "--follow"); each summary or description is unique in the
    corpus, and each answer a name of 4 characters or more. Shuffled with a fixed seed: even
    positions for tuning, odd ones held out for final scoring."""
    folder = DATA / f"man-ask-{cap}"
    if (folder / ".complete").exists():
        return folder, json.loads((folder / ".questions.json").read_text())
    shutil.rmtree(folder, ignore_errors=True)
    docs = {}
    for rel, troff in _pages(["en"]).items():
        md = to_markdown(troff) if rel.split("/")[1] in ASK_SECTIONS else None
        if md is not None and len(md.split()) >= 20:
            docs[rel] = md[:md.find("\n", cap) + 1 or None] if len(md) > cap else md
    rng = random.Random(seed)
    questions = _name_questions(docs, rng, n // 2) + _option_questions(docs, rng, n - n // 2)
    rng.shuffle(questions)
    for rel, md in docs.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(md, encoding="utf-8")
    (folder / ".questions.json").write_text(json.dumps(questions, ensure_ascii=False))
    (folder / ".complete").write_text(str(len(docs)))
    return folder, questions


def _name_questions(docs: dict[str, str], rng: random.Random, n: int) -> list[dict]:
    named = {rel: got for rel, md in docs.items() if (got := _names(md))}
    counts: dict[str, int] = {}
    for _, summary in named.values():
        counts[summary.lower()] = counts.get(summary.lower(), 0) + 1
    usable = sorted(rel for rel, (names, summary) in named.items()
                    if counts[summary.lower()] == 1 and len(summary.split()) >= 4 and min(map(len, names)) >= 4)
    return [{"question": f'Which command or function is described as "{named[rel][1]}"?',
             "expect": named[rel][0] + [x.replace("-", " ") for x in named[rel][0] if "-" in x], "doc": rel,
             "kind": "name"} for rel in rng.sample(usable, n)]


def _option_questions(docs: dict[str, str], rng: random.Random, n: int) -> list[dict]:
    found = [(rel, longs, desc) for rel, md in docs.items() if rel.split("/")[1] == "man1" and _names(md)
             for longs, desc in _options(md)]
    seen: dict[str, int] = {}
    for _, _, desc in found:
        seen[desc.lower()] = seen.get(desc.lower(), 0) + 1
    usable = [f for f in found if seen[f[2].lower()] == 1]
    out = []
    for rel, longs, desc in rng.sample(usable, n):
        command = _names(docs[rel])[0][0].replace("-", " ") if rel.split("/")[2].startswith("git-") \
            else _names(docs[rel])[0][0]
        out.append({"question": f"Which option of {command} does this: {desc[0].lower() + desc[1:-1]}?",
                    "expect": longs, "doc": rel, "kind": "option"})
    return out


if __name__ == "__main__":
    import sys

    for lang in sys.argv[1:] or ["en", "fr"]:
        f, q = build(lang)  # noqa: F841
        print(lang, sum(1 for _ in f.rglob("*.md")), "documents,", len(q), "queries; e.g.", q[:2])
