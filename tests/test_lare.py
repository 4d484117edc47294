"""LaRe (Latent Refocusing) mechanism tests, each against a reference that shares no code with what it
tests: brute-force windows, eager attention, hand-computed losses and pooling, the DDPM closed form,
an independent full-forward text loss, an independent recomputation of the whole refocusing loop,
stage freezing by parameter identity, adaptive stopping, and the CLI end to end."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from harness.latent.loop import LatentTrace, Query, run_latent_loop
from harness.latent.select import sliding_window
from methods.lare.extractor import Extractor, HybridPool
from methods.lare.losses import Reconstructor, symmetric_infonce
from methods.lare.policy import LaRePolicy, latent_distance

PROMPTS = ["What colour is the shape?", "Which shape is shown? Options: (A) circle (B) square (C) triangle"]
TINY_UNET = dict(channels=(32, 64), layers_per_block=1, cross_attention_dim=32, attention_head_dim=16,
                 norm_num_groups=32)
TINY_UNET_FLAGS = ["--unet-channels", "32,64", "--unet-layers-per-block", "1", "--unet-cross-dim", "32",
                   "--unet-head-dim", "16", "--unet-norm-groups", "32", "--vae", "pixels"]


# -- helpers ---------------------------------------------------------------------------------------
def _load_llava(tiny_model_dirs, attn="eager"):
    from harness.backbones import load_backbone

    return load_backbone(str(tiny_model_dirs["llava"]), device="cpu", dtype="float32",
                         **({"attn_implementation": attn} if attn else {}))


@pytest.fixture(scope="module")
def llava(tiny_model_dirs):
    """The tiny LLaVA (4x4 grid of CLIP patch tokens) as the harness loads it (sdpa): the method's side.
    Never mutated by the tests that share it."""
    return _load_llava(tiny_model_dirs, attn=None)


@pytest.fixture(scope="module")
def llava_eager(tiny_model_dirs):
    """The same weights with eager attention: the references' side (output_attentions)."""
    return _load_llava(tiny_model_dirs)


def _extractor(width: int, seed: int = 0) -> Extractor:
    """A small Extractor whose zero-initialised last FFN layer is re-drawn, so its output reads V_loc."""
    torch.manual_seed(seed)
    extractor = Extractor(width, hidden=32, layers=2, heads=2)
    with torch.no_grad():
        extractor.ffn[-1].weight.normal_(0, 0.3)
        extractor.ffn[-1].bias.normal_(0, 0.3)
    return extractor.eval()


def _brute_window(grid: list[list[float]], w: int):
    """((row, col) of the first best w×w window in row-major order, all window sums) by python loops."""
    height, width = len(grid), len(grid[0])
    sums, best, where = [], None, None
    for r in range(height - w + 1):
        row = []
        for c in range(width - w + 1):
            s = 0.0
            for i in range(w):
                for j in range(w):
                    s += grid[r + i][c + j]
            row.append(s)
            if best is None or s > best:  # strict: a tie keeps the earlier window
                best, where = s, (r, c)
        sums.append(row)
    return where, sums


