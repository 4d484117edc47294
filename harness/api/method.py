"""The method interface: a method answers a batch of queries with one backbone.

A method is a class with an ``Options`` dataclass (its whole configuration, stored with every run)
and a ``run(backbone, queries)`` that returns one :class:`MethodOutput` per query. Register it with
``@register_method("name")`` and declare the module in the entry-point group ``harness.methods``
(built-in methods do it in this project's pyproject.toml, exactly as a third-party package would).

Methods speak only to the backbone interface (``harness.backbones.Backbone``): they never ask
which model family they run on.
"""
from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

from harness.api.registry import Registry
from harness.api.types import MethodOutput, Query

if TYPE_CHECKING:  # for readers and type checkers only: api imports nothing above it at run time
    from harness.backbones import Backbone


class Method(ABC):
    name: ClassVar[str]
    description: ClassVar[str] = ""
    # False for methods whose per-sample control flow cannot share a padded batch.
    supports_batching: ClassVar[bool] = True

    @dataclasses.dataclass
    class Options:
        max_new_tokens: int = 512

    def __init__(self, **options):
        known = {f.name for f in dataclasses.fields(self.Options)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(
                f"method {self.name!r} has no option {', '.join(unknown)}; its options are: {', '.join(sorted(known))}"
            )
        self.options = self.Options(**options)
        if getattr(self.options, "max_new_tokens", 1) < 1:  # checked before any model loads
            raise ValueError(f"--max-new-tokens must be at least 1, got {self.options.max_new_tokens}")

    def config(self) -> dict:
        """The full configuration, as stored with a run (and compared when a run is resumed)."""
        return {"method": self.name, **dataclasses.asdict(self.options)}

    def backbone_options(self) -> dict:
        """Options the backbone must be loaded with for this method (e.g. ``{"positions": "1d"}``).

        Family-neutral by construction: every backbone accepts them (see ``Backbone.__init__``).
        """
        return {}

    def prepare(self, backbone: "Backbone") -> None:
        """Called once after the backbone is loaded, before any query: load checkpoints or vectors,
        attach adapters or hooks. Raise ``ValueError`` with a one-line message on bad files."""

    @abstractmethod
    def run(self, backbone: "Backbone", queries: list[Query]) -> list[MethodOutput]: ...

    def __call__(self, backbone: "Backbone", queries: list[Query]) -> list[MethodOutput]:
        """Run and attribute the batch's wall time evenly to its samples."""
        start = time.perf_counter()
        outputs = self.run(backbone, queries)
        per_sample = (time.perf_counter() - start) / max(len(queries), 1)
        for output in outputs:
            output.seconds = per_sample
        return outputs


METHODS: Registry[type[Method]] = Registry("method", "harness.methods")
register_method = METHODS.register


def coerce_options(method_cls: type[Method], raw: dict[str, str]) -> dict:
    """Turn ``--opt key=value`` strings into the types the method's Options declare."""
    fields = {f.name: f for f in dataclasses.fields(method_cls.Options)}
    out = {}
    for key, value in raw.items():
        if key not in fields:
            raise ValueError(
                f"method {method_cls.name!r} has no option {key!r}; its options are: {', '.join(sorted(fields))}"
            )
        default = fields[key].default
        kind = type(default) if default is not dataclasses.MISSING and default is not None else str
        if kind is bool:
            out[key] = value.lower() in {"1", "true", "yes", "on"}
        else:
            try:
                out[key] = kind(value)
            except ValueError:
                raise ValueError(f"option {key}={value!r}: expected a {kind.__name__}") from None
    return out
