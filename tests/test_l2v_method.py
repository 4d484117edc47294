"""L2V-CoT end to end on tiny models: extraction (hooked decoder-layer outputs), the direction file,
the injection hooks (norms, positions, KV cache, batching, removal), the `l2v-cot` method, `harness run`
and `harness l2v sweep`."""
from __future__ import annotations

import json

import pytest
import torch

from harness.api import DataError, Query
from harness.backbones.text import load_causal_lm
from methods.l2v_cot.extract import (COT_SUFFIX, DEFAULT_PAIRS, DIRECT_SUFFIX, contrast_texts, extract, llm_states,
                                     load_pairs)
from methods.l2v_cot.inject import map_layer, steer_hidden, steering
from methods.l2v_cot.method import L2VCoT, check_cutoff, resolve_layer
from methods.l2v_cot.spectral import transfer
from harness.api.hashing import file_sha256
from methods.l2v_cot.vectors import load_directions


@pytest.fixture(scope="module")
def llm_dir(tmp_path_factory):
    from harness.backbones.tiny import write_tiny_model

    return write_tiny_model("qwen2", tmp_path_factory.mktemp("llm") / "qwen2", hidden_size=48, layers=2)


@pytest.fixture(scope="module")
def llm(llm_dir):
    return load_causal_lm(str(llm_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def vector_file(llm_dir, tmp_path_factory):
    path, _ = extract(str(llm_dir), DEFAULT_PAIRS, [0, 1], tmp_path_factory.mktemp("vec") / "v.safetensors", n=12,
                      device="cpu", dtype="float32")
    return path


@pytest.fixture(scope="module")
def m3cot_data(tmp_path_factory):
    from harness.testing.fixtures import write_m3cot_fixture

    return str(write_m3cot_fixture(tmp_path_factory.mktemp("data") / "m3cot", n=6, seed=0))


def unit(width, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(width, generator=g)
    return v / v.norm()


# -- contrast pairs ----------------------------------------------------------------------------
def test_contrast_pairs_in_still2_layout_and_prompt_form(tmp_path):
    pairs = load_pairs(DEFAULT_PAIRS, "still2")
    assert len(pairs) == 20
    for p in pairs:
        assert p.short_answer and p.short_answer in p.long_answer and len(p.long_answer) > 2 * len(p.short_answer)
        assert "<|" not in p.long_answer + p.short_answer, "STILL-2 markers are stripped"
    chat = lambda text: f"<u>{text}</u>"  # noqa: E731
    cot, direct = contrast_texts(pairs[:2], "still2", chat)
    assert cot[0] == f"<u>{pairs[0].question}</u>{pairs[0].long_answer}"
    assert direct[0] == f"<u>{pairs[0].question}</u>{pairs[0].short_answer}"
    cot, direct = contrast_texts(load_pairs(DEFAULT_PAIRS, "prompt", n=3), "prompt", chat)
    assert len(cot) == 3 and cot[0].endswith(f"{COT_SUFFIX}</u>") and direct[0].endswith(f"{DIRECT_SUFFIX}</u>")

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "long_answer": "a b", "short_answer": "b"}\n{"question": "only"}\n')
    with pytest.raises(DataError, match="bad.jsonl:2"):
        load_pairs(bad, "still2")
    assert len(load_pairs(bad, "prompt")) == 2


# -- extraction --------------------------------------------------------------------------------
def test_extraction_reads_the_decoder_layer_output_not_the_final_norm(llm):
    model, tokenizer = llm
    texts = ["The answer is (B).", "Let's think step by step. First, second, third"]
    states = llm_states(model, tokenizer, texts, [0, 1], batch_size=1)
    for i, text in enumerate(texts):
        out = model(**tokenizer([text], return_tensors="pt"), output_hidden_states=True)
        assert torch.allclose(states[0][i], out.hidden_states[1][0, -1], atol=1e-5)
        # hidden_states[-1] is after the final norm; the hooked last layer is before it.
        assert not torch.allclose(states[1][i], out.hidden_states[2][0, -1], atol=1e-3)
        assert torch.allclose(model.model.norm(states[1][i]), out.hidden_states[2][0, -1], atol=1e-5)


def test_batched_extraction_equals_one_by_one(llm):
    model, tokenizer = llm
    texts = [t for p in load_pairs(DEFAULT_PAIRS, "still2", n=4) for t in (p.question, p.long_answer)]
    one = llm_states(model, tokenizer, texts, [1], batch_size=1)[1]
    batched = llm_states(model, tokenizer, texts, [1], batch_size=8)[1]
    assert torch.allclose(one, batched, atol=1e-4)


def test_answer_end_extraction_reads_the_last_answer_token(llm_dir, llm, tmp_path):
    """--extract-at answer-end: the user turn with the generation prompt, then the answer; its last token."""
    model, tokenizer = llm
    path, meta = extract(str(llm_dir), DEFAULT_PAIRS, [0], tmp_path / "a.safetensors", n=3, device="cpu",
                         dtype="float32", extract_at="answer-end")
    assert meta["extract_at"] == "answer-end"

    def state(question, answer):
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                               tokenize=False)
        ids = tokenizer(prompt + answer, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            return model(input_ids=ids, output_hidden_states=True).hidden_states[1][0, -1]

    pairs = load_pairs(DEFAULT_PAIRS, "still2", n=3)
    expected = torch.stack([state(p.question, p.long_answer) - state(p.question, p.short_answer) for p in pairs])
    assert torch.allclose(load_directions(path).directions[0], expected, atol=1e-4)
    with pytest.raises(ValueError, match="extract-at"):
        extract(str(llm_dir), DEFAULT_PAIRS, [0], tmp_path / "b.safetensors", n=3, extract_at="middle")


def test_vector_file_round_trips(llm_dir, vector_file, llm):
    loaded = load_directions(vector_file)
    assert loaded.layers == [0, 1] and loaded.num_layers == 2 and loaded.hidden_size == 48
    meta = loaded.metadata
    assert meta["model"] == str(llm_dir) and meta["n"] == "12" and meta["contrast"] == "still2"
    assert meta["data_sha256"] == file_sha256(DEFAULT_PAIRS)
    # Per-sample directions are exactly h(long) - h(short) where the reference reads them: computed here
    # from transformers alone, one text at a time (no padding, no hooks): the whole exchange through the
    # chat template, the output of decoder layer 0 (= hidden_states[1]) at the last (end-of-turn) token.
    model, tokenizer = llm

    def state(question, answer):
        text = tokenizer.apply_chat_template([{"role": "user", "content": question},
                                              {"role": "assistant", "content": answer}], tokenize=False)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            return model(input_ids=ids, output_hidden_states=True).hidden_states[1][0, -1]

    pairs = load_pairs(DEFAULT_PAIRS, "still2", n=12)
    expected = torch.stack([state(p.question, p.long_answer) - state(p.question, p.short_answer) for p in pairs])
    assert loaded.directions[0].shape == (12, 48) and meta["extract_at"] == "turn-end"
    assert torch.allclose(loaded.directions[0], expected, atol=1e-4)
    assert torch.allclose(loaded.mean(1), loaded.directions[1].mean(0), atol=1e-6)
    assert [p.name for p in vector_file.parent.iterdir()] == [vector_file.name], "no temporary file left"
    with pytest.raises(ValueError, match="no layer 5"):
        loaded.pick_layer(5)
    with pytest.raises(ValueError, match="--source-layer"):
        loaded.pick_layer(None)
    not_ours = vector_file.parent / "other.safetensors"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(not_ours))
    with pytest.raises(ValueError, match="not an L2V-CoT direction file"):
        load_directions(not_ours)


# -- injection ---------------------------------------------------------------------------------
def _capture_around(layer):
    """Hooks that see a layer's output before and after the steering hook (registered around it)."""
    seen = {"before": [], "after": []}
    first = layer.register_forward_hook(lambda m, a, out: seen["before"].append(out.clone()))
    return seen, first


def test_steer_hidden_keeps_the_norm_and_adds_the_direction():
    h = torch.randn(2, 5, 64) * 7
    v = unit(64)
    select = torch.tensor([[True, False, True, False, False], [False] * 4 + [True]])
    out = steer_hidden(h, v, 3.0, select)
    moved = h + 3.0 * v
    expected = moved * h.norm(dim=-1, keepdim=True) / moved.norm(dim=-1, keepdim=True)
    assert torch.allclose(out[select], expected[select], atol=1e-5)
    assert torch.allclose(out[select].norm(dim=-1), h[select].norm(dim=-1), rtol=1e-6)
    assert torch.equal(out[~select], h[~select]), "positions not steered are untouched, bit for bit"
    assert torch.equal(steer_hidden(h, v, 0.0, torch.ones(2, 5, dtype=torch.bool)), h)
    bf16 = steer_hidden(h.bfloat16(), v, 3.0, select)
    assert bf16.dtype == torch.bfloat16 and torch.equal(bf16[~select], h.bfloat16()[~select])


@pytest.mark.parametrize("positions", ["first", "all"])
def test_injection_positions_and_norms_in_a_padded_batch(backbone, positions):
    layers, index = backbone.decoder_layers(), 1
    inputs = backbone.build_inputs([[], []], ["hi", "a much longer prompt with many more tokens in it"])
    mask = inputs["attention_mask"]
    assert mask[0, 0] == 0, "the short row is left padded"
    seen, pre = _capture_around(layers[index])
    v = unit(backbone.hidden_size)
    try:
        with steering(backbone.language_model, layers, {index: v}, 4.0, positions) as stats:
            post = layers[index].register_forward_hook(lambda m, a, out: seen["after"].append(out.clone()))
            try:
                backbone.prefill(inputs)
            finally:
                post.remove()
    finally:
        pre.remove()
    before, after = seen["before"][0], seen["after"][0]
    changed = (before != after).any(-1)
    if positions == "first":
        first_real = mask.int().argmax(-1)
        expected = torch.zeros_like(changed)
        expected[torch.arange(2), first_real] = True
        assert torch.equal(changed, expected), "only the first real token of each row"
        assert stats["steered"][index] == 2
    else:
        assert changed[mask.bool()].all(), "every real position (a pad's zero state stays zero: its norm is kept)"
    assert torch.allclose(after.norm(dim=-1), before.norm(dim=-1), rtol=1e-5)


def test_first_position_with_kv_cache_steers_every_generated_token(backbone):
    """Cached generation under "first" equals one cache-free pass steering the first prompt token and
    every generated token: each decode step is a forward call of one position."""
    layers, index, alpha, n_new = backbone.decoder_layers(), 0, 6.0, 5  # layer 0: later layers read it
    v = unit(backbone.hidden_size, seed=3)
    inputs = backbone.build_inputs([[]], ["Which shape is shown?"])
    with steering(backbone.language_model, layers, {index: v}, alpha, "first") as stats:
        state, _ = backbone.prefill(inputs)
        tokens, cached_logits = [], [state.logits[0]]
        for _ in range(n_new):
            tokens.append(int(state.logits[0].argmax()))
            backbone.append(state, backbone.embed_tokens(torch.tensor([[tokens[-1]]])))
            cached_logits.append(state.logits[0])
    assert stats["steered"][index] == 1 + n_new, "one position per forward call"
    prompt_len = inputs["input_ids"].shape[1]
    ids = torch.cat([inputs["input_ids"], torch.tensor([tokens])], dim=1)
    select = torch.zeros(ids.shape, dtype=torch.bool)
    select[0, 0] = True
    select[0, prompt_len:] = True
    hook = layers[index].register_forward_hook(lambda m, a, out: steer_hidden(out, v, alpha, select))
    try:
        positions = backbone.text_positions(torch.zeros(1, dtype=torch.long), ids.shape[1])
        result = backbone.forward_embeds(backbone.embed_tokens(ids), torch.ones_like(ids), positions)
    finally:
        hook.remove()
    assert torch.allclose(torch.stack(cached_logits), result.logits[0, prompt_len - 1:], atol=1e-4)


def test_steered_batch_equals_one_by_one_and_hooks_are_removed(backbone):
    prompts = ["hi", "Let's think step by step about the blue circle"]
    layers = backbone.decoder_layers()
    v = unit(backbone.hidden_size, seed=1)
    inputs = backbone.build_inputs([[]], [prompts[0]])
    plain_logits = backbone.prefill(inputs)[0].logits
    with steering(backbone.language_model, layers, {0: v, 1: v}, 8.0, "first"):
        batched = backbone.generate([[], []], prompts, 6)
        alone = [backbone.generate([[]], [p], 6)[0] for p in prompts]
        steered_logits = backbone.prefill(inputs)[0].logits
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]
    assert not torch.allclose(steered_logits, plain_logits), "the injection changes the model while active"
    assert torch.equal(backbone.prefill(inputs)[0].logits, plain_logits), "identical to unsteered afterwards"
    assert all(not layer._forward_hooks for layer in layers) and not backbone.language_model._forward_pre_hooks