# -- 1. sliding window ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(3, 5, 5), (2, 4, 7), (2, 6, 3), (1, 1, 1), (2, 2, 9)])
@pytest.mark.parametrize("which", ["one", "middle", "min_side"])
def test_sliding_window_equals_brute_force(shape, which):
    """Row, column, cell indices and every window sum equal a python-loop argmax over all w×w windows
    (integer-valued grids: the fp32 sums are exact, so ties are real ties)."""
    batch, height, width = shape
    side = min(height, width)
    w = {"one": 1, "middle": max(1, (side + 1) // 2), "min_side": side}[which]
    gen = torch.Generator().manual_seed(height * 31 + width * 7 + w)
    saliency = torch.randint(0, 50, shape, generator=gen).float()
    chosen = sliding_window(saliency, w)
    for b in range(batch):
        (r, c), sums = _brute_window(saliency[b].tolist(), w)
        assert (int(chosen.row[b]), int(chosen.col[b])) == (r, c)
        assert chosen.pooled[b].tolist() == sums
        assert chosen.index[b].tolist() == [(r + i) * width + (c + j) for i in range(w) for j in range(w)]


@pytest.mark.parametrize("corner", [(0, 0), (0, -1), (-1, 0), (-1, -1)])
def test_sliding_window_reaches_the_corners(corner):
    """A single hot cell in a corner of a non-square grid: the only window covering it is the chosen one
    (the window may sit flush with any edge)."""
    height, width, w = 5, 7, 3
    saliency = torch.zeros(1, height, width)
    saliency[0, corner[0], corner[1]] = 1.0
    chosen = sliding_window(saliency, w)
    expected = (0 if corner[0] == 0 else height - w, 0 if corner[1] == 0 else width - w)
    assert (int(chosen.row[0]), int(chosen.col[0])) == expected


def test_sliding_window_ties_go_to_the_first_window_row_major():
    """Equal windows: the top-most wins over a lower one further left, and on one row the left-most."""
    grid = torch.zeros(2, 5, 6)
    grid[0, 0, 4] = grid[0, 3, 0] = 5.0  # best: (0, 3), (0, 4) and (2, 0), (3, 0); row-major first: (0, 3)
    grid[1, 3, 1] = grid[1, 3, 4] = 5.0  # best on rows 2..3 at columns 0, 1 and 3, 4; the left-most: (2, 0)
    chosen = sliding_window(grid, 2)
    (r0, c0), _ = _brute_window(grid[0].tolist(), 2)
    (r1, c1), _ = _brute_window(grid[1].tolist(), 2)
    assert (r0, c0) == (0, 3) and (r1, c1) == (2, 0)  # the reference itself, by hand
    assert (int(chosen.row[0]), int(chosen.col[0])) == (0, 3)
    assert (int(chosen.row[1]), int(chosen.col[1])) == (2, 0)
    one = sliding_window(torch.full((1, 3, 4), 2.0), 2)
    assert (int(one.row[0]), int(one.col[0])) == (0, 0)


def test_sliding_window_refuses_windows_that_do_not_fit():
    for w in (0, 4, 6):
        with pytest.raises(ValueError, match="does not fit"):
            sliding_window(torch.rand(1, 3, 5), w)


# -- 2. saliency --------------------------------------------------------------------------------------
def _eager_saliency(eager, inputs) -> list[torch.Tensor]:
    """Eager attention (output_attentions) of the last query, mean over layers and heads, at the
    image-token positions (input_ids == image token id), row-major on each sample's grid."""
    with torch.no_grad():
        out = eager.model(**inputs, output_attentions=True)
    mean = torch.stack([a[:, :, -1, :] for a in out.attentions]).mean(dim=(0, 2))  # [B, T]
    image_id = eager.model.config.image_token_index
    maps = []
    for b in range(inputs["input_ids"].shape[0]):
        positions = [t for t, tok in enumerate(inputs["input_ids"][b].tolist()) if tok == image_id]
        side = math.isqrt(len(positions))
        assert side * side == len(positions) == 16
        maps.append(torch.tensor([float(mean[b, p]) for p in positions]).reshape(side, side))
    return maps


def _check_saliency(method_backbone, eager, images):
    inputs = method_backbone.build_inputs(images, PROMPTS)
    assert (inputs["attention_mask"] == 0).any(), "the batch must exercise left padding"
    grids = method_backbone.image_grid(inputs)
    state, result = method_backbone.prefill(inputs, probe_attention=True)
    policy = LaRePolicy(None, grids, torch.zeros(method_backbone.hidden_size), latents=2, window=2)
    policy.start(state)
    expected = _eager_saliency(eager, inputs)
    for b, (h, w) in enumerate(grids):
        got = policy.saliency(result.query_attention, b)
        torch.testing.assert_close(got, expected[b], atol=1e-5, rtol=0)
        assert not torch.allclose(got, expected[b].T, atol=1e-4), "the layout is row-major, not transposed"
    assert not torch.allclose(expected[0], expected[1], atol=1e-4), "each sample reads its own row"


def test_saliency_equals_eager_attention_over_the_grid(llava, llava_eager, images):
    """The policy's saliency map (the probe on the backbone as the harness loads it) = eager attention of
    the last query, mean over layers and heads, at the image tokens, row-major on the 4x4 grid; padded
    batch."""
    _check_saliency(llava, llava_eager, images)


def test_saliency_on_an_eager_backbone(llava_eager, images):
    """The same with the method itself on the eager-attention backbone (prefill with probe_attention): the
    probe must route LLaVA's CLIP tower to its own eager function (it once crashed there)."""
    _check_saliency(llava_eager, llava_eager, images)


# -- 3. locality ---------------------------------------------------------------------------------------
def _fake_prompt(seed=0, width=64):
    """Two prompts of 30 positions, a 4x4 grid of visual tokens at 5..20 and 9..24, and an attention row
    whose best 2x2 window is (1, 2) for sample 0 and (2, 0) for sample 1."""
    gen = torch.Generator().manual_seed(seed)
    batch, length = 2, 30
    starts = [5, 9]
    embeds = torch.randn(batch, length, width, generator=gen)
    image_mask = torch.zeros(batch, length, dtype=torch.bool)
    attention = torch.rand(batch, length, generator=gen) * 0.01
    hot = [(1, 2), (2, 0)]
    for b in range(batch):
        image_mask[b, starts[b]:starts[b] + 16] = True
        r, c = hot[b]
        for i in range(2):
            for j in range(2):
                attention[b, starts[b] + (r + i) * 4 + (c + j)] += 0.2
    states = torch.randn(batch, length, width, generator=gen)
    prompt = SimpleNamespace(inputs_embeds=embeds, image_mask=image_mask)
    return prompt, Query(hidden=states[:, -1], attention=attention, states=states), starts, hot


def _inside(start, r, c):
    return [start + (r + i) * 4 + (c + j) for i in range(2) for j in range(2)]


def _step(extractor, prompt, query, no_window=False):
    policy = LaRePolicy(extractor, [(4, 4), (4, 4)], torch.zeros(prompt.inputs_embeds.shape[-1]), latents=3,
                        window=2, no_window=no_window)
    policy.start(prompt)
    with torch.no_grad():
        return policy.step(0, query)


def test_latents_read_only_the_chosen_window_and_the_query_positions():
    """Changing visual tokens outside the chosen window leaves Z unchanged; changing one inside (or a
    latent query position) changes that sample's Z only; with no_window the outside matters."""
    extractor = _extractor(64)
    prompt, query, starts, hot = _fake_prompt()
    base = _step(extractor, prompt, query)
    assert base.record["rows"].tolist() == [1, 2] and base.record["cols"].tolist() == [2, 0]
    for b in range(2):
        torch.testing.assert_close(base.record["local"][b], prompt.inputs_embeds[b, _inside(starts[b], *hot[b])])
    assert base.embeds.shape == (2, 1 + 3, 64)
    torch.testing.assert_close(base.embeds[:, 1:], base.record["latents"])

    outside = SimpleNamespace(inputs_embeds=prompt.inputs_embeds.clone(), image_mask=prompt.image_mask)
    for b in range(2):
        for p in range(starts[b], starts[b] + 16):
            if p not in _inside(starts[b], *hot[b]):
                outside.inputs_embeds[b, p] += 5.0
    torch.testing.assert_close(_step(extractor, outside, query).record["latents"], base.record["latents"],
                               atol=1e-6, rtol=0)

    inside = SimpleNamespace(inputs_embeds=prompt.inputs_embeds.clone(), image_mask=prompt.image_mask)
    inside.inputs_embeds[0, _inside(starts[0], *hot[0])[3]] += 5.0
    changed = _step(extractor, inside, query).record["latents"]
    assert (changed[0] - base.record["latents"][0]).abs().max() > 1e-3
    torch.testing.assert_close(changed[1], base.record["latents"][1], atol=1e-6, rtol=0)

    # The latent query positions are the last n_z = 3 states; the one before them is not read.
    states = query.states.clone()
    states[:, -4] += 5.0
    same = _step(extractor, prompt, Query(hidden=query.hidden, attention=query.attention, states=states))
    torch.testing.assert_close(same.record["latents"], base.record["latents"], atol=1e-6, rtol=0)
    states[:, -3] += 5.0
    moved = _step(extractor, prompt, Query(hidden=query.hidden, attention=query.attention, states=states))
    assert (moved.record["latents"] - base.record["latents"]).abs().max() > 1e-3

    # Perturbation of the mechanism: reading every visual token makes the outside matter.
    wide = _step(extractor, prompt, query, no_window=True).record["latents"]
    wide_outside = _step(extractor, outside, query, no_window=True).record["latents"]
    assert (wide - wide_outside).abs().max() > 1e-3


# -- 4. InfoNCE -----------------------------------------------------------------------------------------
def _infonce_by_hand(a: list[list[float]], b: list[list[float]], tau: float) -> float:
    def cos(x, y):
        dot = sum(p * q for p, q in zip(x, y))
        return dot / (math.sqrt(sum(p * p for p in x)) * math.sqrt(sum(q * q for q in y)))

    n = len(a)
    logits = [[cos(a[i], b[j]) / tau for j in range(n)] for i in range(n)]
    rows = sum(-logits[i][i] + math.log(sum(math.exp(logits[i][j]) for j in range(n))) for i in range(n)) / n
    cols = sum(-logits[j][j] + math.log(sum(math.exp(logits[i][j]) for i in range(n))) for j in range(n)) / n
    return (rows + cols) / 2


@pytest.mark.parametrize("tau", [0.07, 0.5, 1.0])
def test_symmetric_infonce_equals_a_hand_computation(tau):
    """½ (row-wise CE + column-wise CE) of cosine similarities / τ, by math.exp/log loops; swapping two
    rows of b changes it."""
    gen = torch.Generator().manual_seed(int(tau * 100))
    a, b = torch.randn(5, 7, generator=gen), torch.randn(5, 7, generator=gen)
    a[0] *= 10  # cosine: the norm of a row must not matter
    got = symmetric_infonce(a, b, tau).item()
    assert got == pytest.approx(_infonce_by_hand(a.tolist(), b.tolist(), tau), rel=1e-5, abs=1e-6)
    swapped = b[[1, 0, 2, 3, 4]]
    assert symmetric_infonce(a, swapped, tau).item() == pytest.approx(
        _infonce_by_hand(a.tolist(), swapped.tolist(), tau), rel=1e-5, abs=1e-6)
    assert abs(symmetric_infonce(a, swapped, tau).item() - got) > 1e-4


# -- 5. hybrid pooling ------------------------------------------------------------------------------------
def test_hybrid_pool_equals_its_definition():
    """Linear([mean over valid tokens; max over valid tokens]) by hand, with padding (filled with huge
    values a wrong mask would pick up), no padding, and mask=None (all tokens)."""
    torch.manual_seed(0)
    pool = HybridPool(4, dim=3)
    x = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 1, 0, 1, 1]], dtype=torch.bool)
    x = x.masked_fill(~mask[..., None], 100.0)
    weight, bias = pool.proj.weight.tolist(), pool.proj.bias.tolist()

    def by_hand(rows):
        mean = [sum(r[k] for r in rows) / len(rows) for k in range(4)]
        top = [max(r[k] for r in rows) for k in range(4)]
        v = mean + top
        return [sum(weight[o][k] * v[k] for k in range(8)) + bias[o] for o in range(3)]

    got = pool(x, mask)
    for b in range(3):
        rows = [x[b, t].tolist() for t in range(5) if mask[b, t]]
        assert got[b].tolist() == pytest.approx(by_hand(rows), rel=1e-5, abs=1e-5)
    unmasked = pool(x)
    for b in range(3):
        assert unmasked[b].tolist() == pytest.approx(by_hand([x[b, t].tolist() for t in range(5)]), rel=1e-5, abs=1e-4)
    assert (got[1] - unmasked[1]).abs().max() > 1.0, "the mask matters"
    empty = pool(x[:1], torch.zeros(1, 5, dtype=torch.bool))  # no valid token: mean = max = 0
    assert empty[0].tolist() == pytest.approx(bias, abs=1e-6)


