"""IVT-LR's ablations as flags: what the policy chooses, checked by hand on a synthetic prompt, and the
options end to end (a run with each, config keys, one-line errors)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from harness.latent.loop import Query
from methods.ivt_lr.policy import IVTLRPolicy

D = 4
IMAGE = torch.tensor([[False, True, True, True, True, True, True, False]])  # positions 1..6 are the image


def _policy(**kw) -> IVTLRPolicy:
    policy = IVTLRPolicy(2, **kw)
    embeds = torch.arange(8 * D, dtype=torch.float32).reshape(1, 8, D)
    policy.start(SimpleNamespace(inputs_embeds=embeds, image_mask=IMAGE))
    return policy


def _query(attention):
    return Query(hidden=torch.full((1, D), -1.0), attention=torch.tensor([attention]), layers={})


def test_attention_choice_never_repeats_unless_reuse():
    rows = [[0, 0.1, 0.5, 0.0, 0.3, 0.05, 0.05, 0], [0, 0.1, 0.5, 0.0, 0.3, 0.05, 0.05, 0]]
    plain, reuse = _policy(), _policy(patch_reuse=True)
    picks = [plain.step(i, _query(r)).record["selected"][0].tolist() for i, r in enumerate(rows)]
    assert picks == [[2, 4], [1, 5]]  # the best two, then the best two left (ties: the lower position)
    picks = [reuse.step(i, _query(r)).record["selected"][0].tolist() for i, r in enumerate(rows)]
    assert picks == [[2, 4], [2, 4]]


def test_chunk_layout_and_latent_vision_only():
    chunk = _policy().step(0, _query([0, 0.1, 0.5, 0.0, 0.3, 0.05, 0.05, 0]))
    embeds = torch.arange(8 * D, dtype=torch.float32).reshape(8, D)
    assert torch.equal(chunk.embeds[0], torch.stack([embeds[2], embeds[4], torch.full((D,), -1.0)]))
    assert chunk.mask.tolist() == [[1, 1, 1]]
    vision_only = _policy(latent_text=False).step(0, _query([0, 0.1, 0.5, 0.0, 0.3, 0.05, 0.05, 0]))
    assert torch.equal(vision_only.embeds[0], torch.stack([embeds[2], embeds[4]]))


def test_uniform_and_random_choices():
    uniform = _policy(patch_choice="uniform")
    assert not uniform.needs_attention and _policy().needs_attention
    first = uniform.step(0, _query([0] * 8)).record["selected"][0].tolist()
    second = uniform.step(1, _query([0] * 8)).record["selected"][0].tolist()
    assert first == [1, 6] and second == [2, 5]  # the ends of what is left, evenly spaced
    a = _policy(patch_choice="random").step(0, _query([0] * 8)).record["selected"][0].tolist()
    b = _policy(patch_choice="random").step(0, _query([0] * 8)).record["selected"][0].tolist()
    assert a == b and len(set(a)) == 2 and set(a) <= set(range(1, 7))  # fixed per (position, step)
    assert any(_policy(patch_choice="random").step(s, _query([0] * 8)).record["selected"][0].tolist() != a
               for s in range(1, 6)), "another step draws other patches"


def test_latent_text_only_with_no_patches():
    policy = IVTLRPolicy(0)
    policy.start(SimpleNamespace(inputs_embeds=torch.zeros(1, 8, D), image_mask=IMAGE))
    chunk = policy.step(0, Query(hidden=torch.ones(1, D), attention=None, layers={}))
    assert chunk.embeds.shape == (1, 1, D) and not policy.needs_attention


@pytest.mark.parametrize("flags, stored", [
    (["--top-k-patches", "0"], {"top_k_patches": 0}),
    (["--latent-text", "false"], {"latent_text": False}),
    (["--patch-choice", "random"], {"patch_choice": "random"}),
    (["--patch-choice", "uniform", "--patch-reuse"], {"patch_choice": "uniform", "patch_reuse": True}),
])
def test_each_ablation_runs_and_is_stored(tiny_model_dirs, tmp_path, capsys, flags, stored):
    import json

    from harness.cli import main
    from harness.run.store import Store
    from harness.testing.fixtures import write_all

    data = write_all(tmp_path / "data", n=3, seed=0, benches=["m3cot"])
    db = f"sqlite:///{tmp_path / 'h.db'}"
    assert main(["run", "--method", "ivt-lr", "--bench", "m3cot", "--model", str(tiny_model_dirs["qwen2-vl"]),
                 "--data", str(data["m3cot"]), "--db", db, "--max-new-tokens", "3", "--latent-steps", "2",
                 "--top-k-patches", "2", *flags, "--json", "--no-progress"]) == 0
    run = Store(db, read_only=True).run(json.loads(capsys.readouterr().out)["run_id"])
    config = run["method_config"]
    assert {k: config.get(k) for k in stored} == stored and run["status"] == "finished"
    rows = Store(db, read_only=True).samples(run["id"] if "id" in run else run["run_id"])
    patches = [r["extra"]["patches_per_step"] for r in rows]
    assert all(len(p) == 2 for p in patches)
    assert all(sum(p) == 0 for p in patches) == (stored.get("top_k_patches") == 0)


def test_ablations_at_their_defaults_keep_the_stored_config():
    from harness.api import METHODS

    config = METHODS.get("ivt-lr")().config()
    assert not {"patch_choice", "patch_reuse", "latent_text"} & set(config)
    with pytest.raises(ValueError, match="patch-choice"):
        METHODS.get("ivt-lr")(patch_choice="best")
    with pytest.raises(ValueError, match="appends nothing"):
        METHODS.get("ivt-lr")(latent_text=False, top_k_patches=0)


def test_image_size_resizes_in_inference_and_training(tiny_model_dirs):
    from PIL import Image

    from harness.api import METHODS, Query, TrainConfig
    from harness.backbones import load_backbone
    from methods.ivt_lr.train import IVTLRRecipe, StageItem

    backbone = load_backbone(str(tiny_model_dirs["qwen2-vl"]), device="cpu", dtype="float32", rope="1d")
    seen = []
    original = backbone.build_inputs

    def spy(images, prompts):
        seen.append([image.size for imgs in images for image in imgs])
        return original(images, prompts)

    backbone.build_inputs = spy
    query = Query(images=[Image.new("RGB", (90, 60), (200, 0, 0))], question="Question: what colour?")
    for size, expected in ((280, (280, 280)), (0, (90, 60)), (56, (56, 56))):
        METHODS.get("ivt-lr")(image_size=size, latent_steps=1, top_k_patches=1, max_new_tokens=1).run(backbone, [query])
        assert seen[-1] == [expected]
    recipe = IVTLRRecipe(TrainConfig(method="ivt-lr", bench="m3cot", model="m", data="d", out="o"))
    recipe.backbone = backbone
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (90, 60), (0, 0, 200)).save(buffer, format="PNG")
    item = StageItem(uid="u", prompt="Question: what colour?\nAnswer:", image_refs=[buffer.getvalue()], n_latent=0,
                     text_steps=[], answer_text="Therefore, the answer is A")
    recipe.collate([item])
    assert seen[-1] == [(280, 280)], "training resizes exactly as inference does"
    with pytest.raises(ValueError, match="image-size"):
        METHODS.get("ivt-lr")(image_size=-1)


def test_train_defaults_are_the_published_ones_unless_given(monkeypatch, tmp_path):
    import harness.train.loop as loop
    from harness.cli import main

    seen = []

    def fake_train(config, progress=True):
        seen.append(config)
        return SimpleNamespace(__dict__={}, last_loss=None, global_step=0, seconds=0, resumed_from=None, out=config.out)

    monkeypatch.setattr(loop, "train", fake_train)
    base = ["train", "--method", "ivt-lr", "--bench", "m3cot", "--model", "m", "--data", "d", "--out", str(tmp_path)]
    assert main(base) == 0
    c = seen[-1]
    assert (c.batch_size, c.grad_accum, c.lr, c.weight_decay, c.max_grad_norm) == (4, 16, 4e-5, 0.01, 0.7)
    assert c.batch_size * c.grad_accum == 64  # the published global batch
    assert main(base + ["--weight-decay", "0", "--grad-accum", "2", "--max-grad-norm", "1.5"]) == 0
    c = seen[-1]
    assert (c.weight_decay, c.grad_accum, c.max_grad_norm, c.batch_size) == (0.0, 2, 1.5, 4)