def test_layer_mapping_by_relative_depth():
    assert [map_layer(l, 64, 28) for l in (0, 31, 63)] == [0, 13, 27]
    assert map_layer(1, 2, 4) == 3 and map_layer(0, 1, 28) == 0
    with pytest.raises(ValueError, match="outside"):
        map_layer(64, 64, 28)


# -- the method --------------------------------------------------------------------------------
def test_method_transfers_the_mean_direction_and_maps_layers(backbone, vector_file):
    method = L2VCoT(vector=str(vector_file), source_layer=1, cutoff=10, resample="lmn")
    method.prepare(backbone)
    mean = load_directions(vector_file).mean(1)
    assert torch.allclose(method.direction, transfer(mean, backbone.hidden_size, 10, "lmn"))
    assert method.direction.shape == (backbone.hidden_size,) and abs(float(method.direction.norm()) - 1) < 1e-6
    assert method.target_layer == map_layer(1, 2, len(backbone.decoder_layers()))
    config = method.config()
    assert config["vector_sha256"] == file_sha256(vector_file) and config["layer_resolved"] == method.target_layer
    interp = L2VCoT(vector=str(vector_file), source_layer=1, cutoff=10, resample="interp", layer="0")
    interp.prepare(backbone)
    assert interp.target_layer == 0 and not torch.allclose(interp.direction, method.direction)
    assert resolve_layer("-1", load_directions(vector_file), 1, 4) == 3


