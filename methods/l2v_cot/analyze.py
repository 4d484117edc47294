"""The LAT analysis behind the method: how dispersed are the CoT directions of an LLM and a VLM,
before and after the low-pass?

The same contrast pairs (by default the paper's "Let's think step by step" vs "Answer directly"
prompts) go through the LLM and through the VLM's language side; each gives per-sample directions
``U`` [N, d] at one decoder layer's output. Reported per model: ``dispersion(U)`` (trace of the
covariance, :func:`spectral.dispersion`) and ``dispersion(lowpass(U, k))`` (each row low-passed),
the paper's LLM 176.7 / VLM 1117.8 / VLM low-passed 197.7; the same divided by the mean squared
norm of the directions (dispersion is scale-dependent and two models' hidden states differ in
scale); and the share of the spectral energy of the directions at frequencies ``<= k``.
"""
from __future__ import annotations

from pathlib import Path


def low_frequency_share(U, k: int) -> float:
    """Mean over rows of the fraction of ``|rfft(u)|²`` energy at frequencies ``0..k``.

    One-sided bins count twice (their negative mirror), except DC and an even-length Nyquist bin.
    """
    import torch

    X = torch.fft.rfft(U.to(torch.float64), dim=-1).abs().square()
    weight = torch.full((X.shape[-1],), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if U.shape[-1] % 2 == 0:
        weight[-1] = 1.0
    energy = X * weight
    return float((energy[:, :k + 1].sum(-1) / energy.sum(-1).clamp_min(1e-300)).mean())


def figures(U, k: int | None) -> dict:
    """Dispersion figures of one model's per-sample directions ``U`` [N, d]."""
    import torch

    from .spectral import dispersion, lowpass

    mean_sq_norm = float(U.to(torch.float64).square().sum(-1).mean())
    out = {"dispersion": dispersion(U), "mean_sq_norm": mean_sq_norm}
    out["dispersion_relative"] = out["dispersion"] / mean_sq_norm if mean_sq_norm else float("nan")
    if k is not None:
        low = lowpass(U, k)
        out["dispersion_lowpass"] = dispersion(low)
        out["dispersion_lowpass_relative"] = out["dispersion_lowpass"] / mean_sq_norm if mean_sq_norm else float("nan")
        out["low_frequency_energy_share"] = low_frequency_share(U, k)
    return out


def analyze(llm: str, vlm: str, pairs_path: str | Path, *, llm_layer: int | None = None, vlm_layer: str = "auto",
            cutoff: int = 200, n: int = 100, contrast: str = "prompt", batch_size: int = 4, device: str = "auto",
            dtype: str = "auto") -> dict:
    """Directions of both models on the same pairs; their dispersion figures (see module doc)."""
    from harness.backbones import load_backbone

    from harness.backbones.text import causal_lm_chat, causal_lm_decoder, load_causal_lm

    from .extract import backbone_chat, backbone_states, directions_from, llm_states, load_pairs
    from .inject import map_layer
    from .method import check_cutoff
    from harness.api.hashing import file_sha256

    pairs = load_pairs(pairs_path, contrast, n)
    model, tokenizer = load_causal_lm(llm, device=device, dtype=dtype)
    llm_depth = len(causal_lm_decoder(model)[1])
    check_cutoff(cutoff, model.config.hidden_size, model.config.hidden_size)  # before any work
    source = llm_depth // 2 if llm_layer is None else (llm_layer + llm_depth if llm_layer < 0 else llm_layer)
    U_llm = directions_from(lambda texts: llm_states(model, tokenizer, texts, [source], batch_size),
                            pairs, contrast, causal_lm_chat(tokenizer))[source]
    llm_width = model.config.hidden_size
    del model

    backbone = load_backbone(vlm, device=device, dtype=dtype)
    vlm_depth = len(backbone.decoder_layers())
    # Each model's rows are low-passed at their own width; k must be a real low-pass for both.
    k = check_cutoff(cutoff, llm_width, backbone.hidden_size)
    if str(vlm_layer) == "auto":
        target = map_layer(source, llm_depth, vlm_depth)
    else:
        target = int(vlm_layer) + (vlm_depth if int(vlm_layer) < 0 else 0)
    U_vlm = directions_from(lambda texts: backbone_states(backbone, texts, [target], batch_size),
                            pairs, contrast, backbone_chat(backbone))[target]
    return {
        "llm": {"model": llm, "layer": source, "depth": llm_depth, "width": llm_width, **figures(U_llm, k)},
        "vlm": {"model": vlm, "layer": target, "depth": vlm_depth, "width": backbone.hidden_size,
                **figures(U_vlm, k)},
        "n": len(pairs), "contrast": contrast, "cutoff": cutoff, "pairs": str(pairs_path),
        "data_sha256": file_sha256(pairs_path),
    }


def metric_rows(result: dict) -> list[dict]:
    """Rows for ``Store.add_text_metrics`` under task ``lat-analysis``: ``dispersion_llm``, ``dispersion_vlm``,
    ``dispersion_vlm_lowpass``, ... one per figure and model."""
    rows = []
    config = {k: result[k] for k in ("contrast", "cutoff", "pairs", "data_sha256")}
    for side in ("llm", "vlm"):
        info = result[side]
        for name in ("dispersion", "dispersion_lowpass", "dispersion_relative", "dispersion_lowpass_relative",
                     "mean_sq_norm", "low_frequency_energy_share"):
            if name not in info:
                continue
            if name.startswith("dispersion"):  # dispersion_llm, dispersion_vlm_lowpass, ...
                metric = f"dispersion_{side}{name[len('dispersion'):]}"
            else:
                metric = f"{name}_{side}"
            rows.append({"vector_sha": None, "vector_path": None, "model": info["model"], "steered": False,
                         "alpha": None, "layer": info["layer"], "task": "lat-analysis", "metric": metric,
                         "value": info[name], "n": result["n"],
                         "config": {**config, "depth": info["depth"], "width": info["width"],
                                    "llm": result["llm"]["model"], "vlm": result["vlm"]["model"]}})
    return rows


def format_result(result: dict) -> str:
    llm, vlm = result["llm"], result["vlm"]
    lines = [f"LAT dispersion (trace of the covariance of {result['n']} per-sample directions, "
             f"contrast {result['contrast']}, low-pass k = {result['cutoff']})",
             f"{'':<28}{'LLM':>14}{'VLM':>14}",
             f"{'model':<28}{Path(llm['model']).name[:13]:>14}{Path(vlm['model']).name[:13]:>14}",
             f"{'layer / depth':<28}{str(llm['layer']) + '/' + str(llm['depth']):>14}"
             f"{str(vlm['layer']) + '/' + str(vlm['depth']):>14}",
             f"{'width':<28}{llm['width']:>14}{vlm['width']:>14}"]
    for name, label in (("dispersion", "dispersion"), ("dispersion_lowpass", "dispersion after low-pass"),
                        ("dispersion_relative", "dispersion / mean |u|^2"),
                        ("dispersion_lowpass_relative", "low-passed / mean |u|^2"),
                        ("low_frequency_energy_share", "energy share at f <= k")):
        if name in llm:
            lines.append(f"{label:<28}{llm[name]:>14.4g}{vlm[name]:>14.4g}")
    lines.append("paper (DeepSeek-R1-Distill-Qwen-32B vs its VLMs): LLM 176.7, VLM 1117.8, VLM after low-pass 197.7")
    return "\n".join(lines)
