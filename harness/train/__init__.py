"""Training infrastructure shared by the trainable methods: ``harness train --method M ...``.

- :mod:`harness.train.loop`: the whole training loop in one file (HF ``accelerate``: one CPU, one
  GPU, or ``accelerate launch`` / DeepSpeed across GPUs), its config as data (:class:`TrainConfig`).
- :mod:`harness.api.recipe`: the ``TRAINERS`` registry; a method plugs in a :class:`Recipe`
  (what the model is, what a batch is, what the loss is, what a checkpoint holds).
- :mod:`harness.train.adapters`: LoRA on the language model only (``peft``), new tokens whose
  embeddings start from an existing token.
- :mod:`harness.train.checkpoint`: safetensors checkpoints (adapter + new embeddings + config json),
  written atomically, and the resume check.
- :mod:`harness.train.data`: training data readers (M3CoT train split, ScienceQA's original release).

Never import ``vlmeval`` on these paths: importing it switches autograd off globally.
"""