def test_bad_options_fail_before_the_model_loads(vector_file):
    from methods.l2v_cot import method, spectral

    assert method.TRANSFER_METHODS == spectral.TRANSFER_METHODS
    with pytest.raises(ValueError, match="needs --vector"):
        L2VCoT()
    with pytest.raises(ValueError, match="--resample"):
        L2VCoT(vector=str(vector_file), resample="fft")
    with pytest.raises(ValueError, match="--layer"):
        L2VCoT(vector=str(vector_file), layer="middle")
    with pytest.raises(ValueError, match="--source-layer"):
        L2VCoT(vector=str(vector_file))
    with pytest.raises(ValueError, match="pass --cutoff below 24"):
        check_cutoff(200, 48, 64)
    assert check_cutoff(-1, 48, 64) is None and check_cutoff(23, 48, 64) == 23


def test_alpha_zero_is_the_direct_baseline_and_a_strong_alpha_changes_answers(backbone, vector_file, images):
    from harness.api import METHODS

    queries = [Query(images=images[0], question="Question: What colour?\n(A) red\n(B) blue", choices=["red", "blue"]),
               Query(images=images[1], question="Question: How many sides?", choices=[])]
    direct = METHODS.get("direct")(max_new_tokens=8)(backbone, queries)
    zero = L2VCoT(vector=str(vector_file), source_layer=1, cutoff=10, alpha=0.0, prompt="direct",
                  max_new_tokens=8)(backbone, queries)
    assert [o.text for o in zero] == [o.text for o in direct]


