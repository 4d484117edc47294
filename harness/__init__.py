"""Reference harness for latent and multimodal chain-of-thought reasoning in VLMs.

Data flows one way: ``cli → commands → run → method → latent/backbone → model``. Each sub-package
opens with what it owns and what it may import; ``tests/test_architecture.py`` checks the rules:

- ``api``: the interfaces and registries (stdlib only);
- ``backbones``: VLMs (and the causal-LM text side) behind one interface; ``latent``: the machinery
  latent methods share (loop driver, selection, decoder, adapters);
- ``benchmarks``, ``scoring``, ``data``: benchmark data, official rules, data preparation;
- ``run``: plan, runner, store, metrics, reports, the LLM judge; ``train``: the one training loop;
  ``analysis``: paired statistics over stored runs;
- ``integrations``: the VLMEvalKit adapter; ``testing``: fixtures and conformance cases;
- ``commands`` and ``cli``: the command line.

Methods (``methods/`` or any installed package) plug in through entry points; nothing here imports
them by name.
"""
__version__ = "0.1.0"
