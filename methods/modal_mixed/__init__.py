"""Modal-mixed CoT: text interleaved with latent visual sketches from a diffusion head."""