def test_steered_first_token_equals_a_hand_made_injection(backbone, vector_file, images):
    """The first token under steering equals the argmax of one forward whose layer-0 output is changed by
    a hook written here, with the direction computed here by numpy: h' = (h + a v) |h| / |h + a v| at
    every position, v the unit low-passed, frequency-resampled mean direction."""
    import numpy as np

    query = Query(images=images[0], question="Question: What colour?\n(A) red\n(B) blue", choices=["red", "blue"])
    mean = load_directions(vector_file).mean(1).double().numpy()
    n, m, k = len(mean), backbone.hidden_size, 10
    spectrum = np.fft.rfft(mean)[: k + 1]
    v = np.fft.irfft(np.concatenate([spectrum, np.zeros(m // 2 + 1 - (k + 1))]), n=m)
    v = torch.tensor(v / np.linalg.norm(v), dtype=torch.float32)
    method = L2VCoT(vector=str(vector_file), source_layer=1, cutoff=10, alpha=1.0, layer="0", max_new_tokens=1)
    inputs = backbone.build_inputs([query.images], [method.prompt(query)])

    def first_token(alpha):
        def hook(_module, _args, output):
            h = output[0] if isinstance(output, tuple) else output
            steered = (h + alpha * v) * h.norm(dim=-1, keepdim=True) / (h + alpha * v).norm(dim=-1, keepdim=True)
            return (steered, *output[1:]) if isinstance(output, tuple) else steered
        handle = backbone.decoder_layers()[0].register_forward_hook(hook)
        try:
            with torch.no_grad():
                return int(backbone.model(**inputs).logits[0, -1].argmax())
        finally:
            handle.remove()

    plain = first_token(0.0)
    alpha = next((a for a in (2.0, 8.0, 32.0, 128.0) if first_token(a) != plain), None)
    assert alpha is not None, "some strength changes the first token: the comparison has teeth"
    steered = L2VCoT(vector=str(vector_file), source_layer=1, cutoff=10, alpha=alpha, steer="all", layer="0",
                     max_new_tokens=1)(backbone, [query])[0]
    assert steered.text == backbone.tokenizer.decode([first_token(alpha)], skip_special_tokens=True)
    assert steered.generated_tokens == 1


# -- commands ----------------------------------------------------------------------------------
def test_extract_run_and_sweep_commands(llm_dir, tiny_model_dirs, m3cot_data, tmp_path, capsys):
    from harness.cli import main
    from harness.run.store import Store

    db = f"sqlite:///{tmp_path / 'h.db'}"
    vec = tmp_path / "v.safetensors"
    assert main(["l2v", "extract", "--llm", str(llm_dir), "--layers", "1", "--out", str(vec), "--n", "6",
                 "--device", "cpu"]) == 0
    assert "layers 1 of 2, width 48, 6 pairs" in capsys.readouterr().out
    model = str(tiny_model_dirs["qwen2-vl"])
    common = ["--bench", "m3cot", "--model", model, "--data", m3cot_data, "--vector", str(vec), "--db", db,
              "--no-progress", "--max-new-tokens", "6"]
    assert main(["run", "--method", "l2v-cot", *common, "--alpha", "0.5", "--layer", "1", "--cutoff", "8",
                 "--resample", "interp", "--steer", "all"]) == 0
    (run,) = Store(db, read_only=True).runs()
    config = run["method_config"]
    assert (config["alpha"], config["layer"], config["cutoff"], config["resample"]) == (0.5, "1", 8, "interp")
    assert config["vector_sha256"] == file_sha256(vec) and run["status"] == "finished" and run["n_samples"] == 6

    assert main(["run", "--method", "l2v-cot", *common, "--cutoff", "200"]) == 2
    assert "pass --cutoff below 24" in capsys.readouterr().err

    sweep = ["l2v", "sweep", *common, "--alphas", "0.2,0.8", "--layers", "0,auto", "--cutoffs", "8",
             "--batch-size", "3", "--json"]
    assert main(sweep) == 0
    out = capsys.readouterr().out
    first = json.loads(out[out.index('{\n  "grid"'):])["grid"]
    assert [p["new_samples"] for p in first] == [6, 6, 6, 6]
    runs = [r for r in Store(db, read_only=True).runs() if r["method"] == "l2v-cot"]
    grid = {(r["method_config"]["alpha"], r["method_config"]["layer"]) for r in runs}
    assert {(0.2, "0"), (0.8, "0"), (0.2, "auto"), (0.8, "auto")} <= grid and len(runs) == 5
    assert main(sweep) == 0, "a re-run resumes every point"
    out = capsys.readouterr().out
    again = json.loads(out[out.index('{\n  "grid"'):])["grid"]
    assert [p["new_samples"] for p in again] == [0, 0, 0, 0]
    assert [p["run_id"] for p in again] == [p["run_id"] for p in first]
    assert len([r for r in Store(db, read_only=True).runs() if r["method"] == "l2v-cot"]) == 5


@pytest.mark.parametrize("family", ["qwen2-vl", "llava"])
def test_extract_from_a_vlms_own_text_side_equals_its_hidden_states(tiny_model_dirs, tmp_path, family):
    """`harness l2v extract --vlm`: the direction file's per-pair vectors equal h(CoT) - h(direct) read
    independently — each text alone through the model's own forward (``output_hidden_states``; entry
    L + 1 is decoder layer L's output), no padding, no hooks."""
    import torch
    from safetensors.torch import load_file

    from harness.backbones import load_backbone
    from methods.l2v_cot.extract import COT_SUFFIX, DEFAULT_PAIRS, DIRECT_SUFFIX, extract, load_pairs

    model_dir = str(tiny_model_dirs[family])
    path, meta = extract(model_dir, DEFAULT_PAIRS, [0], tmp_path / "v.safetensors", n=3, contrast="prompt",
                         batch_size=2, device="cpu", dtype="float32", vlm=True)
    assert meta["source"] == "vlm-text-side"
    got = load_file(str(path))["directions.0"]
    bb = load_backbone(model_dir, device="cpu", dtype="float32")
    assert len(bb.decoder_layers()) > 1  # layer 0 is not the last: its hidden state is not the final-normed one

    def state(text: str):
        ids = bb.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            return bb.model(input_ids=ids, output_hidden_states=True).hidden_states[1][0, -1].float()

    want = torch.stack([state(bb.chat_text(0, f"{p.question}\n{COT_SUFFIX}"))
                        - state(bb.chat_text(0, f"{p.question}\n{DIRECT_SUFFIX}"))
                        for p in load_pairs(DEFAULT_PAIRS, "prompt", 3)])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_extract_from_a_vlm_refuses_the_turn_end_it_cannot_read(tiny_model_dirs, tmp_path, capsys):
    from harness.cli import main

    assert main(["l2v", "extract", "--llm", str(tiny_model_dirs["qwen2-vl"]), "--vlm", "--layers", "0",
                 "--out", str(tmp_path / "v.safetensors")]) == 2
    assert "--extract-at answer-end" in capsys.readouterr().err
