"""The config file, `$XDG_CONFIG_HOME/kb/config.toml` (else ~/.config/kb/config.toml; `KB_CONFIG`
names another): the default store, named stores, and defaults for any command's flags. Every flag
and environment variable overrides it (click's order: command line, environment, this file, kb's
own default), and `kb status` says where the store came from.

    store = "work"                  # the default store: a name below, or a folder
    [stores]
    home = "~/kb/home"
    [stores.work]                   # a store with the collections `kb index` keeps in it
    path = "~/kb/work"
    collections = { notes = "~/notes", ops = { path = "~/runbooks", include = ["*.md"] } }
    [query]                         # a command's flags by their long names
    k = 5
    [ask]
    model = "qwen2.5-coder-1.5b"
    ["models install"]              # a subcommand: its command line, quoted
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from kb.errors import UsageError


@dataclass(frozen=True)
class Config:
    file: Path | None = None  # the file read, or None where there is none
    store: str | None = None
    stores: dict[str, str] = field(default_factory=dict)
    flags: dict[str, dict] = field(default_factory=dict)  # "query" -> {"k": 5}
    # store name -> its collections: [{"name", "path", "include", "exclude", "context"}]
    collections: dict[str, list[dict]] = field(default_factory=dict)


def location() -> Path:
    if os.environ.get("KB_CONFIG"):
        return Path(os.environ["KB_CONFIG"]).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "kb" / "config.toml"


def load() -> Config:
    """The config file's settings (an empty Config without one); UsageError for one kb cannot read."""
    import tomllib

    path = location()
    if not os.path.exists(path):  # also where a folder on the way cannot be searched (another user's home)
        return Config()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"config file {path}: {e}") from None
    stores, collections = _stores(raw.pop("stores", {}), path)
    store = raw.pop("store", None)
    if store is not None and not isinstance(store, str):
        raise UsageError(f"config file {path}: store is a name or a folder")
    flags = {}
    for command, table in raw.items():
        if not isinstance(table, dict):
            raise UsageError(f"config file {path}: {command} = ... is no setting; flag defaults go in [{command}]")
        flags[command] = {k.replace("-", "_"): v for k, v in table.items()}
    return Config(path, store, stores, flags, collections)


def _stores(raw, path: Path) -> tuple[dict[str, str], dict[str, list[dict]]]:
    """[stores]: name = "folder", or name = {path = "folder", collections = {cname = "folder" or
    {path, include, exclude, context}}}."""
    bad = UsageError(f"config file {path}: [stores] maps names to folders, or to {{path, collections}}")
    if not isinstance(raw, dict):
        raise bad
    stores, collections = {}, {}
    for name, value in raw.items():
        if isinstance(value, str):
            stores[name] = value
            continue
        if not isinstance(value, dict) or not isinstance(value.get("path"), str):
            raise bad
        stores[name] = value["path"]
        collections[name] = [_collection(cname, c, path) for cname, c in (value.get("collections") or {}).items()]
    return stores, collections


def _collection(name: str, c, path: Path) -> dict:
    c = {"path": c} if isinstance(c, str) else c
    if not isinstance(c, dict) or not isinstance(c.get("path"), str) or set(c) - {"path", "include", "exclude", "context"}:
        raise UsageError(f"config file {path}: collection {name!r} is a folder, or {{path, include, exclude, context}}")
    return {"name": name, "path": os.path.expanduser(c["path"]), "include": tuple(c.get("include", ())),
            "exclude": tuple(c.get("exclude", ())), "context": c.get("context")}


def declared(cfg: Config, db: Path | None) -> list[dict]:
    """The collections the config file declares for the store `db` (None: its default store)."""
    if db is None:
        return cfg.collections.get(cfg.store or "", [])
    where = os.path.realpath(os.path.expanduser(str(db)))
    return next((cfg.collections.get(n, []) for n, p in cfg.stores.items()
                 if os.path.realpath(os.path.expanduser(p)) == where), [])


def store_path(cfg: Config, name: str) -> str:
    """A store's folder: a configured name's, else `name` itself as a folder."""
    return os.path.expanduser(cfg.stores.get(name, name))


def default_map(cfg: Config, root) -> dict:
    """click's default_map for the command tree `root`: each command's flags from the file, and
    `--db` from `store`. Flags the file names that a command does not have are a UsageError."""
    out: dict = {}
    for path, command in _commands(root):
        params = {p.name for p in command.params}
        given = cfg.flags.get(" ".join(path), {})
        unknown = sorted(set(given) - params)
        if unknown:
            raise UsageError(f"config file {cfg.file}: [{' '.join(path)}] has {unknown[0]!r}, "
                             f"which is no option of kb {' '.join(path)}")
        values = dict(given)
        if "db" in params and cfg.store and "db" not in values:
            values["db"] = store_path(cfg, cfg.store)
        elif "db" in values:
            values["db"] = store_path(cfg, str(values["db"]))
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node.setdefault(path[-1], {}).update(values)
    stray = sorted(set(cfg.flags) - {" ".join(p) for p, _ in _commands(root)})
    if stray:
        raise UsageError(f"config file {cfg.file}: [{stray[0]}] is no kb command")
    return out


def _commands(group, path=()):
    for name, command in getattr(group, "commands", {}).items():
        yield (*path, name), command
        yield from _commands(command, (*path, name))
