"""GRPO's math (Shao et al. 2024, DeepSeekMath, Sec. 4.1): group-relative advantages and the clipped,
KL-regularised policy loss. Pure tensor functions: the trainer supplies the log-probabilities.

Where the paper leaves a choice, ours (and what TRL does):

- the group std is the unbiased one (``torch.std``'s default), as TRL's ``scale_rewards="group"``;
  ε = 1e-4 in the denominator, as TRL;
- the loss is the paper's sequence mean, (1/N) Σ_i (1/|o_i|) Σ_t — TRL's ``loss_type="grpo"``. TRL's
  current default (``"dapo"``) divides by the batch's token count instead, which removes the length bias
  (short completions weigh more per token here); its default β is 0, the paper's 0.04 is ours;
- the KL to the reference is the k3 estimator exp(ref − logp) − (ref − logp) − 1 (unbiased, ≥ 0), as both.
"""
from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """A_i = (r_i − mean_g) / (std_g + eps) over consecutive groups of ``group_size`` samples of one prompt."""
    n = rewards.shape[0]
    if group_size < 1 or n % group_size:
        raise ValueError(f"grpo: {n} rewards do not split into groups of {group_size}")
    grouped = (rewards if rewards.is_floating_point() else rewards.float()).reshape(-1, group_size)
    mean = grouped.mean(dim=1, keepdim=True)
    # unbiased (undefined for a group of one, which the tie rule below zeroes anyway)
    std = grouped.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(mean)
    advantages = (grouped - mean) / (std + eps)
    # A tied group has no signal: exactly 0 (the float mean of equal rewards need not equal them).
    tied = (grouped == grouped[:, :1]).all(dim=1, keepdim=True)
    return torch.where(tied, torch.zeros_like(advantages), advantages).reshape(n)


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, clip_eps: float = 0.2, beta: float = 0.04) -> tuple[torch.Tensor, dict]:
    """−(1/N) Σ_i (1/|m_i|) Σ_t m_it · [min(ρ A_i, clip(ρ, 1±ε) A_i) − β KL_it]; inputs [N, T], advantages [N].

    A sequence with no masked token adds 0 and still counts in N (each sequence weighs 1/N whatever the
    others hold). stats: ``kl`` (mean k3 over masked tokens), ``clip_fraction`` (masked tokens where the
    clipped term is the one the min takes: ρ > 1+ε with A > 0, or ρ < 1−ε with A < 0), ``ratio`` (mean ρ).
    """
    mask = mask.to(logp.dtype)
    adv = advantages.to(logp.dtype)[:, None]
    ratio = torch.exp(logp - old_logp)
    surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    delta = ref_logp - logp
    kl = torch.exp(delta) - delta - 1
    objective = surrogate - beta * kl
    per_sequence = (objective * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)  # empty sequence: 0, not 0/0
    loss = -per_sequence.mean()
    with torch.no_grad():
        tokens = mask.sum().clamp(min=1)
        clipped = ((ratio > 1 + clip_eps) & (adv > 0)) | ((ratio < 1 - clip_eps) & (adv < 0))
        stats = {"kl": (kl * mask).sum() / tokens, "clip_fraction": (clipped * mask).sum() / tokens,
                 "ratio": (ratio * mask).sum() / tokens}
    return loss, stats
