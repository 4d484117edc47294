"""The sketch head: one latent sketch token [D] from the VLM's hidden state before it.

- :class:`SketchHead`: MAR's diffusion head (Li et al. 2024, "Autoregressive Image Generation without
  Vector Quantization"): a residual MLP denoiser with adaLN conditioning on timestep + condition,
  trained to predict the noise ε that diffusers' ``DDPMScheduler`` added, sampled with DDIM and
  classifier-free guidance against a learned null condition.
- :class:`RegressionHead` (``--no-diffusion``): the same trunk predicting x0 from the condition alone, MSE.

Both are small (width 256, depth 3 by default) and run in float32 whatever the backbone's dtype.
diffusers is imported only when a :class:`SketchHead` is built.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

KINDS = ("diffusion", "regression")
DIFFUSION_ONLY = ("train_steps", "schedule", "cfg_drop")  # options the regression head has no use for


def _diffusers():
    try:
        import diffusers
    except ImportError:
        raise ImportError('modal-mixed: the diffusion sketch head needs diffusers: pip install -e ".[lare]"') from None
    return diffusers


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """[B] integer timesteps → [B, dim] sinusoids (cos | sin over dim/2 geometric frequencies, as DiT/MAR)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class ResBlock(nn.Module):
    """x + gate · MLP(adaLN(x; y)); the modulation is zero-initialised so the block starts as identity."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)  # adaLN supplies scale/shift
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.ada(y).chunk(3, dim=-1)
        return x + gate * self.mlp(modulate(self.norm(x), shift, scale))


class Trunk(nn.Module):
    """``depth`` residual blocks, then adaLN (no gate) and a zero-initialised output layer: [B, W] → [B, out]."""

    def __init__(self, width: int, depth: int, out: int):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(width) for _ in range(depth))
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, out)
        for layer in (self.ada[1], self.out):  # an untrained head outputs 0 (ε̂ = 0: the prior's mean)
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            h = block(h, y)
        shift, scale = self.ada(y).chunk(2, dim=-1)
        return self.out(modulate(self.norm(h), shift, scale))


class SketchHead(nn.Module):
    """ε-prediction denoiser ε̂(x_t, t, c); ``loss`` trains it, ``sample`` runs DDIM with optional CFG."""

    def __init__(self, dim: int, cond_dim: int, width: int = 256, depth: int = 3, train_steps: int = 1000,
                 schedule: str = "linear", cfg_drop: float = 0.1):
        super().__init__()
        diffusers = _diffusers()
        self.dim, self.cond_dim, self.train_steps, self.cfg_drop = dim, cond_dim, train_steps, cfg_drop
        self.freq_dim = 256
        self.time = nn.Sequential(nn.Linear(self.freq_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.cond = nn.Linear(cond_dim, width)
        self.input = nn.Linear(dim, width)
        self.trunk = Trunk(width, depth, dim)
        # The condition CFG's unconditional branch sees (MAR's learned "fake latent"), in condition space.
        self.null = nn.Parameter(torch.randn(cond_dim) * 0.02)
        # clip_sample off: the targets are standardised, not images in [-1, 1].
        self.scheduler = diffusers.DDPMScheduler(num_train_timesteps=train_steps, beta_schedule=schedule,
                                                 clip_sample=False)
        # DDIM, exact for an oracle ε̂: set_alpha_to_one makes the last step land on ᾱ = 1, i.e. return the
        # predicted x0 itself (False lands on ᾱ_0 = 1 - β_0 and leaves √β_0·ε ≈ 0.01·ε of noise in).
        # "trailing" spacing starts at t = T-1, where x_T ~ N(0, I) belongs ("leading" starts at T - T/steps),
        # and ignores steps_offset (0 here); steps that divide train_steps keep its strides even.
        self.ddim = diffusers.DDIMScheduler.from_config(self.scheduler.config, set_alpha_to_one=True,
                                                        steps_offset=0, timestep_spacing="trailing")

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """ε̂ [B, D_x] for noisy x_t [B, D_x], integer timesteps t [B], conditions [B, D_c]."""
        y = self.time(timestep_embedding(t, self.freq_dim)) + self.cond(cond)
        return self.trunk(self.input(x_t), y)

    def loss(self, x0: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n, device = x0.shape[0], x0.device
        t = torch.randint(0, self.train_steps, (n,), device=device, generator=generator)
        noise = torch.randn(x0.shape, device=device, dtype=x0.dtype, generator=generator)
        x_t = self.scheduler.add_noise(x0, noise, t)
        if self.training and self.cfg_drop > 0:
            drop = torch.rand(n, device=device, generator=generator) < self.cfg_drop
            cond = torch.where(drop[:, None], self.null.to(cond.dtype), cond)
        return F.mse_loss(self.denoise(x_t, t, cond), noise)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, steps: int = 50, cfg: float = 1.0, generator: torch.Generator | None = None,
               eta: float = 0.0) -> torch.Tensor:
        """x0 [B, D_x] by DDIM from x_T ~ N(0, I) (drawn with ``generator``); ε = ε_u + cfg·(ε_c − ε_u)."""
        n = cond.shape[0]
        x = torch.randn((n, self.dim), device=cond.device, dtype=cond.dtype, generator=generator)
        guided = cfg != 1.0
        if guided:  # one forward over [cond; null] per step
            cond = torch.cat([cond, self.null.to(cond.dtype).expand(n, -1)])
        ddim = self.ddim
        ddim.set_timesteps(steps)
        for t in ddim.timesteps.tolist():
            ts = torch.full((cond.shape[0],), t, device=cond.device, dtype=torch.long)
            eps = self.denoise(torch.cat([x, x]) if guided else x, ts, cond)
            if guided:
                eps_c, eps_u = eps.chunk(2)
                eps = eps_u + cfg * (eps_c - eps_u)
            # an int timestep: indexing the scheduler's CPU tables with a CUDA tensor would fail
            x = ddim.step(eps, t, x, eta=eta, generator=generator).prev_sample
        return x


class RegressionHead(nn.Module):
    """``--no-diffusion``: x̂0 = f(c) with the diffusion head's trunk, trained by MSE (the mean, no sampling)."""

    def __init__(self, dim: int, cond_dim: int, width: int = 256, depth: int = 3):
        super().__init__()
        self.dim, self.cond_dim = dim, cond_dim
        self.cond = nn.Linear(cond_dim, width)  # adaLN's conditioning signal
        self.input = nn.Linear(cond_dim, width)  # the residual stream starts from the condition too: no x_t here
        self.trunk = Trunk(width, depth, dim)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.input(cond), self.cond(cond))

    def loss(self, x0: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return F.mse_loss(self(cond), x0)

    @torch.no_grad()
    def sample(self, cond: torch.Tensor, **ignored) -> torch.Tensor:
        return self(cond)


def make_head(kind: str, dim: int, cond_dim: int, **kw) -> nn.Module:
    """``diffusion`` → :class:`SketchHead`, ``regression`` → :class:`RegressionHead` (diffusion-only options dropped)."""
    if kind == "diffusion":
        return SketchHead(dim, cond_dim, **kw)
    if kind == "regression":
        return RegressionHead(dim, cond_dim, **{k: v for k, v in kw.items() if k not in DIFFUSION_ONLY})
    raise ValueError(f"modal-mixed: unknown sketch head {kind!r}; choose one of: {', '.join(KINDS)}")
