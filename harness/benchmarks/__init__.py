"""Built-in benchmarks; importing this package registers them (modules stay free of heavy imports)."""
from . import m3cot, mmstar, pending  # noqa: F401  (registration side effects)
