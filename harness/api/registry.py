"""A name → class registry filled by a decorator and by package entry points.

Every entry, built-in or third-party, is found the same way: an entry point in the registry's group
(e.g. ``[project.entry-points."harness.methods"]`` in pyproject.toml) pointing at a module that
registers on import, or at the class itself; they load the first time the registry is read. The
framework never names a built-in method or benchmark: this package's own pyproject declares them
exactly as a plugin would. Nothing here imports torch:
registered modules keep heavy imports inside functions so ``harness list`` stays fast.
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownName(KeyError):
    """A name that is not registered; the message lists the valid choices."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class PluginError(ImportError):
    """An entry point that names a module or object that does not import."""


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str):
        self.kind = kind  # "method", "benchmark", ... used in messages
        self.group = group  # entry-point group (pyproject.toml)
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator: ``@METHODS.register("cot")``."""

        def decorate(obj: T) -> T:
            existing = self._entries.get(name)
            if existing is not None and existing is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice ({existing!r} and {obj!r})")
            self._entries[name] = obj
            try:
                obj.name = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return obj

        return decorate

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for ep in sorted(entry_points(group=self.group), key=lambda ep: ep.name):
            try:
                obj = ep.load()  # a module (registers on import) or the class itself
            except ImportError as exc:  # a broken plugin is named, not a traceback
                raise PluginError(f"{self.kind} plugin {ep.name!r} ({ep.value}) does not import: {exc}; "
                                  "reinstall or uninstall the package that declares it") from exc
            if isinstance(obj, type) and ep.name not in self._entries:
                self.register(ep.name)(obj)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return sorted(self._entries.items())

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownName(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries
