"""`kb status`"""

from __future__ import annotations

import typer

from kb.cli import options, render

_SOURCES = {"COMMANDLINE": "flag", "ENVIRONMENT": "environment", "DEFAULT_MAP": "config file", "DEFAULT": "default"}


def status(ctx: typer.Context, db: options.Db = None, json_out: options.Json = False) -> None:
    """What the store holds, how it was built, how the last index run went, and where the settings came from."""
    from kb.cli.config import load, location
    from kb.index.status import status as store_status
    from kb.index.store import Store

    info = store_status(Store.open(db))
    cfg = load()
    source = ctx.get_parameter_source("db")
    info["settings"] = {"config_file": str(cfg.file) if cfg.file else None, "config_looked_at": str(location()),
                        "store_from": _SOURCES.get(source.name if source else "DEFAULT", "default"),
                        "config_flags": cfg.flags}
    if json_out:
        render.print_json(info)
    else:
        render.status(info, render.console())
