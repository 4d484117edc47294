"""The direction file: per-sample CoT directions and their mean, per source layer, in safetensors.

Layout (format ``l2v-cot-directions/1``)::

    directions.{L}   float32 [N, n]   u_i = h(long / CoT)_i - h(short / direct)_i at layer L
    mean.{L}         float32 [n]      v(l_L) = mean_i u_i  (what is transferred and injected)

and string metadata: ``model``, ``model_revision``, ``layers`` ("4,8"), ``num_layers`` (the source
model's depth, used to map layers by relative depth), ``hidden_size``, ``n`` (samples), ``contrast``
("still2" or "prompt"), ``data`` (path), ``data_sha256`` (of the pairs file's bytes), ``created_at``.
Writes go to a temporary file renamed into place, so a crash never leaves half a file.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

FORMAT = "l2v-cot-directions/1"


@dataclass
class DirectionFile:
    directions: dict  # layer -> torch.Tensor [N, n]
    means: dict  # layer -> torch.Tensor [n], as stored
    metadata: dict = field(default_factory=dict)  # str -> str

    @property
    def layers(self) -> list[int]:
        return sorted(self.directions)

    def mean(self, layer: int):
        return self.means[layer]

    @property
    def num_layers(self) -> int:
        return int(self.metadata["num_layers"])

    @property
    def hidden_size(self) -> int:
        return int(self.metadata["hidden_size"])

    def pick_layer(self, layer: int | None) -> int:
        """The source layer to use: ``layer``, or the file's only one when ``layer`` is None."""
        if layer is None:
            if len(self.layers) != 1:
                raise ValueError(f"the vector file holds layers {','.join(map(str, self.layers))}; "
                                 "choose one with --source-layer")
            return self.layers[0]
        if layer not in self.directions:
            raise ValueError(f"the vector file has no layer {layer}; it holds layers "
                             f"{','.join(map(str, self.layers))}")
        return layer


def save_directions(path: str | Path, directions: dict, metadata: dict) -> Path:
    """Write ``directions`` ({layer: [N, n]}) and their means with ``metadata``, atomically."""
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {}
    for layer, U in sorted(directions.items()):
        U = U.detach().to("cpu", torch.float32).contiguous()
        tensors[f"directions.{layer}"] = U
        tensors[f"mean.{layer}"] = U.mean(0).contiguous()
    meta = {"format": FORMAT, **{k: str(v) for k, v in metadata.items()},
            "layers": ",".join(str(layer) for layer in sorted(directions))}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_directions(path: str | Path) -> DirectionFile:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vector file {str(path)!r} does not exist; write one with `harness l2v extract`")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
            keys = list(fh.keys())
            tensors = {key: fh.get_tensor(key) for key in keys}
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"vector file {str(path)!r} is not a readable safetensors file ({exc})") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(f"vector file {str(path)!r} is not an L2V-CoT direction file (format "
                         f"{metadata.get('format')!r}, expected {FORMAT!r}); write one with `harness l2v extract`")
    def by_layer(prefix):
        return {int(key.split(".", 1)[1]): value for key, value in tensors.items() if key.startswith(prefix)}

    directions, means = by_layer("directions."), by_layer("mean.")
    if not directions or set(directions) != set(means):
        raise ValueError(f"vector file {str(path)!r} does not hold one mean per layer of directions")
    return DirectionFile(directions=directions, means=means, metadata=metadata)
