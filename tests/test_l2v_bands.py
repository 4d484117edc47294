"""L2V-CoT's high-band ablation and the reference's raw vector scale, against numpy's FFT."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from methods.l2v_cot.spectral import transfer


def _np_lowpass(x: np.ndarray, k: int) -> np.ndarray:
    X = np.fft.fft(x)
    n = len(x)
    keep = np.zeros(n, dtype=bool)
    keep[0] = True
    keep[1:k + 1] = True
    keep[n - k:] = True  # the mirror bins -1..-k
    return np.real(np.fft.ifft(np.where(keep, X, 0)))


@pytest.mark.parametrize("method", ["lmn", "interp"])
def test_high_band_is_the_complement_of_the_low_pass(method):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(96)
    k = 10
    high = transfer(torch.tensor(x), 96, k, method=method, band="high", norm="raw").numpy()
    expected = x - _np_lowpass(x, k)
    np.testing.assert_allclose(high, expected, atol=1e-10)  # same width: carried unchanged
    spectrum = np.abs(np.fft.rfft(high))
    assert spectrum[:k + 1].max() < 1e-9 and spectrum[k + 1:].min() > 1e-3  # nothing at or below k
    low = transfer(torch.tensor(x), 96, k, method=method, band="low", norm="raw").numpy()
    np.testing.assert_allclose(low + high, x, atol=1e-10)


def test_raw_keeps_the_scale_and_unit_normalises():
    rng = np.random.default_rng(1)
    x = 7.0 * rng.standard_normal(64)
    raw = transfer(torch.tensor(x), 64, 8, norm="raw").numpy()
    np.testing.assert_allclose(raw, _np_lowpass(x, 8), atol=1e-10)
    unit = transfer(torch.tensor(x), 64, 8).numpy()
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw), atol=1e-12)
    with pytest.raises(ValueError, match="cutoff"):
        transfer(torch.tensor(x), 64, None, band="high")
    with pytest.raises(ValueError, match="band"):
        transfer(torch.tensor(x), 64, 8, band="middle")


def test_method_options_at_their_defaults_keep_the_stored_config(tmp_path):
    from harness.api import METHODS
    from methods.l2v_cot.vectors import save_directions

    directions = {0: torch.randn(4, 32)}
    path = tmp_path / "v.safetensors"
    save_directions(path, directions, {"model": "m", "num_layers": 2, "hidden_size": 32, "n": 4, "contrast": "x",
                                       "data_sha256": "0"})
    plain = METHODS.get("l2v-cot")(vector=str(path), cutoff=4).config()
    assert "band" not in plain and "vector_norm" not in plain
    ablated = METHODS.get("l2v-cot")(vector=str(path), cutoff=4, band="high", vector_norm="raw").config()
    assert ablated["band"] == "high" and ablated["vector_norm"] == "raw"
    with pytest.raises(ValueError, match="--band"):
        METHODS.get("l2v-cot")(vector=str(path), band="mid")
