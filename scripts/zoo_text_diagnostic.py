#!/usr/bin/env python
"""Is the zoo's language model, not its vision side, what holds easy-VQA's yes/no questions back?

The zoo's VLMs answer colour and shape questions well but yes/no questions ("is there not a red
shape?") only at about the image-blind level. This trains the zoo recipe's language model alone (a
Qwen2 of the same size, from scratch, the same optimiser and schedule as ``harness zoo build``'s stage
2) with the image given as TEXT — "the image shows a red circle . is there not a blue shape ? answer :"
→ "yes" — and prints the test accuracy per question type every 100 steps, yes/no split into plain and
negated questions naming a colour or a shape. If the text-only model is stuck too, the bottleneck is learning the comparison, not
seeing the image. It measures and prints; nothing is saved.

    .venv/bin/python scripts/zoo_text_diagnostic.py [--steps 700] [--hidden 128 --layers 3] [--lr 1.5e-3]
        [--balanced-matches | --match-share S] [--plain-first N] [--plain-share S] [--balanced-first N]
        [--plain-hit-share S] [--aux-share S] [--match-words S] [--heads 4] [--tied-query-key]
        [--balanced-loss] [--init-std 0.02] [--seed 0] [--threads 1]

--balanced-matches draws yes/no questions whose named attribute is the image's as often as the others
(in the data: 5,149 of 28,407; --match-share S for another share); --plain-first N draws only non-negated yes/no questions for the first N
steps (a curriculum); --plain-share S draws that share of yes/no questions from the plain ones;
--balanced-first N draws only plain ones, half of them matches, for N steps; --plain-hit-share S keeps
half the yes/no draws plain, S of them matches, throughout; --aux-share S turns that share of yes/no
draws into the zoo build's two auxiliary formats (the text ending "named :" → the attribute word the
question names, "shown :" → the image's value of it); --match-words S turns that share into image-word
matching (the text, then one word → "yes" if the image shows it; half of them words it shows).
--tied-query-key gives every query head its own key head, initialised equal; --balanced-loss weighs the
yes/no examples whose named value is the image's as much as the others.
`--match-words 0.3 --steps 1000` learned every yes/no kind in two variants, only some kinds with this script
(README). Each attribute's comparison appears suddenly, at a step that depends on the run, and rarely both
within one run: `--steps 1000` learns colour (from step 800), not shape; `--lr 7e-4` shape (by 500), not colour;
`--steps 3000` shape (negated ones by 2,000), not colour; `--balanced-loss` neither, and loses the negation
(README). `--init-std 0.1` learns both within 700 steps (shape by 400, colour by 700).
"""
from __future__ import annotations

import argparse
import math
import re

import numpy as np
import torch
import torch.nn.functional as F

WORD = re.compile(r"[a-z]+|[?.]")


def rows(split: str) -> list[tuple]:
    from harness.api import BENCHMARKS

    bench = BENCHMARKS.get("easyvqa")(split=split)
    return [(s.meta["shape"], s.meta["colour"], s.question, s.gold, s.category)
            for s in (bench.sample(i) for i in range(len(bench)))]


def negated(row) -> bool:
    return bool({"not", "no"} & set(WORD.findall(row[2])))


def names_colour(row) -> bool:
    from harness.benchmarks.easyvqa import COLOURS

    return bool(set(COLOURS) & set(WORD.findall(row[2])))


