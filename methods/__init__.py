"""The built-in reasoning methods. Each registers itself with ``harness.api.register_method`` and is
declared in pyproject.toml's entry-point group ``harness.methods``, as a third-party method would be."""
