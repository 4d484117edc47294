"""L2V-CoT spectral operations (methods/l2v_cot/spectral.py) against scipy/numpy and their definitions."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch

from methods.l2v_cot.spectral import (
    TRANSFER_METHODS,
    dispersion,
    interpolate,
    lowpass,
    normalize,
    resample,
    transfer,
)

LENGTH_PAIRS = [(5120, 3584), (3584, 4096), (7, 5), (8, 12), (9, 4), (8, 6), (6, 8), (7, 10), (10, 7),
                (12, 8), (5, 7), (8, 8), (7, 7), (16, 1), (1, 5), (2, 3)]


def rand(*shape, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape))


def close(a, b, tol=1e-10):
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = max(1.0, float(np.abs(b).max(initial=0.0)))
    err = float(np.abs(a - b).max(initial=0.0))
    assert err <= tol * scale, f"max abs error {err} (scale {scale})"


def band_mask(n, k):
    """Boolean mask of the bins the symmetric low-pass keeps: DC, 1..k and -1..-k."""
    freq = np.abs(np.fft.fftfreq(n) * n).round().astype(int)  # |frequency| of each bin
    return freq <= k


# ------------------------------------------------------------------------------------- lowpass

@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 16, 33, 64])
def test_lowpass_keeps_exactly_the_band(n):
    v = rand(n, seed=n)
    X = np.fft.fft(v.numpy())
    for k in range(0, n // 2 + 2):
        out = lowpass(v, k)
        assert out.dtype == v.dtype and out.shape == v.shape and not out.is_complex()
        Y = np.fft.fft(out.numpy())
        keep = band_mask(n, k)
        close(Y[keep], X[keep], 1e-10)
        close(Y[~keep], np.zeros((~keep).sum()), 1e-10)
        assert keep.sum() == min(2 * k + 1, n)
        # definition through the two-sided FFT: ifft of the masked spectrum is real
        ref = np.fft.ifft(X * keep)
        assert np.abs(ref.imag).max() < 1e-12
        close(out, ref.real, 1e-10)


def test_lowpass_even_nyquist():
    n = 10
    v = rand(n, seed=3)
    below = lowpass(v, n // 2 - 1)  # everything but the Nyquist bin 5
    Y = np.fft.fft(below.numpy())
    assert abs(Y[5]) < 1e-10
    close(Y[:5], np.fft.fft(v.numpy())[:5])
    assert torch.equal(lowpass(v, n // 2), v)  # Nyquist reached: unchanged
    assert torch.equal(lowpass(v, 1000), v)
    assert lowpass(v, n // 2) is not v


def test_lowpass_idempotent_and_k0_is_mean():
    v = rand(3, 50, seed=1)
    for k in (0, 1, 5, 24, 25):
        once = lowpass(v, k)
        close(lowpass(once, k), once, 1e-12)
    close(lowpass(v, 0), v.mean(dim=-1, keepdim=True).expand_as(v), 1e-12)


def test_lowpass_differs_from_reference_off_by_one_mask():
    # the reference keeps bins 0..k-1 and -1..-k: asymmetric, its inverse FFT is complex
    n, k = 16, 3
    X = np.fft.fft(rand(n, seed=2).numpy())
    ref_mask = np.zeros(n, bool)
    ref_mask[:k] = True
    ref_mask[-k:] = True
    assert np.abs(np.fft.ifft(X * ref_mask).imag).max() > 1e-3
    assert np.abs(np.fft.ifft(X * band_mask(n, k)).imag).max() < 1e-12


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True, None])
def test_lowpass_validates_k(bad):
    with pytest.raises(ValueError, match="k must be an integer"):
        lowpass(rand(8), bad)


def test_lowpass_accepts_numpy_int():
    v = rand(8)
    close(lowpass(v, np.int64(2)), lowpass(v, 2), 0)


# ------------------------------------------------------------------------------------ resample

@pytest.mark.parametrize("n,m", LENGTH_PAIRS)
def test_resample_full_band_equals_scipy(n, m):
    v = rand(n, seed=n * 31 + m)
    out = resample(v, m)
    assert out.shape == (m,) and out.dtype == torch.float64
    close(out, scipy.signal.resample(v.numpy(), m), 1e-10)
    # a cutoff at or above n//2 is the full band too
    close(resample(v, m, k=n // 2), out, 1e-12)


@pytest.mark.parametrize("n,m", LENGTH_PAIRS)
def test_resample_with_cutoff_equals_scipy_of_lowpass(n, m):
    v = rand(n, seed=n * 17 + m)
    cutoffs = {0, 1, max(0, (min(n, m) - 1) // 2), min(n, m) // 2, n // 2, 200}
    for k in sorted(cutoffs):
        out = resample(v, m, k)
        close(out, scipy.signal.resample(lowpass(v, k).numpy(), m), 1e-10)
        close(out, resample(lowpass(v, k), m), 1e-10)
        if 2 * k < min(n, m):  # strictly inside both bands: just the 2k+1 lowest bins, moved over
            Y = np.fft.fft(out.numpy()) * n / m
            X = np.fft.fft(v.numpy())
            keep = band_mask(m, k)
            lo = np.r_[0:k + 1, -k:0] if k else np.r_[0:1]
            close(Y[lo], X[lo], 1e-9)
            close(Y[~keep], np.zeros((~keep).sum()), 1e-9)


@pytest.mark.parametrize("n,m", [(5120, 3584), (3584, 4096), (64, 48), (63, 100)])
def test_resample_of_low_frequency_cosine_is_the_same_cosine(n, m):
    for f, phase in [(0, 0.0), (1, 0.3), (3, -1.2), (7, 2.0)]:
        t_n = np.arange(n) / n
        t_m = np.arange(m) / m
        v = torch.from_numpy(0.7 + 2.5 * np.cos(2 * np.pi * f * t_n + phase))
        expected = 0.7 + 2.5 * np.cos(2 * np.pi * f * t_m + phase)
        close(resample(v, m), expected, 1e-9)
        close(resample(v, m, k=f), expected, 1e-9)
        if f:
            close(resample(v, m, k=f - 1), np.full(m, 0.7), 1e-9)  # cut below f: only the mean is left


@pytest.mark.parametrize("bad", [0, -3, 2.0])
def test_resample_validates_m(bad):
    with pytest.raises(ValueError, match="m must be an integer"):
        resample(rand(8), bad)


def test_resample_validates_k():
    with pytest.raises(ValueError, match="k must be an integer"):
        resample(rand(8), 4, k=-1)


def test_complex_input_rejected():
    with pytest.raises(ValueError, match="real"):
        resample(torch.zeros(4, dtype=torch.complex64), 3)


# --------------------------------------------------------------------------------- interpolate

@pytest.mark.parametrize("n,m", [(7, 5), (8, 12), (9, 4), (5120, 3584), (3584, 4096), (2, 9), (5, 1), (1, 4)])
def test_interpolate_matches_numpy_interp(n, m):
    v = rand(n, seed=n + m)
    out = interpolate(v, m)
    assert out.shape == (m,)
    expected = np.interp(np.linspace(0, n - 1, m), np.arange(n), v.numpy())
    close(out, expected, 1e-12)
    assert out[0] == v[0]
    if m > 1:
        close(out[-1:], v[-1:], 1e-12)


# ---------------------------------------------------------------------------- normalize/transfer

def test_normalize_unit_norm_and_zero_safe():
    v = rand(4, 33, seed=5) * 100
    out = normalize(v)
    close(torch.linalg.vector_norm(out, dim=-1), np.ones(4), 1e-12)
    close(out * torch.linalg.vector_norm(v, dim=-1, keepdim=True), v, 1e-12)
    z = normalize(torch.zeros(5))
    assert torch.isfinite(z).all() and (z == 0).all()


def test_transfer_pipelines():
    v = rand(5120, seed=9)
    lmn = transfer(v, 3584, 200)
    close(lmn, normalize(resample(lowpass(v, 200), 3584)), 1e-12)
    close(lmn, normalize(torch.from_numpy(scipy.signal.resample(lowpass(v, 200).numpy(), 3584))), 1e-12)
    interp = transfer(v, 3584, 200, method="interp")
    close(interp, normalize(interpolate(lowpass(v, 200), 3584)), 1e-12)
    for out in (lmn, interp):
        assert out.shape == (3584,)
        assert abs(float(out.norm()) - 1) < 1e-12
    close(transfer(v, 4096, None), normalize(resample(v, 4096)), 1e-12)
    assert TRANSFER_METHODS == ("lmn", "interp")


def test_transfer_unknown_method():
    with pytest.raises(ValueError, match="lmn.*interp"):
        transfer(rand(16), 8, 2, method="linear")


# ---------------------------------------------------------------------------------- dispersion

def test_dispersion_equals_trace_of_covariance():
    X = rand(12, 7, seed=11)
    assert dispersion(X) == pytest.approx(np.trace(np.cov(X.numpy().T)), rel=1e-12)
    assert dispersion(X.float()) == pytest.approx(np.trace(np.cov(X.numpy().T)), rel=1e-5)
    assert dispersion(np.ones((3, 4))) == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        dispersion(X[:1])
    with pytest.raises(ValueError, match=r"\[N, d\]"):
        dispersion(X[0])


# ---------------------------------------------------------------------------- batches / dtypes

def test_batches_match_row_by_row():
    B = rand(2, 3, 40, seed=13)
    ops = {
        "lowpass": lambda x: lowpass(x, 6),
        "resample": lambda x: resample(x, 27),
        "resample_k": lambda x: resample(x, 52, k=5),
        "interpolate": lambda x: interpolate(x, 27),
        "normalize": normalize,
        "transfer": lambda x: transfer(x, 27, 6),
        "transfer_interp": lambda x: transfer(x, 27, 6, method="interp"),
    }
    for name, op in ops.items():
        batched = op(B)
        assert batched.shape[:2] == (2, 3), name
        for i in range(2):
            for j in range(3):
                close(batched[i, j], op(B[i, j]), 1e-12)
    close(resample(B, 27), scipy.signal.resample(B.numpy(), 27, axis=-1), 1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_dtype_preserved(dtype):
    v = rand(3, 64, seed=17).to(dtype)
    for out in (lowpass(v, 5), lowpass(v, 40), resample(v, 48), resample(v, 80, k=3), interpolate(v, 48),
                normalize(v), transfer(v, 48, 5), transfer(v, 48, 5, method="interp")):
        assert out.dtype == dtype
    # float32 results agree with the float64 computation to float32 precision
    v32 = rand(64, seed=19).float()
    close(resample(v32, 48, k=5), resample(v32.double(), 48, k=5), 1e-6)
