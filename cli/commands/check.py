"""`kb check [--repair]`"""

from __future__ import annotations

from kb.cli import options, render


def check(db: options.Db = None, json_out: options.Json = False, repair: options.Repair = False) -> None:
    """Check the store: SQLite's integrity, the derived files against the database, orphan rows."""
    from kb.index import check as checker

    report = checker.check(db, repair=repair)
    if json_out:
        render.print_json(report)
    else:
        render.check_report(report, render.console())
    if not report["ok"]:
        raise checker.StoreDamaged(checker.summary(report))
