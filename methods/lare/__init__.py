"""LaRe — Latent Refocusing (``methods/lare/README.md`` maps the paper to the code)."""
