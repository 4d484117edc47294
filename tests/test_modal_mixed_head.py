"""The modal-mixed sketch heads and the GRPO math, against references written here by hand."""
from __future__ import annotations

import importlib.util
import math
import sys

import numpy as np
import pytest
import torch

from methods.modal_mixed.grpo import group_advantages, grpo_loss
from methods.modal_mixed.head import RegressionHead, SketchHead, make_head

# The GRPO math, the regression head and the missing-extra message need no diffusers; the rest does.
needs_diffusers = pytest.mark.skipif(importlib.util.find_spec("diffusers") is None,
                                     reason='diffusers is the [lare] extra: pip install -e ".[lare]"')

DIM, COND = 8, 4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices: intra-op threads only contend (20× slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def toy_batch(n: int, generator: torch.Generator, u: torch.Tensor):
    """Two classes: x0 = ±u + small noise; condition = the class's one-hot (plus a little noise)."""
    label = torch.randint(0, 2, (n,), generator=generator)
    sign = 1.0 - 2.0 * label.float()
    x0 = sign[:, None] * u + 0.05 * torch.randn(n, DIM, generator=generator)
    cond = torch.nn.functional.one_hot(label, COND).float() + 0.01 * torch.randn(n, COND, generator=generator)
    return x0, cond


def class_cond(k: int, n: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.full((n,), k), COND).float()


def eval_loss(head, u) -> float:
    g = torch.Generator().manual_seed(123)
    x0, cond = toy_batch(2048, g, u)
    head.eval()
    with torch.no_grad():
        return float(head.loss(x0, cond, generator=g))


def train(head, u, steps: int, lr: float) -> None:
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    head.train()
    for _ in range(steps):
        x0, cond = toy_batch(128, g, u)
        loss = head.loss(x0, cond, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    u = torch.randn(DIM, generator=torch.Generator().manual_seed(7))
    u = u / u.norm()
    head = SketchHead(DIM, COND, width=64, depth=2)
    before = eval_loss(head, u)
    train(head, u, steps=300, lr=3e-3)
    return head, u, before, eval_loss(head, u)


@needs_diffusers
def test_noising_is_the_closed_form():
    head = SketchHead(DIM, COND, width=16, depth=1)
    abar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))  # the linear schedule by hand, float64
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, DIM, generator=g), torch.randn(4, DIM, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    a = torch.tensor(abar[t.numpy()], dtype=torch.float32)[:, None]
    expected = a.sqrt() * x0 + (1 - a).sqrt() * eps
    torch.testing.assert_close(head.scheduler.add_noise(x0, eps, t), expected, atol=1e-5, rtol=1e-5)


@needs_diffusers
@pytest.mark.parametrize("steps", [10, 50])
def test_ddim_with_an_oracle_returns_x0(steps):
    head = SketchHead(DIM, COND, width=16, depth=1)
    x0 = 3 * torch.randn(5, DIM, generator=torch.Generator().manual_seed(1))  # beyond [-1, 1]: no clipping
    abar = head.scheduler.alphas_cumprod

    def oracle(x_t, t, cond):
        a = abar[t][:, None]
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt()

    head.denoise = oracle
    out = head.sample(torch.zeros(5, COND), steps=steps, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)


@needs_diffusers
def test_diffusion_head_learns_and_the_condition_separates_classes(toy):
    head, u, before, after = toy
    assert after < before / 2, (before, after)
    for cfg in (1.0, 3.0):
        for k, sign in ((0, 1.0), (1, -1.0)):
            x = head.sample(class_cond(k, 64), steps=20, cfg=cfg, generator=torch.Generator().manual_seed(k))
            mean = x.mean(0)
            assert torch.cosine_similarity(mean, sign * u, dim=0) > 0.8, (cfg, k)
            assert ((x @ u) * sign > 0).float().mean() > 0.9, (cfg, k)  # on the class's side of the origin


def test_regression_head_learns_the_class_means():
    torch.manual_seed(0)
    u = torch.randn(DIM, generator=torch.Generator().manual_seed(7))
    u = u / u.norm()
    head = RegressionHead(DIM, COND, width=64, depth=2)
    before = eval_loss(head, u)
    train(head, u, steps=150, lr=3e-3)
    assert eval_loss(head, u) < before / 2
    for k, sign in ((0, 1.0), (1, -1.0)):
        pred = head.sample(class_cond(k, 1), steps=99, cfg=7.0)[0]  # sampler options are ignored
        assert torch.cosine_similarity(pred, sign * u, dim=0) > 0.95
        assert (pred - sign * u).norm() < 0.2


@needs_diffusers
def test_cfg_one_never_runs_the_null_branch(toy):
    head = toy[0]
    cond = class_cond(0, 3)
    sizes = []
    real = head.denoise

    def counting(x_t, t, c):
        sizes.append(x_t.shape[0])
        return real(x_t, t, c)

    head.denoise = counting
    try:
        head.sample(cond, steps=5, cfg=1.0, generator=torch.Generator().manual_seed(0))
        assert sizes == [3] * 5
        sizes.clear()
        head.sample(cond, steps=5, cfg=2.0, generator=torch.Generator().manual_seed(0))
        assert sizes == [6] * 5  # one batched forward over [cond; null] per step
    finally:
        del head.denoise


@needs_diffusers
def test_cfg_zero_is_the_unconditional_sample(toy):
    head = toy[0]
    cond = class_cond(1, 4)
    guided = head.sample(cond, steps=10, cfg=0.0, generator=torch.Generator().manual_seed(5))
    null = head.null.detach().expand(4, -1)
    plain = head.sample(null, steps=10, cfg=1.0, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(guided, plain, atol=1e-5, rtol=1e-5)


@needs_diffusers
def test_seeded_sampling(toy):
    head = toy[0]
    cond = class_cond(0, 2)

    def run(seed):
        return head.sample(cond, steps=5, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(11), run(11))
    assert not torch.allclose(run(11), run(12))


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    a = 0.5 / (math.sqrt((4 * 0.25) / 3) + 1e-4)  # group 1: mean .5, unbiased std √(1/3)
    expected = torch.tensor([a, -a, -a, a, 0, 0, 0, 0])
    out = group_advantages(rewards, 4)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=0)
    assert torch.equal(out[4:], torch.zeros(4))
    assert torch.equal(group_advantages(torch.tensor([0.1, 0.1, 0.1]), 3), torch.zeros(3))  # float mean ≠ 0.1
    assert torch.equal(group_advantages(torch.tensor([0.3, 0.7]), 1), torch.zeros(2))  # a group of one: no signal
    with pytest.raises(ValueError):
        group_advantages(rewards, 3)


LOGP = [[-1.0, -0.5, -2.0], [-0.3, -1.2, -0.7]]
OLD = [[-1.1, -0.9, -5.0], [-0.2, -0.6, -0.65]]
REF = [[-1.2, -0.7, -9.0], [-0.25, -1.0, -0.9]]
ADV = [1.0, -0.5]
MASK = [[1, 1, 0], [1, 1, 1]]  # row 0's last token (ratio e³) is padding


def by_hand(eps=0.2, beta=0.04):
    seqs, kls, ratios, clipped = [], [], [], 0
    for lp, old, ref, a, m in zip(LOGP, OLD, REF, ADV, MASK):
        total = 0.0
        for j in range(3):
            if not m[j]:
                continue
            r = math.exp(lp[j] - old[j])
            s = min(r * a, max(1 - eps, min(1 + eps, r)) * a)
            kl = math.exp(ref[j] - lp[j]) - (ref[j] - lp[j]) - 1
            total += s - beta * kl
            kls.append(kl)
            ratios.append(r)
            clipped += (r > 1 + eps and a > 0) or (r < 1 - eps and a < 0)
        seqs.append(total / sum(m))
    n = len(kls)
    return -sum(seqs) / len(seqs), sum(kls) / n, clipped / n, sum(ratios) / n, seqs


def t64(x):
    return torch.tensor(x, dtype=torch.float64)


def test_grpo_loss_by_hand():
    loss, stats = grpo_loss(t64(LOGP), t64(OLD), t64(REF), t64(ADV), t64(MASK))
    want, kl, clip, ratio, _ = by_hand()
    assert clip == 2 / 5  # the example clips one token per direction
    assert loss.item() == pytest.approx(want, rel=1e-6)
    assert stats["kl"].item() == pytest.approx(kl, rel=1e-6)
    assert stats["clip_fraction"].item() == pytest.approx(clip, rel=1e-6)
    assert stats["ratio"].item() == pytest.approx(ratio, rel=1e-6)


def test_grpo_all_masked_sequence_adds_nothing():
    logp = t64(LOGP + [[-1.0, -1.0, -1.0]]).requires_grad_()
    loss, stats = grpo_loss(logp, t64(OLD + [[0.0] * 3]), t64(REF + [[0.0] * 3]), t64(ADV + [2.0]),
                            t64(MASK + [[0, 0, 0]]))
    loss.backward()
    seqs = by_hand()[4]
    assert loss.item() == pytest.approx(-sum(seqs) / 3, rel=1e-6)  # still one of N = 3 sequences
    assert torch.isfinite(logp.grad).all() and torch.equal(logp.grad[2], torch.zeros(3, dtype=torch.float64))
    assert all(torch.isfinite(v) for v in stats.values())
    empty, _ = grpo_loss(t64([[0.0]]), t64([[0.0]]), t64([[0.0]]), t64([1.0]), t64([[0]]))
    assert empty.item() == 0.0


def test_grpo_gradient_on_policy():
    base = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    logp = base.clone().requires_grad_()
    adv = t64([1.5, -0.7, 0.3])
    mask = t64([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    loss, _ = grpo_loss(logp, base.clone(), base.clone(), adv, mask)
    loss.backward()
    expected = -adv[:, None] / mask.sum(1, keepdim=True) / 3 * mask  # ratio 1, KL' = 0: −A_i / |m_i| / N
    torch.testing.assert_close(logp.grad, expected, rtol=1e-12, atol=1e-12)


def test_make_head(monkeypatch):
    head = make_head("regression", DIM, COND, width=16, depth=1, train_steps=10, schedule="linear", cfg_drop=0.1)
    assert isinstance(head, RegressionHead)
    with pytest.raises(ValueError, match="diffusion, regression"):
        make_head("nope", DIM, COND)
    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if the extra were not installed
    with pytest.raises(ImportError, match=r'pip install -e "\.\[lare\]"'):
        make_head("diffusion", DIM, COND)
