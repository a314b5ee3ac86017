"""Find the files to index under a root: skips hidden entries, what `.kbignore` files exclude
(gitignore syntax, each file applies to its folder and below), kinds kb does not read, and symlinks
that leave the root (unless asked to follow them). Symlink loops are cut."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from kb.index.formats import kind_of

IGNORE_FILE = ".kbignore"


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


def _ignore_spec(directory: Path, report: WalkReport):
    path = directory / IGNORE_FILE
    try:
        if not path.is_file():  # raises where the folder cannot be searched (no x permission)
            return None
        import pathspec

        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        return pathspec.GitIgnoreSpec.from_lines(lines)
    except OSError:
        return None  # an unreadable folder: listing it fails next, and says so
    except ValueError as e:
        report.warnings.append(f"{path}: ignored ({e})")
        return None


def walk(root: Path, report: WalkReport, follow_symlinks: bool = False) -> Iterator[Found]:
    """Files under `root` (a resolved directory), in a stable order."""
    root_stat = root.stat()
    seen_dirs = {(root_stat.st_dev, root_stat.st_ino)}
    stack: list[tuple[Path, list[tuple[Path, object]]]] = [(root, [])]
    while stack:
        directory, specs = stack.pop()
        spec = _ignore_spec(directory, report)
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
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()  # follows symlinks
                st = entry.stat()
            except OSError:
                report.warnings.append(f"{path}: broken symlink or unreadable entry, skipped")
                continue
            if _ignored(path, is_dir, specs):
                continue
            if entry.is_symlink() and not follow_symlinks and not _inside(path, root):
                report.outside_links.append(path)
                continue
            if is_dir:
                if (st.st_dev, st.st_ino) in seen_dirs:  # a symlink loop, or a second way into one folder
                    continue
                seen_dirs.add((st.st_dev, st.st_ino))
                subdirs.append((path, specs))
            elif entry.is_file() and (kind := kind_of(path)):
                yield Found(path, kind, st)
        stack.extend(reversed(subdirs))


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
