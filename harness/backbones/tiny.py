"""Tiny random checkpoints for tests, CI and the demo: no network, seconds to build.

``write_tiny_model(family, out_dir)`` builds a randomly initialised model of the family from a small
config, a byte-level BPE tokenizer trained on the spot with the family's special tokens and chat
template, and the family's real processor class, and saves all three with ``save_pretrained``. They
are then loaded through exactly the path a real checkpoint takes (``harness.backbones.load_backbone``).
Chameleon's tokenizer also holds one ``IMGIMG…`` token per VQ code (what its vocabulary mapping
needs) and, like Chameleon-7B's, no chat template and a BOS in front of every text.
Sizes are settable so the same builder gives a ~50 M-parameter model for overhead benchmarks.
"""
from __future__ import annotations

from pathlib import Path

FAMILIES = ("qwen2-vl", "llava", "qwen2", "chameleon")

# ChatML, as Qwen2-VL and Qwen2-based LLaVA checkpoints use it. The image placeholder is the
# family's: Qwen2-VL wraps <|image_pad|> in vision markers, LLaVA uses a bare <image>.
_CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}IMAGE_PLACEHOLDER"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN2_VL_TEMPLATE = _CHATML.replace("IMAGE_PLACEHOLDER", "<|vision_start|><|image_pad|><|vision_end|>")
LLAVA_TEMPLATE = _CHATML.replace("IMAGE_PLACEHOLDER", "<image>\n")

_SPECIAL = {
    "qwen2-vl": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>"],
    "llava": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"],
    "qwen2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
}

_CORPUS = """
Question: What colour is the shape in the image? Options: (A) red (B) green (C) blue (D) yellow
Which shape is shown? circle square triangle rectangle. The answer is (B).
Let's think step by step. The image shows a blue circle on a white background, so the answer is (C).
Answer with the option's letter from the given choices directly. Explain the reasoning.
Hint: Context: Rationale: Solution: First, second, third, therefore, because, so the answer is.
[Question] [Choices] [Answer] [Rationale] science commonsense mathematics physics biology
How many objects are there? one two three four five six seven eight nine ten zero yes no
The quick brown fox jumps over the lazy dog. A B C D E F a b c d e f 0 1 2 3 4 5 6 7 8 9
""" * 4


def _train_tokenizer(family: str, vocab_size: int, chat_template: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = _SPECIAL[family]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,  # it prints blank lines on stdout even when not a terminal
    )
    tokenizer.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=specials[1:],
        padding_side="left",
        chat_template=chat_template,
    )
    return fast


# Chameleon's special tokens, named as in Chameleon-7B's vocabulary: BOS/EOS/padding, the chat-mode
# separator the processor appends to every prompt, the image placeholder and the image begin/end markers.
CHAMELEON_SPECIAL = {"bos": "<s>", "eos": "</s>", "pad": "<pad>", "sep": "<reserved08706>", "image": "<image>",
                     "boi": "<racm3:break>", "eoi": "<eoss>"}


def chameleon_code_token(code: int) -> str:
    """The vocabulary name of VQ code ``code``: ``IMGIMG`` + its decimal digits as letters (0→A … 9→J) +
    ``Z``, the names ``ChameleonImageVocabularyMapping`` parses (e.g. 12 → ``IMGIMGBCZ``)."""
    return "IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z"