def matches(row) -> bool:
    from harness.benchmarks.easyvqa import COLOURS, SHAPES

    named = next(w for w in WORD.findall(row[2]) if w in SHAPES or w in COLOURS)
    return named in (row[0], row[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--batch-size", type=int, default=48)
    ap.add_argument("--balanced-matches", action="store_true", help="= --match-share 0.5")
    ap.add_argument("--match-share", type=float, default=0.0,
                    help="share of yes/no draws whose named attribute is the image's (0: as in the data, 18 %%)")
    ap.add_argument("--plain-first", type=int, default=0)
    ap.add_argument("--plain-share", type=float, default=0.0,
                    help="share of yes/no draws that are not negated (0: as in the data, about half)")
    ap.add_argument("--balanced-first", type=int, default=0,
                    help="draw yes/no questions for the first N steps only from plain ones, half of them matches")
    ap.add_argument("--plain-hit-share", type=float, default=0.0,
                    help="throughout: half the yes/no draws plain, this share of them matches; negated ones as in the data")
    ap.add_argument("--aux-share", type=float, default=0.0,
                    help="share of yes/no draws turned into an auxiliary: the same text ending 'named :' → the "
                         "attribute the question names, or 'shown :' → the image's value of that attribute")
    ap.add_argument("--match-words", type=float, default=0.0,
                    help="share of yes/no draws turned into image-word matching (the zoo build's 'match' format): "
                         "the image's text, then one shape or colour word → yes if the image shows it, half of "
                         "these a word it shows")
    ap.add_argument("--heads", type=int, default=4, help="attention heads (key/value heads: half as many)")
    ap.add_argument("--tied-query-key", action="store_true",
                    help="one key/value head per query head, each key projection initialised equal to its query "
                         "projection: a head scores a token against copies of itself from the start")
    ap.add_argument("--init-std", type=float, default=0.02,
                    help="standard deviation of the initial weights (the library's default: 0.02)")
    ap.add_argument("--balanced-loss", action="store_true",
                    help="weight the yes/no examples' loss so that, per attribute (shape / colour), those whose "
                         "named value is the image's weigh as much as the others")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    train, test = rows("train"), rows("test")
    from harness.benchmarks.easyvqa import COLOURS, SHAPES

    match_vocabulary = sorted(SHAPES) + sorted(COLOURS)

    def text(row) -> str:
        if row[4] == "match":
            return f"the image shows a {row[1]} {row[0]} . {row[2]}"
        return f"the image shows a {row[1]} {row[0]} . {row[2]} {row[5] if len(row) > 5 else 'answer'} :"

    def auxiliary(row, kind: str) -> tuple:
        from harness.benchmarks.easyvqa import COLOURS

        named = next(w for w in WORD.findall(row[2]) if w in COLOURS or w in ("circle", "rectangle", "triangle"))
        target = named if kind == "named" else (row[1] if named in COLOURS else row[0])
        return (*row[:3], target, "aux", kind)

    vocab = {"<pad>": 0, "<s>": 1}
    for row in train + test:
        for word in WORD.findall(text(row) + " " + row[3] + " named shown"):
            vocab.setdefault(word, len(vocab))
    config = Qwen2Config(vocab_size=len(vocab), hidden_size=args.hidden, intermediate_size=3 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=args.heads,
                         num_key_value_heads=args.heads if args.tied_query_key else max(1, args.heads // 2),
                         max_position_embeddings=128, tie_word_embeddings=False, initializer_range=args.init_std)
    model = Qwen2ForCausalLM(config)
    if args.tied_query_key:  # why: a same-token detector exists at initialisation, the comparison need not be found
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.k_proj.weight.copy_(layer.self_attn.q_proj.weight)
    by_type: dict[str, list[int]] = {}
    for i, row in enumerate(train):
        by_type.setdefault(row[4], []).append(i)
    yes_no = by_type["yes/no"]
    hit = [i for i in yes_no if matches(train[i])]
    miss = [i for i in yes_no if not matches(train[i])]
    if args.balanced_matches:
        args.match_share = 0.5
    if args.match_share:  # hits repeated until they are about this share of the yes/no draws
        repeat = max(1, round(args.match_share * len(miss) / ((1 - args.match_share) * len(hit))))
        by_type["yes/no"] = miss + hit * repeat  # whole repeats: the share reached is printed below
    share = sum(matches(train[i]) for i in by_type["yes/no"]) / len(by_type["yes/no"])
    plain = [i for i in by_type["yes/no"] if not negated(train[i])]
    negative = [i for i in by_type["yes/no"] if negated(train[i])]
    plain_hit = [i for i in yes_no if matches(train[i]) and not negated(train[i])]
    plain_miss = [i for i in yes_no if not matches(train[i]) and not negated(train[i])]
    kinds, weights = ["yes/no", "shape", "colour"], [0.45, 0.30, 0.25]  # the zoo recipe's type weights
    rng = np.random.default_rng(args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)

    def lr_at(step: int) -> float:  # the zoo's warmup 100 + cosine to 1e-4
        if step < 100:
            return args.lr * (step + 1) / 100
        return 1e-4 + 0.5 * (args.lr - 1e-4) * (1 + math.cos(math.pi * (step - 100) / max(args.steps - 100, 1)))

    def batch(chosen: list[tuple]):
        encoded = [[1] + [vocab[w] for w in WORD.findall(text(row))] for row in chosen]
        width = max(map(len, encoded))
        ids = torch.zeros(len(encoded), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, x in enumerate(encoded):  # left padding: the answer is read at the last position
            ids[b, width - len(x):] = torch.tensor(x)
            mask[b, width - len(x):] = 1
        return ids, mask

    def evaluate() -> dict:
        model.eval()
        right: dict[str, list[int]] = {}
        with torch.no_grad():
            for start in range(0, len(test), 512):
                chosen = test[start:start + 512]
                ids, mask = batch(chosen)
                predicted = model(input_ids=ids, attention_mask=mask).logits[:, -1].argmax(-1).tolist()
                for row, p in zip(chosen, predicted):
                    key = row[4] if row[4] != "yes/no" else (
                        f"yes/no {'negated' if negated(row) else 'plain'} {'colour' if names_colour(row) else 'shape'}")
                    right.setdefault(key, []).append(int(p == vocab[row[3]]))
        model.train()
        return {k: f"{100 * sum(v) / len(v):.1f}" for k, v in sorted(right.items())}

    print(f"text-only LM {args.layers}x{args.hidden}, {sum(p.numel() for p in model.parameters()):,} parameters; "
          f"matches are {100 * share:.1f} % of the yes/no draws")
    model.train()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        chosen = []
        for k in rng.choice(3, size=args.batch_size, p=weights):
            pool = plain if kinds[k] == "yes/no" and step < args.plain_first else by_type[kinds[k]]
            if kinds[k] == "yes/no" and args.plain_hit_share:
                pool = (negative if rng.random() < 0.5 else
                        plain_hit if rng.random() < args.plain_hit_share else plain_miss)
            elif kinds[k] == "yes/no" and step < args.balanced_first:
                pool = plain_hit if rng.random() < 0.5 else plain_miss
            elif kinds[k] == "yes/no" and args.plain_share and step >= args.plain_first:
                pool = plain if rng.random() < args.plain_share else negative
            row = train[pool[rng.integers(len(pool))]]
            if kinds[k] == "yes/no" and args.match_words and rng.random() < args.match_words:
                shown = [row[0], row[1]]
                if rng.random() < 0.5:
                    word = shown[int(rng.integers(2))]
                else:
                    others = [w for w in match_vocabulary if w not in shown]
                    word = others[int(rng.integers(len(others)))]
                row = (row[0], row[1], word, "yes" if word in shown else "no", "match")
            elif kinds[k] == "yes/no" and args.aux_share and rng.random() < args.aux_share:
                row = auxiliary(row, "named" if rng.random() < 0.5 else "shown")
            chosen.append(row)
        ids, mask = batch(chosen)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, -1]
        targets = torch.tensor([vocab[row[3]] for row in chosen])
        if args.balanced_loss:  # a named value is the image's 1 time in 8 (colour), 1 in 3 (shape)
            hit_rate = {True: 1 / 8, False: 1 / 3}
            weight = torch.tensor([(0.5 / hit_rate[names_colour(row)] if matches(row) else
                                    0.5 / (1 - hit_rate[names_colour(row)])) if row[4] == "yes/no" else 1.0
                                   for row in chosen])
            loss = (F.cross_entropy(logits, targets, reduction="none") * weight).sum() / weight.sum()
        else:
            loss = F.cross_entropy(logits, targets)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if (step + 1) % 100 == 0:
            print(f"step {step + 1}: loss {loss.item():.3f}, test accuracy % {evaluate()}", flush=True)


if __name__ == "__main__":
    main()
