"""What every latent chain-of-thought method needs, so that a new one is a *policy* plus a *recipe*.

Owns:

- :mod:`.loop`: the latent loop driver (prefill, then per step the policy's next chunk of embeddings
  appended through the backbone's KV cache, or recomputed from position 0 as a reference) and its
  trace; the :class:`~harness.latent.loop.LatentPolicy` interface.
- :mod:`.select`: selection over attention (top-k positions, a w×w sliding window over a visual grid).
- :mod:`.decode`: decoding from a loop's state (greedy or seeded sampling, stop tokens, and a switch
  hook that hands control to a callback on a control token: modal-mixed CoT).
- :mod:`.train`: the multi-step training forward (latent loop + target tokens → named losses).
- :mod:`.adapters`, :mod:`.checkpoint`: LoRA / new-token adapters and their safetensors checkpoints,
  used by inference and training alike (so inference never imports :mod:`harness.train`).

May import :mod:`harness.api` and :mod:`harness.backbones` only; never ``methods``, :mod:`harness.run`,
:mod:`harness.train` or :mod:`harness.commands`. See README.md beside this file for how a method plugs in.

Nothing is imported here: the submodules import torch, and ``harness --help`` paths must not.
"""
