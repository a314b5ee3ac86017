"""`kb status`"""

from __future__ import annotations

from kb.cli import options, render


def status(db: options.Db = None, json_out: options.Json = False) -> None:
    """What the store holds, how it was built, and how the last index run went."""
    from kb.index.status import status as store_status
    from kb.index.store import Store

    info = store_status(Store.open(db))
    if json_out:
        render.print_json(info)
    else:
        render.status(info, render.console())