# -- 6. reconstructor ---------------------------------------------------------------------------------------
def test_reconstructor_noising_equals_the_ddpm_closed_form():
    """The U-Net input is sqrt(ᾱ_t) x0 + sqrt(1-ᾱ_t) ε with β = linspace(1e-4, 0.02, 1000) (float64 numpy),
    and the loss is mean((ε̂ - ε)²) over the U-Net's own output."""
    torch.manual_seed(0)
    rec = Reconstructor(64, 3, 8, **TINY_UNET).eval()
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    alpha_bar = np.cumprod(1.0 - betas)
    x0, noise = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    cond = torch.randn(4, 2, 64)
    timesteps = torch.tensor([0, 1, 500, 999])
    seen = {}

    def grab(_module, args, kwargs):
        seen["sample"] = (args[0] if args else kwargs["sample"]).detach().clone()

    def grab_out(_module, _args, _kwargs, output):
        seen["out"] = output.sample.detach().clone()

    handles = [rec.unet.register_forward_pre_hook(grab, with_kwargs=True),
               rec.unet.register_forward_hook(grab_out, with_kwargs=True)]
    try:
        with torch.no_grad():
            loss = rec.loss(x0, cond, noise=noise, timesteps=timesteps).item()
    finally:
        for h in handles:
            h.remove()
    x0n, en = x0.double().numpy(), noise.double().numpy()
    expected = np.stack([math.sqrt(alpha_bar[t]) * x0n[i] + math.sqrt(1 - alpha_bar[t]) * en[i]
                         for i, t in enumerate(timesteps.tolist())])
    np.testing.assert_allclose(seen["sample"].double().numpy(), expected, rtol=0, atol=2e-5)
    assert abs(math.sqrt(alpha_bar[999]) - 0.00635) < 1e-4  # the closed form itself: almost pure noise at T
    assert loss == pytest.approx(float(((seen["out"].double().numpy() - en) ** 2).mean()), rel=1e-5)


