"""Find the files to index under a root: skips hidden entries, what `.gitignore` (unless asked not
to) and `.kbignore` files exclude (gitignore syntax, each file applies to its folder and below; a
folder's `.kbignore` lines come after its `.gitignore`'s, so `!build/` there takes build/ back),
kinds kb does not read, and symlinks that leave the root (unless asked to follow them). Symlink
loops are cut. What is passed over is counted by reason."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from kb.index.formats import kind_of

IGNORE_FILE = ".kbignore"
GIT_IGNORE = ".gitignore"


@dataclass(frozen=True)
class Found:
    path: Path  # absolute, as reached from the root (a symlink keeps its own name)
    kind: str
    stat: os.stat_result


@dataclass
class WalkReport:
    unreadable_dirs: list[Path] = field(default_factory=list)  # their indexed files must be kept
    outside_links: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # entries not looked into, by reason: "hidden" (a dot name), "ignored" (.gitignore, .kbignore),
    # "other type" (files of kinds kb does not read), "not included" (by a collection's include
    # patterns); an ignored or hidden folder counts once
    passed_over: Counter = field(default_factory=Counter)


def _ignore_spec(directory: Path, report: WalkReport, gitignore: bool):
    lines = []
    for name in (GIT_IGNORE, IGNORE_FILE) if gitignore else (IGNORE_FILE,):
        path = directory / name
        try:
            if path.is_file():  # raises where the folder cannot be searched (no x permission)
                lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return None  # an unreadable folder: listing it fails next, and says so
    if not lines:
        return None
    import pathspec

    try:
        return pathspec.GitIgnoreSpec.from_lines(lines)
    except ValueError as e:
        report.warnings.append(f"{directory}: its ignore files are not used ({e})")
        return None


def walk(root: Path, report: WalkReport, follow_symlinks: bool = False, gitignore: bool = True,
         include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> Iterator[Found]:
    """Files under `root` (a resolved directory), in a stable order; `include`/`exclude`: a
    collection's gitignore-style patterns, relative to `root` (a file must match one `include`)."""
    import pathspec

    root_stat = root.stat()
    seen_dirs = {(root_stat.st_dev, root_stat.st_ino)}
    ruled = [(root, pathspec.GitIgnoreSpec.from_lines(exclude))] if exclude else []
    wanted = pathspec.GitIgnoreSpec.from_lines(include) if include else None
    stack: list[tuple[Path, list[tuple[Path, object]]]] = [(root, ruled)]
    while stack:
        directory, specs = stack.pop()
        spec = _ignore_spec(directory, report, gitignore)
        if spec is not None:
            specs = specs + [(directory, spec)]
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as e:
            report.unreadable_dirs.append(directory)
            report.warnings.append(f"{directory}: cannot list folder ({e.strerror or e})")
            continue
        subdirs = []
        for entry in entries:
            found = _visit(entry, root, specs, report, follow_symlinks)
            if isinstance(found, Found):
                if wanted is None or wanted.match_file(found.path.relative_to(root).as_posix()):
                    yield found
                else:
                    report.passed_over["not included"] += 1
            elif found is not None:
                path, st = found
                if (st.st_dev, st.st_ino) in seen_dirs:  # a symlink loop, or a second way into one folder
                    continue
                seen_dirs.add((st.st_dev, st.st_ino))
                subdirs.append((path, specs))
        stack.extend(reversed(subdirs))


def _visit(entry: os.DirEntry, root: Path, specs, report: WalkReport, follow_symlinks: bool):
    """A folder to go into ((path, stat)), a file to index (Found), or None: passed over, counted."""
    if entry.name.startswith("."):
        report.passed_over["hidden"] += 1
        return None
    path = Path(entry.path)
    try:
        is_dir = entry.is_dir()  # follows symlinks
        st = entry.stat()
    except OSError:
        report.warnings.append(f"{path}: broken symlink or unreadable entry, skipped")
        return None
    if _ignored(path, is_dir, specs):
        report.passed_over["ignored"] += 1
        return None
    if entry.is_symlink() and not follow_symlinks and not _inside(path, root):
        report.outside_links.append(path)
        return None
    if is_dir:
        return path, st
    kind = kind_of(path) if entry.is_file() else None
    if kind:
        return Found(path, kind, st)
    report.passed_over["other type"] += 1 if entry.is_file() else 0
    return None


def _ignored(path: Path, is_dir: bool, specs) -> bool:
    for base, spec in specs:
        rel = path.relative_to(base).as_posix() + ("/" if is_dir else "")
        if spec.match_file(rel):
            return True
    return False


def _inside(path: Path, root: Path) -> bool:
    try:
        return Path(os.path.realpath(path)).is_relative_to(root)
    except OSError:
        return False
