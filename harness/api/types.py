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


# One limit for every benchmark, checked on the header before any pixel is decoded: a 20000×20000
# image would otherwise cost gigabytes (VLMEvalKit lifts PIL's own limit process-wide).
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000  # about 6300×6300; benchmark images are far smaller

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")


def decode_image(ref: Any, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS):
    """Decode one image reference into an RGB ``PIL.Image``.

    Accepts a PIL image, raw bytes, a ``datasets`` image dict (``{"bytes", "path"}``), a file path
    or a base64 string (VLMEvalKit TSVs). An image of more than ``max_pixels`` pixels (None: no
    limit) raises :class:`BadImage` before it is decoded.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(ref, Image.Image):
        _check_pixels(ref.size, max_pixels)
        return ref.convert("RGB")
    if isinstance(ref, dict):
        ref = ref.get("bytes") or ref.get("path")
    try:
        if isinstance(ref, (bytes, bytearray)):
            data = bytes(ref)
        elif isinstance(ref, str) and len(ref) < 4096 and os.path.exists(ref):
            with open(ref, "rb") as fh:
                data = fh.read()
        elif isinstance(ref, str) and len(ref) < 4096 and ref.lower().endswith(IMAGE_SUFFIXES):
            # Base64 never holds a dot: this names a file, which is missing.
            raise BadImage(f"image file {ref} does not exist")
        elif isinstance(ref, str):
            try:
                data = base64.b64decode(ref, validate=True)
            except binascii.Error:
                raise BadImage(f"image reference {ref[:40]!r} is neither an existing image file nor base64 "
                               "image data") from None
        else:
            raise BadImage(f"unsupported image reference of type {type(ref).__name__}")
        with _pil_limit_off():
            image = Image.open(io.BytesIO(data))  # reads the header only
            _check_pixels(image.size, max_pixels)
            image.load()
        return image.convert("RGB")
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, BadImage):
            raise
        raise BadImage(f"cannot decode image: {exc}") from None


def _check_pixels(size: tuple[int, int], max_pixels: int | None) -> None:
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise BadImage(f"image of {width}x{height} = {width * height:,} pixels is over the limit of "
                       f"{max_pixels:,} (--max-image-pixels N raises it)")


class _pil_limit_off:
    """Our own limit replaces PIL's (which warns, or raises an exception type callers do not expect)."""

    def __enter__(self):
        from PIL import Image

        self.saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None

    def __exit__(self, *exc):
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = self.saved


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

    def images(self, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> list:
        return [decode_image(ref, max_pixels) for ref in self.image_refs]


@dataclass
class Query:
    """What a method answers: decoded images and the benchmark's formatted question text."""

    images: list
    question: str
    choices: list[str] = field(default_factory=list)
    # The sample's own question text (``Sample.question``: no context, no options), for methods whose
    # published prompt is built from the raw parts; None where the caller has only a formatted prompt
    # (the VLMEvalKit adapter), so such a method can refuse instead of guessing.
    stem: str | None = None


@dataclass
class MethodOutput:
    text: str  # everything the model generated (rationale and answer)
    answer: str  # the final answer text handed to the benchmark's scorer
    input_tokens: int  # prompt tokens of the first forward, image tokens included
    generated_tokens: int  # decoded tokens over all stages, EOS and padding excluded
    latent_steps: int = 0  # continuous-thought positions fed back, never decoded
    seconds: float = 0.0  # wall time attributed to this sample (batch time / batch size)
    extra: dict = field(default_factory=dict)
