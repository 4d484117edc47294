"""Reference harness for latent and multimodal chain-of-thought reasoning in VLMs."""
__version__ = "0.1.0"
