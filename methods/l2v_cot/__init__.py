"""L2V-CoT: transfer of an LLM's CoT direction into a VLM (see README.md)."""
