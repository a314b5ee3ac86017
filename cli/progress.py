"""Index progress: a rich bar on a terminal, a plain line every 30 s otherwise (cron logs stay
short), nothing with --quiet."""

from __future__ import annotations

import sys
import time
from pathlib import Path


class RichProgress:
    def __init__(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from kb.cli.render import console

        self._bar = Progress(TextColumn("{task.fields[label]}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TextColumn("{task.description}"),
                             console=console(stderr=True), transient=True)
        self._task = None

    def start(self, total: int, label: str = "indexing") -> None:
        self._bar.start()
        self._task = self._bar.add_task("", total=total, label=label)

    def advance(self, path: Path) -> None:
        from kb.cli.render import safe

        self._bar.update(self._task, advance=1, description=safe(path.name)[:40])

    def finish(self) -> None:
        self._bar.stop()


class PlainProgress:
    every = 30.0

    def start(self, total: int, label: str = "indexing") -> None:
        self.total, self.done, self.last, self.label = total, 0, time.monotonic(), label

    def advance(self, path: Path) -> None:
        self.done += 1
        if time.monotonic() - self.last >= self.every:
            self.last = time.monotonic()
            sys.stderr.write(f"kb index: {self.label} {self.done}/{self.total}\n")

    def finish(self) -> None:
        pass


def for_terminal(quiet: bool):
    if quiet:
        return None
    return RichProgress() if sys.stderr.isatty() else PlainProgress()
