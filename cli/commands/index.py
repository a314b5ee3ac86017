"""`kb index PATH...`"""

from __future__ import annotations

from kb.cli import options, render
from kb.errors import PartialFailure


def index(
    paths: options.Paths,
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
) -> None:
    """Index files and folders; only what changed since the last run is redone."""
    from kb.cli.progress import for_terminal
    from kb.embed.encoder import EmbedConfig
    from kb.embed.multi import parse_devices
    from kb.index.indexer import IndexConfig, index_paths

    from kb.rag.catalog import encoder_folder

    embed = EmbedConfig(model=encoder_folder(model), pooling=pooling, query_prefix=query_prefix,
                        passage_prefix=passage_prefix, devices=parse_devices(devices), dims=dims)
    cfg = IndexConfig(max_file_mb=max_file_mb, follow_symlinks=follow_symlinks, gitignore=gitignore, wait=wait,
                      rebuild=rebuild, embed=embed, vector_index=vector_index)
    report = index_paths(paths, db, cfg, for_terminal(quiet or json_out))
    _show(report, json_out, quiet)
    if report.errors:
        raise PartialFailure(f"{len(report.errors)} file(s) could not be read; "
                             "their earlier index entries were kept")


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
