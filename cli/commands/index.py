"""`kb index PATH...`"""

from __future__ import annotations

import sys

from typing import Annotated, Optional

import typer

from kb.cli import options, render
from kb.errors import PartialFailure

EmbedBackend = Annotated[Optional[str], typer.Option(
    show_default=False, help="Embed through an OpenAI-compatible embeddings server (TEI, vLLM, Infinity, kb serve): "
                             "its URL; queries are embedded there too. API key from $KB_BACKEND_API_KEY or $OPENAI_API_KEY.")]
EmbedBackendModel = Annotated[Optional[str], typer.Option(
    show_default=False, help="The model name to ask the --embed-backend server for (default: the server's).")]


def index(
    paths: options.Paths = None,
    db: options.Db = None,
    json_out: options.Json = False,
    quiet: options.Quiet = False,
    wait: options.Wait = 30.0,
    max_file_mb: options.MaxFileMb = 20.0,
    follow_symlinks: options.FollowSymlinks = False,
    gitignore: options.GitIgnore = True,
    rebuild: options.Rebuild = False,
    vector_index: options.VectorIndex = None,
    model: options.Encoder = None,
    pooling: options.Pooling = "auto",
    dims: options.Dims = 0,
    query_prefix: options.QueryPrefix = "",
    passage_prefix: options.PassagePrefix = "",
    devices: options.Devices = "",
    name: options.Name = None, include: options.Include = None, exclude: options.Exclude = None,
    context: options.Context = None, watch: options.Watch = False, embed_backend: EmbedBackend = None, embed_backend_model: EmbedBackendModel = None,
) -> None:
    """Index files and folders (each folder a collection; none: refresh them all); only what changed is redone."""
    from kb.cli.progress import for_terminal
    from kb.index.collections import Settings
    from kb.index.indexer import IndexConfig, index_paths

    embed = _embed(model, pooling, query_prefix, passage_prefix, devices, dims, embed_backend, embed_backend_model)
    cfg = IndexConfig(max_file_mb=max_file_mb, follow_symlinks=follow_symlinks, gitignore=gitignore, wait=wait,
                      rebuild=rebuild, embed=embed, vector_index=vector_index)
    settings = Settings(name, include and tuple(include), exclude and tuple(exclude), context)
    if watch:
        return _watch(paths or [], db, cfg, settings, json_out, quiet)
    report = index_paths(paths or [], db, cfg, for_terminal(quiet or json_out), settings=settings,
                         declared=() if paths else _declared(db))
    _show(report, json_out, quiet)
    if report.errors:
        raise PartialFailure(f"{len(report.errors)} file(s) could not be read; "
                             "their earlier index entries were kept")


def _declared(db) -> tuple:
    """The config file's collections of this store, for `kb index` without paths."""
    from kb.cli.config import declared, load
    from kb.index.collections import Settings

    return tuple((c["path"], Settings(c["name"], c["include"], c["exclude"], c["context"]))
                 for c in declared(load(), db))


def _watch(paths, db, cfg, settings, json_out: bool, quiet: bool) -> None:
    from kb.cli.progress import for_terminal
    from kb.index.watch import watch

    watch(paths, db, cfg, settings, lambda r: _show(r, json_out, quiet), progress=for_terminal(quiet or json_out))


def _embed(model, pooling, query_prefix, passage_prefix, devices, dims, backend=None, backend_model=None):
    from kb.embed.encoder import EmbedConfig
    from kb.embed.multi import parse_devices
    from kb.errors import UsageError
    from kb.rag.catalog import encoder_folder

    if backend and (model or devices):
        raise UsageError("--embed-backend embeds at a server: give it without --model or --devices")
    return EmbedConfig(model=encoder_folder(model), pooling=pooling, query_prefix=query_prefix,
                       passage_prefix=passage_prefix, devices=parse_devices(devices), dims=dims,
                       backend=backend, backend_model=backend_model)


def _show(report, json_out: bool, quiet: bool) -> None:
    """Warnings (unless quiet) and errors on stderr, then the report as JSON or one summary line."""
    if not quiet:
        for w in report.warnings:
            render.warn(w)
    for e in report.errors:
        render.warn(e)
    if json_out:
        render.print_json(report.to_json())
    elif not quiet:
        print(render.index_summary(report.to_json()))
    sys.stdout.flush()  # --watch prints a line per run: a pipe reader sees each as it comes
