"""The registered ``l2v-cot`` method: one ordinary generation of the VLM with the LLM's direction injected.

The prompt is the benchmark's own text, as-is (``--prompt vlmeval``: VLMEvalKit's ``build_prompt`` for its
benchmarks, which is what ``Query.question`` holds), or that text plus the direct-answer instruction of
the ``direct`` baseline (``--prompt direct``, what every run made before the option existed used).

``prepare(backbone)`` reads the direction file, takes the mean direction of one source layer,
low-passes and resamples it to the VLM's width (``spectral.transfer``: low-pass k, LMN or
interpolation, unit norm) and picks the VLM layer (given, or mapped by relative depth). Each batch
then generates under :func:`inject.steering`, whose hooks are removed when the batch is done.
"""
from __future__ import annotations

import dataclasses

from harness.api import MethodOutput, Query, register_method
from harness.api.hashing import file_sha256

from ..baselines import DirectAnswer, final_answer_segment
from .inject import STEER, map_layer, steering
from .vectors import DirectionFile, load_directions

# spectral.py imports torch: loaded inside the functions, so `harness list` stays instant.
TRANSFER_METHODS = ("lmn", "interp")  # = spectral.TRANSFER_METHODS (a test checks)
PROMPTS = ("vlmeval", "direct")


def check_cutoff(cutoff: int, source_width: int, target_width: int) -> int | None:
    """The low-pass ``k`` for :func:`transfer`: ``cutoff``, or None (full band) for ``-1``.

    A cutoff at or above half the smaller width would keep every frequency the transfer can carry,
    i.e. silently do no low-pass (the reference's 200 on a 48-wide test model, say): that is an
    error naming the largest meaningful value, never a quiet clamp.
    """
    if cutoff == -1:
        return None
    if cutoff < 0:
        raise ValueError(f"--cutoff must be >= 0, or -1 for no low-pass; got {cutoff}")
    limit = min(source_width, target_width) // 2
    if cutoff >= limit:
        raise ValueError(f"--cutoff {cutoff} is no low-pass for a {source_width} -> {target_width} transfer "
                         f"(frequencies above {limit - 1} are not carried anyway); pass --cutoff below {limit}, "
                         "or --cutoff -1 for no low-pass")
    return cutoff


def transferred_direction(vectors: DirectionFile, source_layer: int, width: int, cutoff: int, resample: str,
                          band: str = "low", vector_norm: str = "unit"):
    """The direction ``v̂`` of width ``width`` from the file's mean direction at ``source_layer``
    (unit norm unless ``vector_norm="raw"``; the band above the cutoff with ``band="high"``)."""
    from .spectral import transfer

    k = check_cutoff(cutoff, vectors.hidden_size, width)
    if band == "high" and k is None:
        raise ValueError("--band high keeps the frequencies above --cutoff: pass a cutoff, not -1")
    return transfer(vectors.mean(source_layer), width, k, method=resample, band=band, norm=vector_norm)


def resolve_layer(layer: str | int, vectors: DirectionFile, source_layer: int, depth: int) -> int:
    """``layer`` as an index into ``depth`` layers; ``"auto"`` maps the source layer by relative depth."""
    if str(layer) == "auto":
        return map_layer(source_layer, vectors.num_layers, depth)
    try:
        index = int(layer)
    except ValueError:
        raise ValueError(f"--layer must be a decoder layer index or 'auto', got {layer!r}") from None
    resolved = index + depth if index < 0 else index
    if not 0 <= resolved < depth:
        raise ValueError(f"--layer {layer} is out of range: the model has {depth} decoder layers (0..{depth - 1})")
    return resolved


