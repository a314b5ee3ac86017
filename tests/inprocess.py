"""`kb` run in this process through its real entry point (kb.cli.app.main, the error map and exit
codes included) inside Typer's CliRunner isolation: the fast tier's stand-in for conftest.kb, which
pays a fresh interpreter (and torch's import) per command."""

from __future__ import annotations

import json
import subprocess
import sys
from unittest import mock

from typer.testing import CliRunner

from conftest import XDG
from kb.cli.app import main
from kb.index import store

_runner = CliRunner()


def kb_run(*args, check: int | None = 0, input: str | None = None,
           env: dict | None = None) -> subprocess.CompletedProcess:
    """`kb ARGS` as conftest.kb runs it (no KB_DB, NO_COLOR, a throwaway XDG_DATA_HOME), returning
    the same CompletedProcess; asserts the exit code when `check` is not None."""
    argv = ["kb", *map(str, args)]
    full_env = {"KB_DB": None, "NO_COLOR": "1", "XDG_DATA_HOME": XDG,
                **(env or {})}
    # A fresh process has opened no store: the error map must not suspect an earlier test's.
    with _runner.isolation(input=input, env=full_env) as (out, err, _), \
            mock.patch.object(sys, "argv", argv), mock.patch.object(store, "OPENED", set()):
        code = _exit_code(main)
        sys.stdout.flush()
        sys.stderr.flush()
        proc = subprocess.CompletedProcess(argv, code, out.getvalue().decode(), err.getvalue().decode())
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def kb_run_json(*args, **kw):
    return json.loads(kb_run(*args, "--json", **kw).stdout)


def _exit_code(entry) -> int:
    """What the process would exit with: main() always ends in sys.exit."""
    try:
        entry()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0
