"""Semantic augmentation (paper Sec. 3.2): symmetric alignment (Eq. 6), image reconstruction by
denoising score matching (Eq. 7) and text-prefix reconstruction (Eq. 8).

- :func:`symmetric_infonce`: InfoNCE over the batch in both directions, cosine similarity / τ.
- :class:`Reconstructor`: diffusers' ``UNet2DConditionModel`` (App. B, Table 7: block channels
  96/192/384/512, 3 layers per block, CrossAttn blocks in the middle, cross-attention dim 768, head
  dim 64, 32 norm groups) predicting the noise that ``DDPMScheduler`` (linear β schedule, 1000 steps)
  added to the image-tokenizer latents of the refocused region, conditioned on the latent tokens Z_t
  (projected to the cross-attention width).
- :class:`ImageTokenizer`: diffusers' ``AutoencoderKL`` (any checkpoint by id or path; the paper uses
  KL-16), frozen; its latent distribution's mean × scaling factor is the target. ``pixels`` (our
  option, the proving ground's: no pretrained VAE is reachable offline) uses the region's pixels in
  [-1, 1] themselves, so the U-Net denoises the crop directly.
- :func:`region_pixels`: the crop of the image under a chosen window.

diffusers is imported only when a Reconstructor or a VAE is built (training), never by ``harness run``.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

PAPER_UNET = {"channels": (96, 192, 384, 512), "layers_per_block": 3, "cross_attention_dim": 768,
              "attention_head_dim": 64, "norm_num_groups": 32}


def symmetric_infonce(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """½ [CE(sim/τ, diag) + CE(simᵀ/τ, diag)], sim = cosine similarity of rows of ``a`` and ``b`` [N, d]."""
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    logits = a @ b.T / tau
    labels = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def block_types(n: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Table 7's layout for any depth: plain outer blocks, cross-attention blocks inside (the mid block
    always cross-attends, so even a 1- or 2-level U-Net is conditioned)."""
    if n >= 3:
        down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 2) + ("DownBlock2D",)
    else:
        down = ("CrossAttnDownBlock2D",) + ("DownBlock2D",) * (n - 1)
    up = tuple(t.replace("Down", "Up") for t in reversed(down))
    return down, up


class Reconstructor(nn.Module):
    """``loss(target [N, C, h, w], cond [N, n, D]) -> MSE(ε̂, ε)`` at a random timestep per sample."""

    def __init__(self, width: int, in_channels: int, sample_size: int, *, channels=PAPER_UNET["channels"],
                 layers_per_block: int = 3, cross_attention_dim: int = 768, attention_head_dim: int = 64,
                 norm_num_groups: int = 32, train_timesteps: int = 1000):
        super().__init__()
        from diffusers import DDPMScheduler, UNet2DConditionModel

        channels = tuple(int(c) for c in channels)
        if any(c % norm_num_groups for c in channels):
            raise ValueError(f"lare: U-Net channels {list(channels)} must be multiples of --unet-norm-groups "
                             f"{norm_num_groups}")
        down, up = block_types(len(channels))
        self.config = {"width": width, "in_channels": in_channels, "sample_size": sample_size,
                       "channels": list(channels), "layers_per_block": layers_per_block,
                       "cross_attention_dim": cross_attention_dim, "attention_head_dim": attention_head_dim,
                       "norm_num_groups": norm_num_groups, "train_timesteps": train_timesteps}
        self.cond = nn.Linear(width, cross_attention_dim)
        self.unet = UNet2DConditionModel(
            sample_size=sample_size, in_channels=in_channels, out_channels=in_channels,
            layers_per_block=layers_per_block, block_out_channels=channels, down_block_types=down,
            up_block_types=up, cross_attention_dim=cross_attention_dim, attention_head_dim=attention_head_dim,
            norm_num_groups=norm_num_groups)
        self.scheduler = DDPMScheduler(num_train_timesteps=train_timesteps, beta_schedule="linear")

    def loss(self, target: torch.Tensor, cond: torch.Tensor, noise: torch.Tensor | None = None,
             timesteps: torch.Tensor | None = None) -> torch.Tensor:
        target = target.to(self.cond.weight.dtype)
        noise = torch.randn_like(target) if noise is None else noise
        if timesteps is None:
            timesteps = torch.randint(0, self.scheduler.config.num_train_timesteps, (target.shape[0],),
                                      device=target.device)
        noisy = self.scheduler.add_noise(target, noise, timesteps)
        predicted = self.unet(noisy, timesteps, encoder_hidden_states=self.cond(cond.to(target.dtype))).sample
        return F.mse_loss(predicted.float(), noise.float())


class ImageTokenizer:
    """Pixels [N, 3, S, S] in [-1, 1] → the diffusion target. Frozen; not part of any checkpoint
    (recorded by name: ``pixels`` or the VAE's id / path)."""

    def __init__(self, name: str, device):
        self.name = name
        self.vae = None
        if name != "pixels":
            from diffusers import AutoencoderKL

            try:
                self.vae = AutoencoderKL.from_pretrained(name).to(device).eval().requires_grad_(False)
            except (OSError, ValueError) as exc:
                raise ValueError(f"lare: --vae {name!r} is no diffusers AutoencoderKL id or folder ({exc}); pass "
                                 "one (the paper: a KL-16 VAE), or --vae pixels") from None

    def channels_and_factor(self) -> tuple[int, int]:
        if self.vae is None:
            return 3, 1
        config = self.vae.config
        return int(config.latent_channels), 2 ** (len(config.block_out_channels) - 1)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            return pixels
        latents = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist.mean
        return latents * float(getattr(self.vae.config, "scaling_factor", 1.0) or 1.0)


def region_pixels(pixels: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, windows: list[int],
                  grids: list[tuple[int, int]], size: int) -> torch.Tensor:
    """The crop under each sample's window, resized to ``size`` × ``size``.

    ``pixels`` [B, 3, S, S] is the image as the vision encoder sees it (resized to S × S); a grid cell
    (r, c) of an H × W grid covers rows r·S/H .. (r+1)·S/H, columns likewise.
    """
    crops = []
    side = pixels.shape[-1]
    for b, (height, width) in enumerate(grids):
        r, c, window = int(rows[b]), int(cols[b]), windows[b]
        y0, y1 = round(r * side / height), round((r + window) * side / height)
        x0, x1 = round(c * side / width), round((c + window) * side / width)
        crop = pixels[b:b + 1, :, y0:y1, x0:x1]
        crops.append(F.interpolate(crop.float(), size=(size, size), mode="bilinear", align_corners=False,
                                   antialias=True))
    return torch.cat(crops).to(pixels.dtype)