def test_reconstructor_learns_a_fixed_batch():
    """A tiny conditioned U-Net halves its denoising loss on one fixed batch within 60 Adam steps."""
    torch.manual_seed(0)
    rec = Reconstructor(64, 3, 8, **TINY_UNET)
    target, cond = torch.rand(4, 3, 8, 8) * 2 - 1, torch.randn(4, 2, 64)
    noise, timesteps = torch.randn(4, 3, 8, 8), torch.tensor([50, 300, 600, 900])
    optimizer = torch.optim.Adam(rec.parameters(), lr=2e-3)
    losses = []
    for _ in range(60):
        loss = rec.loss(target, cond, noise=noise, timesteps=timesteps)
        losses.append(loss.item())
        if losses[-1] <= losses[0] / 2:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] <= losses[0] / 2, losses


# -- 7. text reconstruction loss -----------------------------------------------------------------------------
def test_text_loss_equals_an_independent_full_forward(llava):
    """CE of the rationale's first P tokens after [<start>; Z], computed from one language-model forward
    per sample (no padding, positions 0..n-1) and -log softmax by hand, vs. text_loss on a right-padded
    batch (prefix cut at P = 4; sample 1 has 3 rationale tokens)."""
    from methods.lare.model import LaReModel

    torch.manual_seed(0)
    start_id, prefix = 7, 4
    model = LaReModel(llava, extractor=None, pool=None, reconstructor=None, image_tokenizer=None, start_id=start_id,
                      loss={"lambda_align": 0.0, "lambda_img": 0.0, "lambda_text": 1.0, "tau": 0.07,
                            "recon_size": 8, "prefix": prefix},
                      loop={"latents": 2, "window": 2, "no_window": False})
    latents = torch.randn(2, 6, llava.hidden_size)
    rationale = [[40, 41, 42, 43, 44], [50, 51, 52]]
    ids = torch.tensor([rationale[0], rationale[1] + [0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.no_grad():
        got = model.text_loss(latents, ids, mask).item()

    table = llava.model.get_input_embeddings().weight
    total, count = 0.0, 0
    with torch.no_grad():
        for b in range(2):
            tokens = rationale[b][:prefix]
            seq = torch.cat([table[start_id][None], latents[b], table[tokens]])[None]
            n = seq.shape[1]
            hidden = llava.language_model(inputs_embeds=seq, attention_mask=torch.ones(1, n, dtype=torch.long),
                                          position_ids=torch.arange(n)[None]).last_hidden_state
            logits = llava.lm_head(hidden)[0].double()
            first = 1 + latents.shape[1] - 1  # the last latent predicts r_1
            for k, token in enumerate(tokens):
                row = logits[first + k].tolist()
                top = max(row)
                total += -(row[token] - top - math.log(sum(math.exp(v - top) for v in row)))
                count += 1
    assert count == 7
    assert got == pytest.approx(total / count, rel=1e-4)
    with torch.no_grad():
        other = model.text_loss(latents.flip(1), ids, mask).item()
    assert abs(other - got) > 1e-3, "the latents are read"


# -- 8. the cached loop vs an independent recomputation --------------------------------------------------------
def _independent_loop(backbone, extractor, inputs, b, start_embed, steps, n_z, w, read_start_first):
    """Sample b alone, recomputed from position 0 at every iteration with eager output_attentions:
    [prompt; (<start>); Z_1..Z_{t-1}] → mean attention of the last position over layers and heads →
    image positions on the grid → brute-force window → its projector features → Extractor(last n_z
    final hidden states, window features) → Z_t. Returns ([(row, col)], [Z_t [n_z, D]])."""
    real = inputs["attention_mask"][b].bool()
    ids = inputs["input_ids"][b][real]
    image_id = backbone.model.config.image_token_index
    lm = backbone.language_model
    with torch.no_grad():
        tower = backbone.model.model.vision_tower(inputs["pixel_values"][b:b + 1], output_hidden_states=True)
        features = backbone.model.model.multi_modal_projector(tower.hidden_states[-2][:, 1:])[0]  # [16, D]
        table = backbone.model.get_input_embeddings().weight
        image_positions = [t for t, tok in enumerate(ids.tolist()) if tok == image_id]
        side = math.isqrt(len(image_positions))
        assert side * side == len(image_positions) == features.shape[0]
        rows = [table[tok] for tok in ids.tolist()]
        for k, p in enumerate(image_positions):
            rows[p] = features[k]
        if read_start_first:
            rows.append(start_embed)
        windows, latents = [], []
        for t in range(steps):
            seq = torch.stack(rows)[None]
            n = seq.shape[1]
            out = lm(inputs_embeds=seq, attention_mask=torch.ones(1, n, dtype=torch.long),
                     position_ids=torch.arange(n)[None], output_attentions=True)
            last = torch.stack([a[0, :, -1, :] for a in out.attentions]).mean(dim=(0, 1))  # [n]
            grid = [[float(last[image_positions[r * side + c]]) for c in range(side)] for r in range(side)]
            (r, c), _ = _brute_window(grid, w)
            cells = [(r + i) * side + (c + j) for i in range(w) for j in range(w)]
            z = extractor(out.last_hidden_state[:, -n_z:], features[cells][None])[0]
            windows.append((r, c))
            latents.append(z)
            if t == 0 and not read_start_first:
                rows.append(start_embed)
            rows.extend(z)
    return windows, latents, torch.stack(rows)


def _method_loop(backbone, extractor, inputs, start_embed, steps, n_z, w):
    policy = LaRePolicy(extractor, backbone.image_grid(inputs), start_embed, latents=n_z, window=w)
    with torch.no_grad():
        loop = run_latent_loop(backbone, inputs, policy, steps, mode="cached")
    return loop


def test_cached_loop_equals_independent_recomputation(llava, llava_eager, images, read_start_first=False):
    """(<start> is appended with Z_1, as policy.py says; ``read_start_first`` keeps the recomputation's other
    reading for whoever changes that.) Windows exactly and latents to 1e-4: the method's KV-cached loop on a left-padded batch of two
    prompts of different lengths, and on each prompt alone, vs. a from-scratch recomputation."""
    steps, n_z, w = 3, 2, 2
    extractor = _extractor(llava.hidden_size, seed=1)
    torch.manual_seed(2)
    start_embed = torch.randn(llava.hidden_size)
    batch = llava.build_inputs(images, PROMPTS)
    lengths = batch["attention_mask"].sum(-1).tolist()
    assert lengths[0] != lengths[1]
    batched = _method_loop(llava, extractor, batch, start_embed, steps, n_z, w)
    for b in range(2):
        windows, latents, sequence = _independent_loop(llava_eager, extractor, batch, b, start_embed, steps, n_z,
                                                       w, read_start_first)
        alone = _method_loop(llava, extractor, llava.build_inputs([images[b]], [PROMPTS[b]]), start_embed, steps,
                             n_z, w)
        for run, i in ((batched, b), (alone, 0)):
            assert run.trace.steps == steps
            got = [(int(r[i]), int(c[i])) for r, c in zip(run.trace.rows, run.trace.cols)]
            assert got == windows
            for z_method, z_ref in zip(run.trace.latents, latents):
                torch.testing.assert_close(z_method[i], z_ref, atol=1e-4, rtol=0)
        # The decoding state after the loop has read exactly the recomputed sequence.
        n = sequence.shape[0]
        assert int(alone.state.next_position[0]) == n == lengths[b] + 1 + steps * n_z
        assert int(batched.state.next_position[b]) == n
        with torch.no_grad():
            full = llava_eager.language_model(inputs_embeds=sequence[None], position_ids=torch.arange(n)[None],
                                              attention_mask=torch.ones(1, n, dtype=torch.long)).last_hidden_state
            final_logits = llava_eager.lm_head(full)[0, -1]
        torch.testing.assert_close(alone.state.logits[0], final_logits, atol=5e-5, rtol=0)
        torch.testing.assert_close(batched.state.logits[b], final_logits, atol=5e-5, rtol=0)


# -- 9. stage freezing ----------------------------------------------------------------------------------------
def test_stages_train_exactly_their_parts(tiny_model_dirs, tmp_path):
    """By parameter identity: stage I trains exactly the projector; II exactly extractor + pool +
    reconstructor; III and IV everything but the vision encoder; the vision encoder never."""
    from harness.api.recipe import TrainConfig
    from harness.train.loop import _apply_frozen
    from methods.lare.train import LaReRecipe

    options = {"unet_channels": "32,64", "unet_layers_per_block": 1, "unet_cross_dim": 32, "unet_head_dim": 16,
               "unet_norm_groups": 32, "vae": "pixels", "extractor_hidden": 32, "extractor_heads": 2}
    config = TrainConfig(method="lare", bench="easyvqa", model=str(tiny_model_dirs["llava"]), data=None,
                         out=str(tmp_path / "out"), options=options)
    recipe = LaReRecipe(config)
    backbone = _load_llava(tiny_model_dirs, attn="sdpa")  # setup adds tokens: a backbone of its own
    module = recipe.setup(backbone)
    assert module.extractor is not None and module.pool is not None and module.reconstructor is not None
    groups = [g for g in recipe.param_groups(module) if g["params"]]
    grouped = {id(p) for g in groups for p in g["params"]}

    projector = {id(p) for p in backbone.projector_parameters()}
    vision = {id(p) for p in backbone.vision_encoder_parameters()}
    llm = {id(p) for p in backbone.language_model.parameters()} | {id(p) for p in backbone.lm_head.parameters()}
    modules = {id(p) for part in (module.extractor, module.pool, module.reconstructor) for p in part.parameters()}
    everything = {id(p) for p in module.parameters()}
    assert projector and vision and llm and modules
    assert not (projector & vision) and not (projector & llm) and not (vision & llm)
    assert not (modules & (projector | vision | llm))
    assert everything == projector | vision | llm | modules, "every parameter belongs to one of the four parts"
    expected = {0: projector, 1: modules, 2: projector | llm | modules, 3: projector | llm | modules}
    for stage in range(4):
        _apply_frozen(module, grouped, recipe.frozen(stage))
        training = {id(p) for p in module.parameters() if p.requires_grad}
        assert training == expected[stage], f"stage {stage + 1}"
        assert not (training & vision)
    # Perturbation: the parts are really different sets, so a wrong stage map could not pass.
    assert expected[0] != expected[1] != expected[2]


# -- 10. adaptive stopping -------------------------------------------------------------------------------------
def _distance_by_hand(a: torch.Tensor, b: torch.Tensor, metric: str) -> list[float]:
    out = []
    for x, y in zip(a.tolist(), b.tolist()):
        per = []
        for u, v in zip(x, y):
            if metric == "cos":
                dot = sum(p * q for p, q in zip(u, v))
                per.append(1 - dot / (math.sqrt(sum(p * p for p in u)) * math.sqrt(sum(q * q for q in v))))
            elif metric == "l1":
                per.append(sum(abs(p - q) for p, q in zip(u, v)) / len(u))
            else:
                per.append(math.sqrt(sum((p - q) ** 2 for p, q in zip(u, v))))
        out.append(sum(per) / len(per))
    return out


@pytest.mark.parametrize("metric", ["cos", "l1", "l2"])
def test_latent_distance_equals_the_hand_formulas(metric):
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(3, 4, 6, generator=gen), torch.randn(3, 4, 6, generator=gen)
    assert latent_distance(a, b, metric).tolist() == pytest.approx(_distance_by_hand(a, b, metric), rel=1e-5, abs=1e-6)
    assert latent_distance(a, a, metric).abs().max() < 1e-5
    with pytest.raises(ValueError, match="unknown distance"):
        latent_distance(a, b, "dot")


class _ScriptedExtractor:
    """A fake Extractor: call k returns the k-th [B, n_z, D] latents of a prescribed sequence."""

    def __init__(self, sequence: list[torch.Tensor]):
        self.sequence, self.calls = sequence, 0

    def __call__(self, hidden, visual, visual_mask):
        z = self.sequence[self.calls]
        assert hidden.shape == z.shape
        self.calls += 1
        return z


def _scripted(increments: list[list[float]], n_z: int, width: int, metric: str, seed: int = 0) -> list[torch.Tensor]:
    """Latents per step for each sample whose successive distances shrink with ``increments``:
    l1 / l2: Z_k = base + (sum of increments up to k) · e (e a fixed random unit direction);
    cos: Z_k = cos(φ_k) u + sin(φ_k) v, φ_k = 0.3 · (sum of increments up to k) (u ⊥ v, random)."""
    gen = torch.Generator().manual_seed(seed)
    offsets = torch.tensor([np.cumsum([0.0] + inc).tolist() for inc in increments])  # [B, steps]
    if metric == "cos":
        u, v = torch.linalg.qr(torch.randn(width, 2, generator=gen)).Q.T
        angles = 0.3 * offsets
        return [(angles[:, k].cos()[:, None] * u + angles[:, k].sin()[:, None] * v)[:, None].expand(-1, n_z, -1)
                .clone() for k in range(offsets.shape[1])]
    base = torch.randn(len(increments), n_z, width, generator=gen)
    direction = torch.randn(width, generator=gen)
    direction /= direction.norm()
    return [base + offsets[:, k][:, None, None] * direction for k in range(offsets.shape[1])]


# sample 0 converges at step index 2 (3 iterations), sample 1 at step index 4 (5 iterations)
INCREMENTS = [[3.0, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1], [3.0, 2.5, 2.0, 0.2, 0.1, 0.1, 0.1]]
STOP = [2, 4]


def _threshold(sequence, metric) -> float:
    """A θ between every pre-stop distance and the stop distances, from the hand formulas."""
    before, at = [], []
    for b, stop in enumerate(STOP):
        for k in range(1, stop + 1):
            d = _distance_by_hand(sequence[k][b:b + 1], sequence[k - 1][b:b + 1], metric)[0]
            (at if k == stop else before).append(d)
    assert max(at) < min(before), "the construction separates the steps"
    return (max(at) + min(before)) / 2


@pytest.mark.parametrize("metric", ["cos", "l1", "l2"])
def test_adaptive_stopping_stops_at_the_first_close_step(metric):
    """Driving the policy by hand: each sample appends its chunk up to and including the first step whose
    distance is below θ, and all later chunks are masked; iterations and windows per sample; the batch
    equals each sample alone."""
    width, n_z, steps = 16, 2, 8
    sequence = _scripted(INCREMENTS, n_z, width, metric)
    theta = _threshold(sequence, metric)
    prompt, query, _, hot = _fake_prompt(width=width)

    def drive(rows):
        policy = LaRePolicy(_ScriptedExtractor([z[rows] for z in sequence]), [(4, 4)] * len(rows),
                            torch.zeros(width), latents=n_z, window=2, adaptive=metric, threshold=theta)
        policy.start(SimpleNamespace(inputs_embeds=prompt.inputs_embeds[rows], image_mask=prompt.image_mask[rows]))
        trace, masks = LatentTrace(), []
        for index in range(steps):
            if policy.finished():
                break
            chunk = policy.step(index, Query(hidden=query.hidden[rows], attention=query.attention[rows],
                                             states=query.states[rows]))
            trace.add(chunk)
            masks.append(chunk.mask)
        return policy, trace, masks

    policy, trace, masks = drive([0, 1])
    assert trace.steps == max(STOP) + 1 < steps
    for b, stop in enumerate(STOP):
        info = policy.sample_info(trace, b)
        assert info["iterations"] == stop + 1
        assert info["windows"] == [list(hot[b])] * (stop + 1)
        for k, mask in enumerate(masks):
            assert bool(mask[b].all()) == (k <= stop) and bool(mask[b].any()) == (k <= stop)
        assert masks[0].shape[1] == 1 + n_z  # <start> + Z_1
        alone_policy, alone_trace, _ = drive([b])
        assert alone_policy.sample_info(alone_trace, 0)["iterations"] == stop + 1
        assert alone_trace.steps == stop + 1
    # Perturbation: a θ just under the stop distance lets sample 0 run on.
    d_stop = _distance_by_hand(sequence[STOP[0]][:1], sequence[STOP[0] - 1][:1], metric)[0]
    strict = LaRePolicy(_ScriptedExtractor([z[[0]] for z in sequence]), [(4, 4)], torch.zeros(width), latents=n_z,
                        window=2, adaptive=metric, threshold=d_stop * 0.999)
    strict.start(SimpleNamespace(inputs_embeds=prompt.inputs_embeds[[0]], image_mask=prompt.image_mask[[0]]))
    for index in range(STOP[0] + 1):
        strict.step(index, Query(hidden=query.hidden[[0]], attention=query.attention[[0]], states=query.states[[0]]))
    assert not strict.finished()


def test_adaptive_loop_ends_early_when_every_sample_stopped(llava, images):
    """Through run_latent_loop on the tiny LLaVA: the loop stops after the last sample converged
    (trace.steps < the maximum), each sample's iterations equal what it gets alone, a stopped sample's
    later chunks take no position, and what decoding starts from (after <end>) equals the sample alone."""
    width, n_z, steps = llava.hidden_size, 2, 8
    sequence = _scripted(INCREMENTS, n_z, width, "l2")
    theta = _threshold(sequence, "l2")
    torch.manual_seed(4)
    end = torch.randn(1, 1, width)

    def run(inputs, rows):
        policy = LaRePolicy(_ScriptedExtractor([z[rows] for z in sequence]), llava.image_grid(inputs),
                            torch.zeros(width), latents=n_z, window=2, adaptive="l2", threshold=theta)
        with torch.no_grad():
            loop = run_latent_loop(llava, inputs, policy, steps, mode="cached")
            after_end = llava.append(loop.state, end.expand(len(rows), 1, -1)).logits[:, -1]
        return policy, loop, after_end

    batch = llava.build_inputs(images, PROMPTS)
    policy, loop, after_end = run(batch, [0, 1])
    assert loop.trace.steps == max(STOP) + 1 < steps
    for b, stop in enumerate(STOP):
        assert policy.sample_info(loop.trace, b)["iterations"] == stop + 1
        alone_policy, alone, alone_after_end = run(llava.build_inputs([images[b]], [PROMPTS[b]]), [b])
        assert alone_policy.sample_info(alone.trace, 0)["iterations"] == stop + 1
        assert alone.trace.steps == stop + 1
        # prompt + <start> + (stop + 1) chunks of n_z, + <end>
        assert int(loop.state.next_position[b]) == int(batch["attention_mask"][b].sum()) + 1 + (stop + 1) * n_z + 1
        torch.testing.assert_close(after_end[b], alone_after_end[0], atol=5e-5, rtol=0)


# -- 11. end to end ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_train_then_run_end_to_end(tiny_model_dirs, tmp_path, capsys):
    """harness train --method lare (stages I, II) → harness run --checkpoint stores iterations and windows;
    contradicting flags, bad stages and a foreign checkpoint are one-line usage errors (exit 2)."""
    from harness.cli import main
    from harness.run.store import Store

    model = str(tiny_model_dirs["llava"])
    out = tmp_path / "ck"
    rc = main(["train", "--method", "lare", "--bench", "easyvqa", "--model", model, "--out", str(out), "--limit", "8",
               "--batch-size", "4", "--stages", "1,2", "--stage-epochs", "1", "--iterations", "2",
               "--latents-per-step", "2", "--window", "2", "--extractor-hidden", "32", "--extractor-heads", "2",
               "--recon-size", "8", "--pixel-size", "56", "--prefix", "8", "--rationale-tokens", "16",
               "--no-progress", *TINY_UNET_FLAGS])
    assert rc == 0, capsys.readouterr().err
    saved = json.loads((out / "config.json").read_text())
    assert saved["recipe"] == "lare" and saved["stages"] == [1, 2] and saved["loop"]["latents_per_step"] == 2
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "extractor.safetensors", "pool.safetensors",
                                                 "reconstructor.safetensors"}
    capsys.readouterr()

    db = f"sqlite:///{tmp_path / 'h.db'}"
    rc = main(["run", "--method", "lare", "--checkpoint", str(out), "--bench", "easyvqa", "--model", model,
               "--limit", "4", "--batch-size", "2", "--max-new-tokens", "4", "--db", db, "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    (run,) = Store(db, read_only=True).runs()
    rows = Store(db, read_only=True).samples(run["id"])
    assert len(rows) == 4 and not any(r.get("error") for r in rows)
    for r in rows:
        extra = r["extra"]
        assert extra["iterations"] == 2 == r["latent_steps"] and extra["window"] == 2
        assert len(extra["windows"]) == 2 and all(0 <= a <= 2 and 0 <= c <= 2 for a, c in extra["windows"])
    capsys.readouterr()

    def usage_error(argv) -> str:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("harness: error:") and len(err.splitlines()) == 1, err
        return err

    err = usage_error(["run", "--method", "lare", "--checkpoint", str(out), "--bench", "easyvqa", "--model", model,
                       "--limit", "1", "--latents-per-step", "7", "--db", db, "--no-progress"])
    assert "contradicts" in err and "latents-per-step" in err
    err = usage_error(["train", "--method", "lare", "--bench", "easyvqa", "--model", model, "--out",
                       str(tmp_path / "x"), "--stages", "3,1", "--no-progress"])
    assert "--stages" in err and not (tmp_path / "x" / "config.json").exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"recipe": "ivt-lr"}))
    err = usage_error(["run", "--method", "lare", "--checkpoint", str(foreign), "--bench", "easyvqa", "--model",
                       model, "--limit", "1", "--db", db, "--no-progress"])
    assert "not LaRe's" in err
    err = usage_error(["run", "--method", "lare", "--checkpoint", str(tmp_path / "nothing"), "--bench", "easyvqa",
                       "--model", model, "--limit", "1", "--db", db, "--no-progress"])
    assert "no config.json" in err
    assert len(Store(db, read_only=True).runs()) == 1, "refused runs store nothing"


def test_llava_conversation_reader(tmp_path):
    """LLaVA's conversation JSON: one example per human/gpt pair, <image> dropped, images beside the JSON or
    under images/, entries without an image skipped; a missing image or a non-list is a DataError."""
    import json as _json

    from PIL import Image

    from harness.api import DataError
    from harness.data.readers import read_examples

    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a.png")
    rows = [{"id": "x", "image": "a.png", "conversations": [
                {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A square."},
                {"from": "human", "value": "Colour?"}, {"from": "gpt", "value": "Black."}]},
            {"id": "t", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}]
    path = tmp_path / "chat.json"
    path.write_text(_json.dumps(rows))
    examples = read_examples("llava", str(path), "train")
    assert [(e.uid, e.question, e.answer, e.rationale) for e in examples] == [
        ("x-0", "What is it?", "A square.", "A square."), ("x-1", "Colour?", "Black.", "Black.")]
    assert examples[0].image_refs == [str(tmp_path / "images" / "a.png")]
    rows[0]["image"] = "missing.png"
    path.write_text(_json.dumps(rows))
    with pytest.raises(DataError, match="missing.png"):
        read_examples("llava", str(path), "train")
    path.write_text("{}")
    with pytest.raises(DataError, match="JSON list"):
        read_examples("llava", str(path), "train")


def test_a_vae_folder_tokenizes_crops_into_its_scaled_latent_mean(tmp_path):
    """--vae DIR: a (tiny, random) diffusers AutoencoderKL saved the way a real one is; the target is the
    posterior mean times the scaling factor, computed here through the VAE's own encoder pieces."""
    import torch
    from diffusers import AutoencoderKL

    from methods.lare.losses import ImageTokenizer

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                        latent_channels=4, norm_num_groups=4, sample_size=16, scaling_factor=0.5)
    vae.save_pretrained(tmp_path / "vae")
    tokenizer = ImageTokenizer(str(tmp_path / "vae"), "cpu")
    assert tokenizer.channels_and_factor() == (4, 2)
    pixels = torch.rand(2, 3, 16, 16) * 2 - 1
    latents = tokenizer.encode(pixels)
    with torch.no_grad():
        moments = vae.quant_conv(vae.encoder(pixels))  # [mean; logvar] along channels
    assert latents.shape == (2, 4, 8, 8)
    torch.testing.assert_close(latents, moments[:, :4] * 0.5, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no diffusers AutoencoderKL"):
        ImageTokenizer(str(tmp_path / "missing"), "cpu")
