"""Built-in benchmarks; importing this package registers them (modules stay free of heavy imports)."""
from . import m3cot, mathverse, mathvista, mmbench, mmstar, mmvp, pope, scienceqa  # noqa: F401  (registration)