def _chameleon_tokenizer(vocab_size: int, codes: int):
    """A byte-level BPE tokenizer with Chameleon's special tokens, one token per VQ code, and a BOS in
    front of every text (as Chameleon-7B's tokenizer adds); no chat template, like Chameleon-7B."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    names = CHAMELEON_SPECIAL
    specials = [names[k] for k in ("pad", "bos", "eos", "sep", "image", "boi", "eoi")]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials + [chameleon_code_token(c) for c in range(codes)],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    bos = names["bos"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.token_to_id(bos))])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=bos, eos_token=names["eos"], pad_token=names["pad"],
        sep_token=names["sep"], additional_special_tokens=[names["image"], names["boi"], names["eoi"]],
        padding_side="left",
    )


def chameleon_parts(text: dict, tokenizer, *, image_size: int = 32, codes: int = 64):
    """A tiny Chameleon config and processor over ``text`` (the shared text keys) and ``tokenizer``.

    The VQ-VAE halves the resolution at each level after the first: 4 levels take 32 px to a 4×4 grid,
    16 image tokens per image (Chameleon-7B: 512 px, 6 levels, 32×32 = 1024). ``codes`` codebook
    entries, each mapped to its ``IMGIMG…`` token through ``vocabulary_map`` (the tokenizer's vocabulary,
    as in Chameleon-7B's config).
    """
    from transformers import ChameleonConfig, ChameleonImageProcessorPil, ChameleonProcessor

    levels = 4
    grid = image_size // 2 ** (levels - 1)
    vq = dict(embed_dim=8, num_embeddings=codes, latent_channels=8, resolution=image_size, in_channels=3,
              base_channels=32,  # the VQ-VAE's GroupNorm has 32 groups
              channel_multiplier=[1] * levels, num_res_blocks=1, attn_resolutions=None)
    config = ChameleonConfig(**{k: v for k, v in text.items() if k != "bos_token_id"},
                             bos_token_id=tokenizer.bos_token_id, vq_config=vq,
                             vocabulary_map=tokenizer.get_vocab())
    image_processor = ChameleonImageProcessorPil(size={"shortest_edge": image_size},
                                                 crop_size={"height": image_size, "width": image_size})
    processor = ChameleonProcessor(image_processor=image_processor, tokenizer=tokenizer, image_seq_length=grid * grid)
    return config, processor


def qwen2_vl_config(tokenizer, text: dict, vision: dict):
    """A Qwen2-VL config over ``text`` (Qwen2 keys) and ``vision`` (the tower's keys, without its output
    width, which is the text width), with the tokenizer's image and video token ids."""
    from transformers import Qwen2VLConfig

    # M-RoPE splits head_dim/2 rotary frequencies into (temporal, height, width) sections.
    half = text["hidden_size"] // text["num_attention_heads"] // 2
    section = [half - 2 * (half // 4), half // 4, half // 4]
    return Qwen2VLConfig(
        text_config=dict(**text, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                  "mrope_section": section}),
        vision_config=dict(**vision, hidden_size=text["hidden_size"], in_channels=3),
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        tie_word_embeddings=False,
    )


def _text_config_kwargs(tokenizer, hidden_size: int, layers: int, heads: int, kv_heads: int) -> dict:
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        # Larger than the usual 0.02 so attention is peaked and positions visibly matter in tests.
        initializer_range=0.2,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
    )


def write_tiny_model(
    family: str,
    out_dir: str | Path,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    vocab_size: int = 600,
    seed: int = 0,
) -> Path:
    """Write a tiny random ``family`` checkpoint (model, tokenizer, processor) to ``out_dir``."""
    import torch
    from transformers import GenerationConfig

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of: {', '.join(FAMILIES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if family == "chameleon":
        tokenizer = _chameleon_tokenizer(vocab_size, codes=64)
    else:
        template = {"qwen2-vl": QWEN2_VL_TEMPLATE, "llava": LLAVA_TEMPLATE, "qwen2": _CHATML}[family]
        tokenizer = _train_tokenizer(family, vocab_size, template)
    text = _text_config_kwargs(tokenizer, hidden_size, layers, heads, kv_heads)

    if family == "chameleon":
        from transformers import ChameleonForConditionalGeneration

        config, processor = chameleon_parts(text, tokenizer)
        model = ChameleonForConditionalGeneration(config)
    elif family == "qwen2-vl":
        from transformers import (Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor,
                                  Qwen2VLProcessor, Qwen2VLVideoProcessor)

        config = qwen2_vl_config(tokenizer, text, dict(depth=1, embed_dim=32, num_heads=2, mlp_ratio=2, patch_size=14,
                                                       spatial_merge_size=2, temporal_patch_size=2))
        model = Qwen2VLForConditionalGeneration(config)
        # 56x56..112x112 pixels → 4..16 merged image tokens: small prompts, real 2-D grids.
        image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112, patch_size=14,
                                                merge_size=2, temporal_patch_size=2)
        video_processor = Qwen2VLVideoProcessor(min_pixels=56 * 56, max_pixels=112 * 112, patch_size=14,
                                                merge_size=2, temporal_patch_size=2)
        processor = Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                     video_processor=video_processor, chat_template=template)
    elif family == "llava":
        from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlavaConfig,
                                  LlavaForConditionalGeneration, LlavaProcessor, Qwen2Config)

        vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=56, patch_size=14, projection_dim=32)
        config = LlavaConfig(
            vision_config=vision,
            text_config=Qwen2Config(**text),
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
            projector_hidden_act="gelu",
            tie_word_embeddings=False,
        )
        model = LlavaForConditionalGeneration(config)
        image_processor = CLIPImageProcessor(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
        processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                                   vision_feature_select_strategy="default", chat_template=template,
                                   num_additional_image_tokens=1)
    else:  # text-only source LLM (L2V-CoT's LLM side)
        from transformers import Qwen2Config, Qwen2ForCausalLM

        model = Qwen2ForCausalLM(Qwen2Config(**text))
        processor = None

    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if processor is not None:
        processor.save_pretrained(out)
    return out