@register_method("l2v-cot")
class L2VCoT(DirectAnswer):
    """L2V-CoT (arXiv 2511.17910): training-free injection of an LLM's low-pass CoT direction."""

    description = "L2V-CoT: the LLM's low-pass CoT direction injected into a decoder layer (h + a*v, norm kept)"

    @dataclasses.dataclass
    class Options:
        vector: str = ""  # direction file written by `harness l2v extract`
        alpha: float = 0.5  # injection strength (paper grid 0.1..0.9)
        layer: str = "auto"  # VLM decoder layer index, or "auto": the source layer by relative depth
        source_layer: int = -1  # which layer of the vector file; -1: the file's only one
        cutoff: int = 200  # low-pass: highest frequency kept (reference 200; 900 for LLaVA-NeXT-8B); -1: none
        resample: str = "lmn"  # "lmn" (frequency domain, the paper's) or "interp" (the ablation)
        steer: str = "first"  # which positions: "first" (the reference's: first of every forward call) or "all"
        band: str = "low"  # "low" (the paper's method) or "high" (its ablation: only frequencies above the cutoff)
        # "unit" (ours: alpha alone sets the strength) or "raw" (the reference's: the low-passed mean at its
        # own scale, so the reference's alphas apply as they are)
        vector_norm: str = "unit"
        # "vlmeval": the benchmark's question text as-is (VLMEvalKit's build_prompt, as the reference evaluates);
        # "direct": the direct-answer instruction appended (the runs made before this option), which asks the
        # model not to reason, the opposite of what the injected direction is meant to elicit
        prompt: str = "vlmeval"
        max_new_tokens: int = 512  # room to reason: the `cot` baseline's budget, so token costs compare
        instruction: str = DirectAnswer.Options.instruction  # these two: --prompt direct only
        open_instruction: str = DirectAnswer.Options.open_instruction

    def __init__(self, **options):
        super().__init__(**options)
        o = self.options
        if not o.vector:
            raise ValueError("l2v-cot needs --vector FILE (a direction file from `harness l2v extract`)")
        if o.resample not in TRANSFER_METHODS:
            raise ValueError(f"--resample must be one of: {', '.join(TRANSFER_METHODS)}; got {o.resample!r}")
        if o.band not in ("low", "high") or o.vector_norm not in ("unit", "raw"):
            raise ValueError(f"--band must be low or high and --vector-norm unit or raw; got {o.band!r}, "
                             f"{o.vector_norm!r}")
        if o.prompt not in PROMPTS:
            raise ValueError(f"--prompt must be vlmeval (the benchmark's own prompt, as-is) or direct (the "
                             f"direct-answer instruction appended); got {o.prompt!r}")
        if o.prompt != "direct" and (o.instruction != DirectAnswer.Options.instruction
                                     or o.open_instruction != DirectAnswer.Options.open_instruction):
            raise ValueError("--instruction / --open-instruction are only appended with --prompt direct: "
                             "add --prompt direct, or leave them out")
        if o.steer not in STEER:
            raise ValueError(f"--steer must be one of: {', '.join(STEER)}; got {o.steer!r}")
        if str(o.layer) != "auto":
            try:
                int(o.layer)
            except ValueError:
                raise ValueError(f"--layer must be a decoder layer index or 'auto', got {o.layer!r}") from None
        self.vectors = load_directions(o.vector)  # small: read now so bad files fail before the model loads
        self.vector_sha256 = file_sha256(o.vector)
        self.source_layer = self.vectors.pick_layer(None if o.source_layer < 0 else o.source_layer)
        self.target_layer: int | None = None
        self.direction = None
        self._prepared_for = None

    def prepare(self, backbone) -> None:
        depth = len(backbone.decoder_layers())
        self.target_layer = resolve_layer(self.options.layer, self.vectors, self.source_layer, depth)
        self.direction = transferred_direction(self.vectors, self.source_layer, backbone.hidden_size,
                                               self.options.cutoff, self.options.resample, self.options.band,
                                               self.options.vector_norm)
        self._prepared_for = backbone

    def config(self) -> dict:
        config = super().config()
        for key, default in (("band", "low"), ("vector_norm", "unit")):  # runs before these options keep their key
            if config[key] == default:
                del config[key]
        if config["prompt"] == "direct":
            del config["prompt"]  # what runs before the option used: `--prompt direct` runs keep their key
        else:
            del config["instruction"], config["open_instruction"]  # not part of the prompt
        config["vector_sha256"] = self.vector_sha256
        config["vector_source"] = {k: self.vectors.metadata.get(k) for k in ("model", "num_layers", "hidden_size",
                                                                             "n", "contrast", "data_sha256")}
        config["source_layer_resolved"] = self.source_layer
        if self.target_layer is not None:
            config["layer_resolved"] = self.target_layer
        return config

    def prompt(self, query: Query) -> str:
        return super().prompt(query) if self.options.prompt == "direct" else query.question

    def answer_of(self, text: str) -> str:
        return final_answer_segment(text)  # a steered model may reason before answering

    def run(self, backbone, queries: list[Query]) -> list[MethodOutput]:
        if self._prepared_for is not backbone:
            self.prepare(backbone)
        with steering(backbone.language_model, backbone.decoder_layers(), {self.target_layer: self.direction},
                      self.options.alpha, self.options.steer):
            return super().run(backbone, queries)
