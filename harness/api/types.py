"""The few records that flow through the harness: benchmark → runner → method → store.

A :class:`Sample` is one benchmark item with its images still *undecoded* (bytes, base64, a path),
so a run streams the data set and decodes images per batch. A :class:`Query` is what a method
sees, the same tiny message VLMEvalKit's models speak: images plus one text. A method answers each
query with a :class:`MethodOutput`.
"""
from __future__ import annotations

import base64
import binascii
import io
import os
from dataclasses import dataclass, field
from typing import Any


class BadImage(ValueError):
    """An image that cannot be decoded; the sample is stored as an error and the run goes on."""


def decode_image(ref: Any):
    """Decode one image reference into an RGB ``PIL.Image``.

    Accepts a PIL image, raw bytes, a ``datasets`` image dict (``{"bytes", "path"}``), a file path
    or a base64 string (VLMEvalKit TSVs).
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(ref, Image.Image):
        return ref.convert("RGB")
    if isinstance(ref, dict):
        ref = ref.get("bytes") or ref.get("path")
    try:
        if isinstance(ref, (bytes, bytearray)):
            data = bytes(ref)
        elif isinstance(ref, str) and len(ref) < 4096 and os.path.exists(ref):
            with open(ref, "rb") as fh:
                data = fh.read()
        elif isinstance(ref, str):
            data = base64.b64decode(ref, validate=True)
        else:
            raise BadImage(f"unsupported image reference of type {type(ref).__name__}")
        image = Image.open(io.BytesIO(data))
        image.load()
        return image.convert("RGB")
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as exc:
        if isinstance(exc, BadImage):
            raise
        raise BadImage(f"cannot decode image: {exc}") from None


@dataclass
class Sample:
    """One benchmark item. ``uid`` is unique and stable within the benchmark's data."""

    uid: str
    question: str
    gold: str
    choices: list[str] = field(default_factory=list)
    image_refs: list[Any] = field(default_factory=list)
    context: str = ""
    category: str = ""
    meta: dict = field(default_factory=dict)  # JSON-serialisable extra fields (domain, topic, ...)

    def images(self) -> list:
        return [decode_image(ref) for ref in self.image_refs]


@dataclass
class Query:
    """What a method answers: decoded images and the benchmark's formatted question text."""

    images: list
    question: str
    choices: list[str] = field(default_factory=list)


@dataclass
class MethodOutput:
    text: str  # everything the model generated (rationale and answer)
    answer: str  # the final answer text handed to the benchmark's scorer
    input_tokens: int  # prompt tokens of the first forward, image tokens included
    generated_tokens: int  # decoded tokens over all stages, EOS and padding excluded
    latent_steps: int = 0  # continuous-thought positions fed back, never decoded
    seconds: float = 0.0  # wall time attributed to this sample (batch time / batch size)
    extra: dict = field(default_factory=dict)
