"""The `kb` command: the Typer wiring of the commands (kb.cli.commands, one module each) and the
one error map, which turns every exception into one line on stderr and a documented exit code
(KB_DEBUG=1 shows the traceback of kb's errors and bugs instead)."""

from __future__ import annotations

import errno
import os
import sqlite3
import sys

from typing import Annotated

import typer

from kb.cli import render
from kb.cli.commands import ask, check, collections, evaluate, get, index, models, query, serve, status
from kb.errors import KbError

app = typer.Typer(
    no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None, context_settings={"help_option_names": ["-h", "--help"]},
    help="kb: index folders of documents, search them, ask them. Exit codes: 0 ok, 1 internal error, "
         "2 usage, 3 not found, 4 store incompatible, 5 some files unreadable, 75 store busy.",
)


def _version(show: bool) -> None:
    if show:
        from importlib.metadata import version

        print(f"kb {version('kb')}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print kb's version and exit.")] = False) -> None:
    pass


app.command("index")(index.index)
app.command("query")(query.query)
app.command("get")(get.get)
app.command("status")(status.status)
app.command("check")(check.check)
app.command("eval")(evaluate.evaluate)
app.command("ask")(ask.ask)
app.command("serve")(serve.serve)
app.add_typer(models.app, name="models")
app.add_typer(collections.app, name="collections")


def main() -> None:
    parse_errors, interrupts = _click_exceptions()
    try:
        from kb.cli import config

        command = typer.main.get_command(app)
        defaults = config.default_map(config.load(), command)
        code = command.main(prog_name="kb", standalone_mode=False, default_map=defaults)
    except BrokenPipeError:  # a reader such as `head` left: quiet, as Unix tools are
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except (*parse_errors, *interrupts, KeyboardInterrupt) as e:
        sys.exit(_parse_error(e) if isinstance(e, parse_errors) else _interrupted())
    except Exception as e:
        if os.environ.get("KB_DEBUG") == "1":
            raise
        message, code = explain(e)
        render.warn(message)
        sys.exit(code)
    if code == 130:  # typer turns Ctrl-C inside a command into Exit(130), returned here
        sys.exit(_interrupted())
    sys.exit(code if isinstance(code, int) else 0)


def explain(e: Exception) -> tuple[str, int]:
    """The error map: (one line for stderr, exit code) for an exception a command raised."""
    if isinstance(e, KbError):
        return f"error: {e}", e.exit_code
    problem = _damage(e)
    if problem:
        return (f"error: the store is damaged ({problem}); move its folder aside and run `kb index` again, "
                "or restore a backup"), 4
    named = _named(e)
    if named is not None:
        return f"error: {_one_line(named)}", named.exit_code
    if isinstance(e, sqlite3.DatabaseError):
        return f"error: the store could not be used: {_one_line(e)}", 1
    return f"internal error: {type(e).__name__}: {_one_line(e)} (KB_DEBUG=1 shows the traceback)", 1


def _parse_error(e) -> int:
    """A bad option or argument: one line, exit 2; `kb` alone prints its help."""
    if type(e).__name__ == "NoArgsIsHelpError":
        e.show()
    else:
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        render.warn(f"error: {_one_line(e.format_message())}{hint}")
    return e.exit_code


def _interrupted() -> int:
    render.warn("interrupted")
    return 130


def _one_line(e: object, width: int = 200) -> str:
    """An exception's (or any) message as one line (SQLite's can quote a chunk's text, newlines and all)."""
    text = " ".join(str(e).split())
    return text if len(text) <= width else text[:width - 3] + "..."


def _damage(e: Exception) -> str | None:
    """Why the store is broken, if that is what `e` comes from: SQLite said so, or (damaged pages
    can read back as nonsense, and code trips over it) a quick check of each store this process
    opened fails."""
    from kb.common import is_damage
    from kb.index import store

    if isinstance(e, sqlite3.DatabaseError) and is_damage(e):
        return _one_line(e).split(" with text ")[0]
    for directory in sorted(store.OPENED):
        problem = store.damage(directory)
        if problem:
            return _one_line(problem)
    return None


def _named(e: Exception) -> KbError | None:
    """A full disk or a store that takes no writes, met in the middle of a command (SQLite rolled
    the transaction back; nothing is lost)."""
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
