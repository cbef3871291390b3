"""One generic registry for backbones, losses and datasets, with entry-point plugins loaded lazily."""

from __future__ import annotations

import difflib
import fnmatch
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from bench.errors import UserError

T = TypeVar("T")


class PluginWarning(UserWarning):
    """A plugin problem the harness works around (a package that fails to import, a type hint it cannot resolve)."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: Callable[..., T]
    source: str  # "builtin", "plugin <distribution>", "timm", ...


@dataclass(frozen=True)
class Prefix(Generic[T]):
    """A namespace like `timm/<model>`: names are resolved and listed by another library."""

    factory: Callable[[str], Callable[..., T]]  # name after the prefix -> factory; raises UserError if unknown
    lister: Callable[[str], list[str]]  # fnmatch pattern (after the prefix) -> names
    source: str


class Registry(Generic[T]):
    def __init__(self, family: str, group: str):
        self.family = family  # "backbone", "loss", "dataset": used in messages and `bench ls <family>s`
        self.group = group  # entry-point group for third-party plugins
        self._entries: dict[str, Entry[T]] = {}
        self._prefixes: dict[str, Prefix[T]] = {}
        self._broken: dict[str, str] = {}  # entry-point name -> why it failed to import (raised only if requested)
        self._plugins_loaded = False

    def register(self, name: str, *, source: str = "builtin") -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            self.add(name, factory, source=source)
            return factory

        return decorator

    def add(self, name: str, factory: Callable[..., T], *, source: str = "builtin") -> None:
        if name in self._entries:
            raise ValueError(
                f"{self.family} {name!r} is already registered (from {self._entries[name].source}); "
                f"a second registration from {source} would silently replace it — rename one of them"
            )
        if "/" in name and name.split("/", 1)[0] in self._prefixes:
            raise ValueError(f"{self.family} {name!r} collides with the {name.split('/', 1)[0]}/ namespace")
        self._entries[name] = Entry(name, factory, source)

    def add_prefix(self, prefix: str, prefix_entry: Prefix[T]) -> None:
        if prefix in self._prefixes:
            raise ValueError(f"{self.family} namespace {prefix!r}/ is already registered")
        self._prefixes[prefix] = prefix_entry

    def _load_plugins(self) -> None:
        # Lazily, on first lookup: importing every installed plugin at import time would make
        # `import bench` as slow (and as fragile) as the slowest plugin.
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.group):
            dist = ep.dist.name if ep.dist is not None else "unknown distribution"
            try:
                factory = ep.load()
            except Exception as exc:  # one broken package must not hide the other plugins, nor look like a harness bug
                why = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
                self._broken[ep.name] = (
                    f"{self.family} {ep.name!r} comes from plugin {dist} (entry point {ep.name} = {ep.value!r}), which "
                    f"failed to import: {why} — fix that package or uninstall it (pip uninstall {dist})"
                )
                warnings.warn(f"skipping {self.family} plugin {ep.name!r} from {dist}, which failed to import: {why}", PluginWarning, stacklevel=2)
                continue
            self.add(ep.name, factory, source=f"plugin {dist}")

    def get(self, name: str) -> Entry[T]:
        self._load_plugins()
        if name in self._entries:
            return self._entries[name]
        prefix, _, rest = name.partition("/")
        if rest and prefix in self._prefixes:
            p = self._prefixes[prefix]
            return Entry(name, p.factory(rest), p.source)
        if name in self._broken:
            raise UserError(self._broken[name])
        close = difflib.get_close_matches(name, list(self._entries), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UserError(f"unknown {self.family} {name!r}: {hint}run `bench ls {self.family}s` to see the names")

    def __contains__(self, name: str) -> bool:
        try:
            self.get(name)
        except UserError:
            return False
        return True

    def list(self, pattern: str = "*") -> list[tuple[str, str]]:
        """(name, source) for names matching an fnmatch pattern; `timm/res*` lists into a namespace."""
        self._load_plugins()
        found = [(n, e.source) for n, e in sorted(self._entries.items()) if fnmatch.fnmatchcase(n, pattern)]
        head, slash, tail = pattern.partition("/")
        for prefix, p in sorted(self._prefixes.items()):
            if slash and fnmatch.fnmatchcase(prefix, head):
                found += [(f"{prefix}/{n}", p.source) for n in p.lister(tail)]
            elif not slash and fnmatch.fnmatchcase(f"{prefix}/", pattern):
                found.append((f"{prefix}/<name>", f"{p.source} (list with `{prefix}/*`)"))
        return found

    def __iter__(self) -> Iterator[str]:
        self._load_plugins()
        return iter(sorted(self._entries))
