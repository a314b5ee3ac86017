"""Index progress: a rich bar on a terminal, a plain line every 30 s otherwise (cron logs stay
short), nothing with --quiet. Both show the tokens read (or embedded) per second."""

from __future__ import annotations

import sys
import time
from pathlib import Path


def rate(tokens: int, seconds: float) -> str:
    """Tokens per second, short: '850 tokens/s', '42.1K tokens/s', '2.16M tokens/s'."""
    per = tokens / max(seconds, 1e-9)
    if per >= 1e6:
        return f"{per / 1e6:.2f}M tokens/s"
    return f"{per / 1e3:.1f}K tokens/s" if per >= 1e3 else f"{per:.0f} tokens/s"


class RichProgress:
    def __init__(self):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        from kb.cli.render import console

        # no markup: the description is a file's name
        self._bar = Progress(TextColumn("{task.fields[label]}", markup=False), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                             TextColumn("{task.fields[rate]}", markup=False),
                             TextColumn("{task.description}", markup=False), console=console(stderr=True),
                             transient=True)
        self._task = None

    def start(self, total: int, label: str = "indexing") -> None:
        self._bar.start()
        self._task = self._bar.add_task("", total=total, label=label, rate="")
        self._tokens, self._t0 = 0, time.monotonic()

    def advance(self, path: Path, tokens: int = 0) -> None:
        from kb.names import one_line

        self._tokens += tokens
        self._bar.update(self._task, advance=1, description=one_line(path.name)[:40],
                         rate=rate(self._tokens, time.monotonic() - self._t0))

    def finish(self) -> None:
        self._bar.stop()


class PlainProgress:
    every = 30.0

    def start(self, total: int, label: str = "indexing") -> None:
        self.total, self.done, self.label = total, 0, label
        self.tokens, self.t0 = 0, time.monotonic()
        self.last = self.t0

    def advance(self, path: Path, tokens: int = 0) -> None:
        self.done += 1
        self.tokens += tokens
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            sys.stderr.write(f"kb index: {self.label} {self.done}/{self.total}, {rate(self.tokens, now - self.t0)}\n")

    def finish(self) -> None:
        pass


def for_terminal(quiet: bool):
    if quiet:
        return None
    return RichProgress() if sys.stderr.isatty() else PlainProgress()
