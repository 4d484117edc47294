"""Built-in benchmarks, one module each; pyproject.toml declares every module in the entry-point group
``harness.benchmarks`` (a module registers its class on import and keeps heavy imports inside functions)."""
