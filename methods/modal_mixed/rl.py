"""``--stage rl``: GRPO on the SFT policy's text and control tokens (DeepSeekMath's GRPO, :mod:`.grpo`).

Per batch of questions (each repeated G = ``--group-size`` times):

1. rollouts, no gradient: the policy decodes with sampling (``--rl-temperature``) and the sketch writer
   (the head, frozen, samples every sketch: the sketches are part of the environment, not actions);
2. reward = the benchmark's own rule on the final answer (easy-VQA's answer word; Zebra-CoT: the
   normalised final answer) + ``--format-reward`` when the text says "The answer is";
3. the rollout is rebuilt as a teacher-forced sequence (tokens, and the recorded sketch vectors at
   their slots) and scored twice: by the policy (LoRA on, with gradient) and by the reference (the SFT
   model: LoRA off, since the SFT adapter was merged into the weights before this stage's LoRA);
4. loss = :func:`.grpo.grpo_loss` over the sampled tokens (the open token and text; never the sketch
   slots, nor the close token the writer appends). One update per rollout (μ = 1), so old = current
   and the ratio is 1 at the update: the clip is inert, as in TRL's default ``num_iterations=1``.
"""
from __future__ import annotations

import logging
import re

import torch
from torch import nn

from harness.latent.decode import Sampling, decode

from .grpo import group_advantages, grpo_loss
from .policy import SketchWriter

log = logging.getLogger("harness")
_ANSWER_IS = re.compile(r"answer is", re.IGNORECASE)


def rollout_sequence(decoded: list[list[int]], sketches: list[list[torch.Tensor]], n_sketch: int, open_id: int,
                     close_id: int, stops: set[int], pad: int, width: int):
    """The rollouts as teacher-forced targets: (ids [N, L], mask, sketch slots, sketch values [N, L, D],
    actions: the sampled tokens, up to and including a stop token). Each open token was followed by
    ``n_sketch`` written vectors (in ``sketches``, in order) and the close token."""
    rows = []
    for ids, vectors in zip(decoded, sketches):
        row, k = [], 0  # (id, is_slot, value, is_action)
        for token in ids:
            row.append((token, False, None, True))
            if token in stops:
                break
            if token == open_id:
                row += [(pad, True, v, False) for v in vectors[k:k + n_sketch]]
                row.append((close_id, False, None, False))
                k += n_sketch
        rows.append(row)
    length = max(len(r) for r in rows)
    n = len(rows)
    ids = torch.full((n, length), pad, dtype=torch.long)
    mask = torch.zeros((n, length), dtype=torch.long)
    slots = torch.zeros((n, length), dtype=torch.bool)
    actions = torch.zeros((n, length), dtype=torch.bool)
    values = torch.zeros(n, length, width)
    for i, row in enumerate(rows):
        for j, (token, slot, value, action) in enumerate(row):
            ids[i, j], mask[i, j], slots[i, j], actions[i, j] = token, 1, slot, action
            if value is not None:
                values[i, j] = value.float().cpu()
    return ids, mask, slots, values, actions


class GRPOModel(nn.Module):
    def __init__(self, backbone, peft_model, head, standardizer, token_ids, *, group_size: int, temperature: float,
                 max_new_tokens: int, sampler_steps: int, sketch_tokens: int, clip_eps: float, beta: float,
                 format_reward: float, grade):
        super().__init__()
        self.model = backbone.model
        self.backbone, self.peft = backbone, peft_model
        self.head, self.standardizer = head, standardizer  # frozen: the environment's sketcher
        self.token_ids = token_ids
        self.group_size, self.temperature, self.max_new_tokens = group_size, temperature, max_new_tokens
        self.sampler_steps, self.sketch_tokens = sampler_steps, sketch_tokens
        self.clip_eps, self.beta, self.format_reward = clip_eps, beta, format_reward
        self.grade = grade
        self.calls = 0
        self.rewards: list[float] = []  # mean reward per update (logged)

    def reward(self, text: str, gold: str) -> float:
        from ..baselines import final_answer_segment

        return float(self.grade(final_answer_segment(text), gold)) + self.format_reward * bool(_ANSWER_IS.search(text))

    def rollouts(self, inputs, prompts):
        backbone = self.backbone
        with torch.no_grad():
            state, _ = backbone.prefill(inputs)
            keys = [f"{p}#{self.calls}#{i}" for i, p in enumerate(prompts)]  # each rollout its own sketch noise
            writer = None
            if self.head is not None:
                writer = SketchWriter(backbone, self.head, self.standardizer, self.sketch_tokens, self.token_ids[1],
                                      keys, sampler_steps=self.sampler_steps)
            sampling = Sampling(temperature=self.temperature, seed=self.calls)
            decoded = decode(backbone, state, self.max_new_tokens, sampling=sampling,
                             switch_token=self.token_ids[0] if writer else None, on_switch=writer)
        return decoded, (writer.tokens if writer else [[] for _ in prompts])

    def token_logp(self, inputs, ids, mask, slots, values, grad: bool) -> torch.Tensor:
        backbone = self.backbone
        with torch.set_grad_enabled(grad):
            state, _ = backbone.prefill(inputs, grad=grad)
            first = state.logits
            embeds = backbone.embed_tokens(ids)
            embeds = torch.where(slots[..., None], values.to(embeds.dtype), embeds)
            result = backbone.append(state, embeds, mask=mask, grad=grad)
            logits = torch.cat([first[:, None], result.logits[:, :-1]], dim=1).float() / self.temperature
            return logits.log_softmax(-1).gather(-1, ids[..., None])[..., 0]

    def forward(self, inputs, prompts, golds):
        backbone = self.backbone
        self.calls += 1
        decoded, sketches = self.rollouts(inputs, prompts)
        texts = [backbone.finish(ids, 0).text for ids in decoded]
        rewards = torch.tensor([self.reward(t, g) for t, g in zip(texts, golds)])
        self.rewards.append(float(rewards.mean()))
        advantages = group_advantages(rewards, self.group_size).to(backbone.device)
        stops = {*backbone.eos_token_ids}
        ids, mask, slots, values, actions = rollout_sequence(decoded, sketches, self.sketch_tokens, *self.token_ids, stops,
                                                             backbone.pad_token_id, backbone.hidden_size)
        device = backbone.device
        ids, mask, slots, values, actions = (x.to(device) for x in (ids, mask, slots, values, actions))
        logp = self.token_logp(inputs, ids, mask, slots, values, grad=True)
        with self.peft.disable_adapter():
            ref = self.token_logp(inputs, ids, mask, slots, values, grad=False)
        loss, stats = grpo_loss(logp, logp.detach(), ref, advantages, actions.float(), clip_eps=self.clip_eps,
                                beta=self.beta)
        if self.calls % 10 == 0:
            recent = self.rewards[-10:]
            log.info("grpo step %d: mean reward %.3f over the last %d updates, KL %.4f", self.calls,
                     sum(recent) / len(recent), len(recent), float(stats["kl"]))
        return {"grpo": loss}
