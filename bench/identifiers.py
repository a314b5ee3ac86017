"""Exact things found exactly: identifier queries over code and reference docs nobody here wrote.

    python bench/identifiers.py [--modes bm25,hybrid] [--keep]

Corpus: CMake's whole reST help (Debian's cmake-data, fetched with `apt-get download`: a page per
variable, command, property and module, and the manuals, guides and release notes that mention them) and the Python sources of rich, typer and click
(kb's own dependencies, copied from site-packages). Queries, made from the corpus with a fixed seed:
- a CMake page's name as a user would type it (`CMAKE_BUILD_TYPE`, `target_link_libraries`);
  the page named so is the one that defines it;
- a class, method or function of the Python sources, as `Class`, `Class.method` or `function`
  (identifier-shaped: snake_case, dotted or CamelCase);
  the file that holds its `class`/`def` line defines it.
A query is found when the defining document is among the first 3 documents (chunks collapsed).
Queries alternate between a tuning half (even) and a held-out half (odd); both are reported.
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, machine  # noqa: E402

DATA = Path(__file__).resolve().parent / "data" / "identifiers"


def build() -> Path:
    """The corpus folder (built once): cmake/<dir>/<NAME>.rst and python/<package>/..."""
    if (DATA / ".complete").exists():
        return DATA
    shutil.rmtree(DATA, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", "cmake-data"], cwd=tmp, check=True, capture_output=True)
        deb = next(Path(tmp).glob("cmake-data_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), f"{tmp}/x"], check=True)
        help_dir = next(Path(tmp, "x/usr/share").glob("cmake-*/Help"))
        shutil.copytree(help_dir, DATA / "cmake")  # manuals, guides and release notes too: they mention names
    import click
    import rich
    import typer

    for mod in (rich, typer, click):
        src = Path(mod.__file__).parent
        shutil.copytree(src, DATA / "python" / src.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (DATA / ".complete").write_text("ok")
    return DATA


_DEF = re.compile(r"^([ \t]*)(class|def)[ \t]+([A-Za-z_]\w*)", re.M)


def queries(folder: Path, n_cmake: int, n_python: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    pages = sorted(p for d in ("variable", "command", "prop_tgt", "module") for p in (folder / "cmake" / d).glob("*.rst"))
    names: dict[str, list[Path]] = {}
    for p in sorted((folder / "cmake").rglob("*.rst")):
        names.setdefault(p.stem, []).append(p)
    unique = [p for p in pages if len(names[p.stem]) == 1 and "<" not in p.stem]
    out = [{"text": p.stem, "doc": p.relative_to(folder).as_posix(), "type": "cmake"}
           for p in rng.sample(unique, n_cmake)]
    symbols: dict[str, list[str]] = {}
    for f in sorted((folder / "python").rglob("*.py")):
        cls = None
        for m in _DEF.finditer(f.read_text()):
            indent, kind, name = m.groups()
            if name.startswith("_"):
                continue
            if kind == "class" and not indent:
                cls = name
            key = name if not indent else (f"{cls}.{name}" if cls and len(indent) == 4 and kind == "def" else None)
            if key:
                symbols.setdefault(key, []).append(f.relative_to(folder).as_posix())
    # identifier-shaped (snake_case, dotted, CamelCase): a lone word like `load` is a word search
    defined_once = sorted(k for k, v in symbols.items() if len(v) == 1 and re.search(r"[_.]|[a-z][A-Z]", k))
    out += [{"text": k, "doc": symbols[k][0], "type": "python"} for k in rng.sample(defined_once, n_python)]
    rng.shuffle(out)
    return out


def found_at(paths: list[str], doc: str) -> int | None:
    docs = list(dict.fromkeys(paths))
    return docs.index(doc) + 1 if doc in docs else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modes", default="bm25,hybrid")
    ap.add_argument("--cmake", type=int, default=40)
    ap.add_argument("--python", type=int, default=40)
    args = ap.parse_args()
    from kb.index.indexer import IndexConfig, index_paths
    from kb.index.search import Searcher
    from kb.index.store import Store

    folder = build()
    qs = queries(folder, args.cmake, args.python)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        report = index_paths([folder], Path(tmp) / "kb", IndexConfig())
        searcher = Searcher(Store.open(Path(tmp) / "kb"))
        for mode in args.modes.split(","):
            ranks = [found_at([h.path for h in searcher.search(q["text"], k=30, mode=mode).results], q["doc"])
                     for q in qs]
            row = {}
            for half, pick in (("tune", 0), ("held_out", 1)):
                sel = [r for i, r in enumerate(ranks) if i % 2 == pick]
                row[f"top3_{half}"] = round(sum(r is not None and r <= 3 for r in sel) / len(sel), 3)
            for kind in ("cmake", "python"):
                sel = [r for r, q in zip(ranks, qs) if q["type"] == kind]
                row[f"top3_{kind}"] = round(sum(r is not None and r <= 3 for r in sel) / len(sel), 3)
            row["top1_all"] = round(sum(r == 1 for r in ranks) / len(ranks), 3)
            row["misses"] = [f"{q['text']} -> {q['doc']} (rank {r})" for q, r in zip(qs, ranks)
                             if r is None or r > 3][:12]
            results[mode] = row
    print(f"\n{report.added} documents, {len(qs)} identifier queries ({args.cmake} CMake, {args.python} Python), "
          f"{machine()}")
    for mode, row in results.items():
        print(f"{mode:8} top-3: tune {row['top3_tune']:.3f}, held-out {row['top3_held_out']:.3f}; "
              f"CMake {row['top3_cmake']:.3f}, Python {row['top3_python']:.3f}; top-1 {row['top1_all']:.3f}")
        for m in row["misses"]:
            print("    missed:", m)
    emit("identifiers", docs=report.added, queries=len(qs),
         **{f"{mode}_{k}": v for mode, row in results.items() for k, v in row.items() if k != "misses"})


if __name__ == "__main__":
    main()
