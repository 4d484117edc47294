"""What a zoo model's answer position knows about a yes/no question, layer by layer (linear probes).

For easy-VQA yes/no test questions, takes the hidden state at the last prompt position (the one that
predicts the answer) of the ``direct`` method's prompt, after each decoder layer, and fits a logistic
regression (scikit-learn, first half of the questions) for: the image's colour and shape, the word the
question names, whether it is negated, whether the named value is the image's ("present") and the answer
(yes = present XOR negated). Accuracy on the second half, printed as a table. The labels come from the
benchmark's own ``yes_no_parts``.

    python scripts/zoo_probe.py results/zoo/easyvqa-qwen2vl --questions 3000

Needs scikit-learn (``pip install scikit-learn``). Why it exists: it showed that the committed models'
answer position knows the negation but not the named word (README, the proving ground).
"""
from __future__ import annotations

import argparse
import re
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a zoo model folder (results/zoo/NAME) or any harness model id")
    parser.add_argument("--questions", type=int, default=3000, help="yes/no test questions (default 3000)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        print("zoo_probe needs scikit-learn: pip install scikit-learn", file=sys.stderr)
        return 2
    import numpy as np
    import torch

    from harness.api import BENCHMARKS, METHODS, Query
    from harness.backbones import load_backbone
    from harness.backbones.base import PromptRecorder
    from harness.benchmarks.easyvqa import COLOURS, SHAPES, yes_no_parts

    torch.set_num_threads(args.threads)
    backbone = load_backbone(args.model, device="cpu", dtype="float32")
    bench = BENCHMARKS.get("easyvqa")(split="test")
    samples = [s for s in (bench.sample(p) for p in range(len(bench))) if s.category == "yes/no"][:args.questions]
    queries = [Query(images=[], question=bench.format_question(s)) for s in samples]
    recorder = PromptRecorder([""] * len(queries))
    METHODS.get("direct")().run(recorder, queries)
    prompts = recorder.prompts[0]
    features: dict[int, list] = {}
    labels: dict[str, list] = {k: [] for k in ("image colour", "image shape", "named", "negated", "present", "answer")}
    for start in range(0, len(samples), 64):
        chunk = samples[start:start + 64]
        inputs = backbone.build_inputs([s.images() for s in chunk], prompts[start:start + 64])
        with torch.no_grad():
            hidden = backbone.model(**inputs, output_hidden_states=True).hidden_states
        for layer, h in enumerate(hidden):
            features.setdefault(layer, []).append(h[:, -1].float().numpy())  # left padding: the last is the prompt's
        for s in chunk:
            _, negated, present = yes_no_parts(s.question, s.meta["shape"], s.meta["colour"])
            words = re.findall(r"[a-z]+", s.question.lower())
            for key, value in (("image colour", s.meta["colour"]), ("image shape", s.meta["shape"]),
                               ("named", next(w for w in words if w in SHAPES or w in COLOURS)),
                               ("negated", negated), ("present", present), ("answer", s.meta["answer_word"])):
                labels[key].append(value)
    half = len(samples) // 2
    print(f"linear probes at the answer position, {len(samples) - half} held-out yes/no questions (accuracy %)")
    print("| layer | " + " | ".join(labels) + " |")
    print("|---" * (len(labels) + 1) + "|")
    for layer in sorted(features):
        x = np.concatenate(features[layer])
        row = []
        for key, values in labels.items():
            y = np.array(values)
            probe = LogisticRegression(max_iter=2000).fit(x[:half], y[:half])
            row.append(f"{100 * probe.score(x[half:], y[half:]):.1f}")
        print(f"| {'embeddings' if layer == 0 else layer} | " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
