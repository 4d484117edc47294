"""IVT-LR: interleaved vision-text latent reasoning (see README.md). Importing registers ``ivt-lr``."""
from . import method  # noqa: F401  (registration side effect)
