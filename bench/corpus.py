"""A real-text benchmark corpus that builds offline: docstrings of the Python standard library,
read with `ast` (nothing is imported or run), one document per module, class or function.
Known-item queries: words drawn from one document, plus one word from another as noise.
Deterministic for a given Python version and seed."""

from __future__ import annotations

import ast
import json
import random
import re
import sysconfig
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


def _sources():
    """The standard library, then the packages of the running environment (kb's dependencies)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.rglob("*.py")):
        rel = path.relative_to(stdlib)
        if rel.parts[0] not in ("site-packages", "dist-packages"):
            yield Path("stdlib") / rel, path
    purelib = Path(sysconfig.get_paths()["purelib"])
    for path in sorted(purelib.rglob("*.py")):
        yield Path("site") / path.relative_to(purelib), path


def _docstrings(min_words: int):
    for rel, path in _sources():
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc.split()) >= min_words:
                    name = getattr(node, "name", "__module__")
                    yield f"{rel.with_suffix('').as_posix()}/{name}.{getattr(node, 'lineno', 0)}.txt", doc


def build(n_docs: int = 12_000, min_words: int = 12) -> Path:
    """Write the corpus under bench/data/pydocs-N/ once; returns its folder."""
    folder = DATA / f"pydocs-{n_docs}"
    done = folder / ".complete"
    if done.exists():
        return folder
    if folder.exists():  # an interrupted build: start over
        import shutil

        shutil.rmtree(folder)
    count = 0
    for rel, doc in _docstrings(min_words):
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(doc + "\n", encoding="utf-8")
        count += 1
        if count == n_docs:
            break
    if count < n_docs:
        raise SystemExit(f"only {count} docstrings found; ask for fewer documents")
    done.write_text(str(count))
    return folder


_WORD = re.compile(r"[A-Za-z][a-z]{3,}")


def known_item_queries(folder: Path, n: int = 1000, seed: int = 0) -> list[dict]:
    """[{"_id", "text", "doc"}]: 3 distinct words (4+ letters) of a document and 1 of another."""
    rng = random.Random(seed)
    docs = sorted(p for p in folder.rglob("*.txt"))
    out = []
    while len(out) < n:
        target, other = rng.sample(docs, 2)
        words = sorted(set(_WORD.findall(target.read_text())))
        noise = _WORD.findall(other.read_text())
        if len(words) < 6 or not noise:
            continue
        picked = rng.sample(words, 3) + [rng.choice(noise)]
        rng.shuffle(picked)
        out.append({"_id": f"q{len(out)}", "text": " ".join(picked).lower(),
                    "doc": target.relative_to(folder).as_posix()})
    return out


def write_beir(queries: list[dict], folder: Path) -> tuple[Path, Path]:
    qpath, rpath = folder / "queries.jsonl", folder / "qrels.tsv"
    qpath.write_text("".join(json.dumps({"_id": q["_id"], "text": q["text"]}) + "\n" for q in queries))
    rpath.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q['_id']}\t{q['doc']}\t1\n" for q in queries))
    return qpath, rpath


def build_held_out(n_docs: int = 12_000, n_queries: int = 500, seed: int = 0) -> tuple[Path, list[dict]]:
    """The corpus of `build(n_docs)` with the summary line of `n_queries` documents cut out and
    kept as their query (the inverse cloze task: a one-line description of what the rest of the
    text explains, in other words than the text's own). Returns (folder, queries)."""
    source = build(n_docs)
    folder = DATA / f"pydocs-{n_docs}-heldout-{n_queries}"
    qfile, done = folder / ".queries.json", folder / ".complete"
    if done.exists():
        return folder, json.loads(qfile.read_text())
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    rng = random.Random(seed)
    files = sorted(source.rglob("*.txt"))
    picked: dict[Path, str] = {}
    for path in rng.sample(files, len(files)):
        head, _, rest = path.read_text().partition("\n\n")
        summary = " ".join(head.split())
        if 5 <= len(summary.split()) <= 30 and len(rest.split()) >= 20 and "\n" not in head.strip():
            picked[path] = summary
            if len(picked) == n_queries:
                break
    queries = []
    for path in files:
        rel = path.relative_to(source)
        out = folder / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text()
        if path in picked:
            text = text.partition("\n\n")[2]
            queries.append({"_id": f"s{len(queries)}", "text": picked[path], "doc": rel.as_posix(),
                            "type": "summary"})
        out.write_text(text, encoding="utf-8")
    rng.shuffle(queries)
    qfile.write_text(json.dumps(queries))
    done.write_text(str(len(files)))
    return folder, queries
