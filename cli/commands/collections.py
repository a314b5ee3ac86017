"""`kb collections [list] | remove NAME`: the folders a store keeps (kb.index.collections).
`kb index FOLDER --name N --include G --exclude G --context T` adds or changes one."""

from __future__ import annotations

import typer

from kb.cli import options, render

app = typer.Typer(invoke_without_command=True, help="The folders this store keeps, by name: list them, or remove "
                                                      "one with all it indexed (kb index FOLDER adds one).")


@app.callback()
def collections(ctx: typer.Context, db: options.Db = None, json_out: options.Json = False) -> None:
    if ctx.invoked_subcommand is None:
        listing(db, json_out)


@app.command("list")
def listing(db: options.Db = None, json_out: options.Json = False) -> None:
    """Each collection: name, folder, rules, context, and how many documents it holds."""
    from kb.index import collections as cols
    from kb.index.store import Store

    store = Store.open(db)
    rows = [{**c.to_json(), "documents": len(cols.document_ids(store.conn, c))} for c in cols.load(store).values()]
    if json_out:
        render.print_json({"collections": rows})
    else:
        render.collections(rows, render.console())


@app.command()
def remove(name: options.CollectionName, db: options.Db = None, json_out: options.Json = False,
           wait: options.Wait = 30.0) -> None:
    """Remove a collection (by name or folder): its documents, chunks, vectors and cached KV blocks."""
    from kb.index import collections as cols

    report = cols.remove(db, name, wait)
    if json_out:
        render.print_json(report)
    else:
        print(f"removed collection {report['removed']} ({report['documents']} documents, {report['chunks']} chunks, "
              f"{report['vectors']} vectors, {report['kv_blocks']} KV blocks)")
