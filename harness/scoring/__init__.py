"""Official scoring rules of benchmarks not covered by VLMEvalKit (stdlib only)."""
