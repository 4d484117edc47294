"""Training infrastructure shared by the trainable methods: ``harness train --method M ...``.

- :mod:`harness.train.loop`: the whole training loop in one file (HF ``accelerate``: one CPU, one
  GPU, or ``accelerate launch`` / DeepSpeed across GPUs).
- :mod:`harness.api.recipe`: :class:`TrainConfig` (the loop's settings, as data), ``Schedule`` and the
  ``TRAINERS`` registry; a method plugs in a ``Recipe`` (model, parameter groups and frozen parts,
  stages, batches, named losses, what a checkpoint holds).
- :mod:`harness.latent.adapters` / :mod:`harness.latent.checkpoint`: LoRA and new tokens, and the
  safetensors checkpoints (shared with inference, which never imports this package).
- :mod:`harness.data.training`: the built-in training data readers (M3CoT train split, ScienceQA's
  original release), registered in :data:`harness.data.readers.READERS`.

May import ``harness.api``, ``harness.backbones``, ``harness.latent`` and ``harness.data``; a method's
recipe comes through ``TRAINERS``, never by import. ``vlmeval`` is never imported on these paths
(importing it switches autograd off for the process; its one guard is
``harness.benchmarks.vlmeval_common.import_vlmeval``).
"""
