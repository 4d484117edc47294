"""Spectral operations of L2V-CoT on direction vectors.

A hidden-state direction of size ``n`` is treated as a real, periodic signal of ``n`` samples.
Its discrete Fourier transform ``X = fft(v)`` has bins ``X[j]``, ``j = 0..n-1``; bin ``j`` and bin
``n - j`` (written ``-j``) carry the same frequency ``|j|`` and, because ``v`` is real, hold complex
conjugate values.  "Frequency ``f``" below always means the pair of bins ``+f`` and ``-f`` (for
``f = 0`` the single DC bin; for even ``n`` and ``f = n/2`` the single, real, Nyquist bin).

Pipeline of the paper (see ``README.md`` next to this file)::

    v (LLM, size n) --lowpass(k)--> --resample to m ("LMN")--> --normalize--> v_hat (VLM, size m)

which :func:`transfer` runs in one call; :func:`interpolate` is the paper's ablation baseline that
replaces the frequency-domain resampling, and :func:`dispersion` is the LAT dispersion measure.

Conventions shared by every function here:

* input: a real torch tensor of shape ``[n]`` or a batch ``[..., n]``; the operation acts along the
  last dimension, independently for every leading index;
* arithmetic is done in float64 and the result is cast back to the input's floating dtype (so
  float32 in gives float32 out) on the input's device; complex inputs are rejected;
* the output is real.

Only torch is needed at run time; ``tests/test_l2v_spectral.py`` checks these functions against
``scipy.signal.resample``, ``numpy.interp`` and ``numpy.cov``.
"""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F

__all__ = ["lowpass", "resample", "interpolate", "normalize", "transfer", "dispersion", "TRANSFER_METHODS"]

#: Names accepted by :func:`transfer`'s ``method`` argument.
TRANSFER_METHODS = ("lmn", "interp")


# ----------------------------------------------------------------------------- helpers

def _as_real_tensor(v, name: str = "v") -> torch.Tensor:
    """Return ``v`` as a real tensor with at least one dimension and a non-empty last dimension."""
    if not isinstance(v, torch.Tensor):
        v = torch.as_tensor(v)
    if v.is_complex():
        raise ValueError(f"{name} must be real, got complex dtype {v.dtype}")
    if v.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension (shape [n] or [..., n]), got a scalar")
    if v.shape[-1] == 0:
        raise ValueError(f"{name} has an empty last dimension; a direction needs at least one entry")
    return v


def _out_dtype(v: torch.Tensor) -> torch.dtype:
    """The dtype results are cast back to: the input's, if floating, else float64."""
    return v.dtype if v.is_floating_point() else torch.float64


def _check_int(value, name: str, minimum: int) -> int:
    """``value`` as a Python int >= ``minimum``; ValueError otherwise (bools are refused)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def _lowpass_spectrum(X: torch.Tensor, k: int | None) -> torch.Tensor:
    """Zero the one-sided spectrum ``X = rfft(v)`` above frequency ``k`` (``k=None``: keep all)."""
    if k is None or k + 1 >= X.shape[-1]:
        return X
    X = X.clone()
    X[..., k + 1:] = 0
    return X


# ----------------------------------------------------------------------------- public API

def lowpass(v: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` lowest frequencies of ``v`` (on both sides of the spectrum), zero the rest.

    Precisely: with ``X = fft(v)`` of length ``n``, the output is ``ifft(X * M)`` where the mask ``M``
    keeps the DC bin 0, the positive bins ``1..k`` and their mirror (negative) bins ``-1..-k``
    (i.e. ``n-1..n-k``) and zeroes every other bin.  That is ``min(2k + 1, n)`` bins.  The mask is
    symmetric (``M[j] == M[-j]``), so the filtered spectrum stays Hermitian and the output is exactly
    real; it is computed through ``rfft``/``irfft``, which keep bins ``0..k`` of the one-sided
    spectrum and imply their mirrors.

    * ``k = 0`` keeps only the DC bin: every entry becomes the mean of ``v``.
    * ``k >= n // 2`` keeps every bin (for odd ``n``, ``n // 2`` is the highest frequency; for even
      ``n`` it is the Nyquist bin ``n/2``, which is its own mirror and is kept once), so ``v`` is
      returned unchanged (as a copy, bit-for-bit).  For even ``n``, ``k = n/2 - 1`` keeps everything
      but the Nyquist bin.
    * The operation is a projection: ``lowpass(lowpass(v, k), k) == lowpass(v, k)``.

    Difference from the reference code (whynot-zyl/L2V-CoT): its mask keeps the bins ``0..k-1`` and
    ``-1..-k``, i.e. it is off by one and asymmetric -- bin ``-k`` is kept while its partner ``+k``
    is not, so the filtered spectrum is not Hermitian and the inverse FFT is complex (taking its real
    part amounts to keeping half of frequency ``k``).  The symmetric mask here keeps frequency ``k``
    whole, so the reference's "k = 200" corresponds to this function's ``k = 200`` with 2k+1 = 401
    bins instead of the reference's 400.

    Args:
        v: real tensor ``[n]`` or ``[..., n]``; filtered along the last dimension.
        k: highest frequency kept, an integer ``>= 0``.

    Returns:
        Real tensor of the same shape, dtype and device as ``v``.

    Raises:
        ValueError: ``k`` is not an integer or is negative; ``v`` is complex or has no entries.
    """
    v = _as_real_tensor(v)
    k = _check_int(k, "k", 0)
    n = v.shape[-1]
    out_dtype = _out_dtype(v)
    if k >= n // 2:
        return v.to(out_dtype, copy=True)
    X = _lowpass_spectrum(torch.fft.rfft(v.to(torch.float64), dim=-1), k)
    return torch.fft.irfft(X, n=n, dim=-1).to(out_dtype)


def resample(v: torch.Tensor, m: int, k: int | None = None) -> torch.Tensor:
    """Resample ``v`` from ``n`` to ``m`` entries in the frequency domain ("LMN" resampling).

    With ``X = fft(v)`` (length ``n``) and ``L = min(n, m)``, a spectrum ``Y`` of length ``m`` is
    built that holds the DC bin and the lowest positive and negative bins of ``X`` -- bins
    ``0..ceil(L/2)-1`` and ``-1..-(floor(L/2))`` -- and zeroes elsewhere (truncation when ``m < n``,
    zero padding when ``m > n``); the output is ``ifft(Y) * m / n``.

    Nyquist bin (as ``scipy.signal.resample`` does it): when ``L`` is even and ``m != n``, the
    frequency ``L/2`` has a single bin on the shorter side but a pair of bins on the longer one.

    * down-sampling (``m < n``, ``L = m`` even): the pair ``X[m/2]`` and ``X[-m/2]`` of the input is
      merged into the output's single Nyquist bin, ``Y[m/2] = X[m/2] + X[-m/2] = 2 Re X[m/2]``;
    * up-sampling (``m > n``, ``L = n`` even): the input's single Nyquist bin is split evenly over the
      output's pair, ``Y[n/2] = Y[-n/2] = X[n/2] / 2``.

    Either way the spectrum stays Hermitian and the output is real (the construction is carried out
    on the one-sided spectrum with ``rfft``/``irfft``).

    Scale: a length-``m`` inverse FFT divides by ``m`` where the forward FFT of length ``n`` did not
    divide at all, so ``ifft(Y)`` alone has ``n / m`` times the amplitude of ``v``.  This function
    APPLIES the factor ``m / n``, so the output is the band-limited (trigonometric) interpolant of
    ``v`` evaluated at ``m`` equally spaced points over the same period: a cosine of frequency ``f``
    stays a cosine of frequency ``f`` and the same amplitude, and the full-band result equals
    ``scipy.signal.resample(v, m)`` exactly (to round-off).  The scale is irrelevant to L2V-CoT
    itself, whose next step is :func:`normalize`.

    Low-pass in the same step: with ``k`` given only frequencies ``0..k`` are copied (bins ``0..k``
    and ``-1..-k``, as in :func:`lowpass`), so ``resample(v, m, k) == resample(lowpass(v, k), m)``
    for every ``k``, which equals ``scipy.signal.resample(lowpass(v, k), m)``.  For
    ``k < min(n, m) / 2`` no Nyquist handling is involved (the bins at ``L/2`` are zero) and the
    spectrum is simply the ``2k + 1`` lowest bins placed into a longer or shorter zero spectrum.
    ``k >= n // 2`` (or ``k=None``) is the full-band case.

    Args:
        v: real tensor ``[n]`` or ``[..., n]``; resampled along the last dimension.
        m: target length, an integer ``>= 1`` (e.g. the VLM's hidden size).
        k: optional low-pass cutoff (highest frequency kept), an integer ``>= 0``.

    Returns:
        Real tensor ``[..., m]`` with the dtype and device of ``v``.

    Raises:
        ValueError: ``m < 1`` or ``k < 0`` or either is not an integer; ``v`` is complex or empty.
    """
    v = _as_real_tensor(v)
    m = _check_int(m, "m", 1)
    if k is not None:
        k = _check_int(k, "k", 0)
    n = v.shape[-1]
    out_dtype = _out_dtype(v)

    X = _lowpass_spectrum(torch.fft.rfft(v.to(torch.float64), dim=-1), k)  # [..., n//2 + 1]
    L = min(n, m)
    half = L // 2 + 1  # one-sided bins shared by both lengths: 0..L//2
    Y = X.new_zeros(X.shape[:-1] + (m // 2 + 1,))
    Y[..., :half] = X[..., :half]
    if L % 2 == 0 and m != n:
        if m < n:  # merge the input's bin pair at +-m/2 into the output's single Nyquist bin
            Y[..., L // 2] = 2 * X[..., L // 2].real
        else:  # split the input's single (real) Nyquist bin into the output's pair at +-n/2
            Y[..., L // 2] = 0.5 * X[..., L // 2].real
    return (torch.fft.irfft(Y, n=m, dim=-1) * (m / n)).to(out_dtype)


def interpolate(v: torch.Tensor, m: int) -> torch.Tensor:
    """Linearly interpolate the entries of ``v`` onto ``m`` points (the paper's ablation baseline).

    Entry ``i`` of the output is the piecewise-linear interpolant of ``v`` (entries at positions
    ``0..n-1``) evaluated at ``i * (n - 1) / (m - 1)``: the end points are preserved, as with
    ``numpy.interp(numpy.linspace(0, n - 1, m), numpy.arange(n), v)``.  Implemented with
    ``torch.nn.functional.interpolate(mode="linear", align_corners=True)``.  For ``m = 1`` the output
    is ``v[..., :1]``; for ``n = 1`` it is constant.

    Args:
        v: real tensor ``[n]`` or ``[..., n]``; interpolated along the last dimension.
        m: target length, an integer ``>= 1``.

    Returns:
        Real tensor ``[..., m]`` with the dtype and device of ``v``.
    """
    v = _as_real_tensor(v)
    m = _check_int(m, "m", 1)
    n = v.shape[-1]
    lead = v.shape[:-1]
    x = v.to(torch.float64).reshape(-1, 1, n)
    if x.shape[0] == 0:
        return v.new_zeros(lead + (m,), dtype=_out_dtype(v))
    y = F.interpolate(x, size=m, mode="linear", align_corners=True)
    return y.reshape(lead + (m,)).to(_out_dtype(v))


def normalize(v: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale ``v`` to unit L2 norm along the last dimension: ``v / max(||v||, eps)``.

    The injection strength is then set entirely by alpha (``h <- h + alpha * v_hat``).  A vector
    whose norm is below ``eps`` (e.g. all zeros) is divided by ``eps`` instead, so no NaNs arise.

    Returns:
        Tensor of the same shape, dtype and device as ``v``.
    """
    v = _as_real_tensor(v)
    x = v.to(torch.float64)
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(eps)
    return (x / norm).to(_out_dtype(v))


BANDS = ("low", "high")
NORMS = ("unit", "raw")


def transfer(v: torch.Tensor, m: int, k: int | None, method: str = "lmn", band: str = "low",
             norm: str = "unit") -> torch.Tensor:
    """Map an LLM direction (size ``n``) to a unit VLM direction (size ``m``): the whole pipeline.

    * ``method="lmn"`` (the paper's method): ``normalize(resample(v, m, k))``, which is
      low-pass(k) then frequency-domain resampling, done on one FFT;
    * ``method="interp"`` (the ablation): ``normalize(interpolate(lowpass(v, k), m))``.

    Args:
        v: real tensor ``[n]`` or ``[..., n]``.
        m: target hidden size, integer ``>= 1``.
        k: low-pass cutoff (highest frequency kept, see :func:`lowpass`); ``None`` skips the
            low-pass (full band).
        method: ``"lmn"`` or ``"interp"``.
        band: ``"low"`` (the paper's method: frequencies ``0..k``) or ``"high"`` (the paper's ablation:
            ``v`` minus its low-pass, i.e. the frequencies above ``k``, carried to ``m`` whole).
        norm: ``"unit"`` (ours: alpha alone sets the strength) or ``"raw"`` (the reference code's:
            the transferred vector at its own scale).

    Returns:
        Real tensor ``[..., m]`` with the dtype of ``v``, of unit norm along the last dim unless ``raw``.

    Raises:
        ValueError: unknown ``method`` (the message names the valid ones), or invalid ``m``/``k``.
    """
    if method not in TRANSFER_METHODS:
        raise ValueError(f"unknown transfer method {method!r}; valid methods: {', '.join(TRANSFER_METHODS)}")
    if band not in BANDS or norm not in NORMS:
        raise ValueError(f"band must be one of {', '.join(BANDS)} and norm one of {', '.join(NORMS)}; "
                         f"got {band!r}, {norm!r}")
    v = _as_real_tensor(v)
    out_dtype = _out_dtype(v)
    x = v.to(torch.float64)  # keep float64 between the steps; cast once at the end
    if band == "high":
        if k is None:
            raise ValueError("band='high' needs a cutoff: the frequencies above it are kept")
        x, k = x - lowpass(x, k), None  # then carried to m without a further low-pass
    if method == "lmn":
        y = resample(x, m, k)
    else:
        y = interpolate(x if k is None else lowpass(x, k), m)
    return (normalize(y) if norm == "unit" else y).to(out_dtype)


def dispersion(directions: torch.Tensor) -> float:
    """Trace of the covariance matrix of per-sample direction vectors (the paper's LAT dispersion).

    For ``directions`` of shape ``[N, d]`` (one direction ``u_i = h(c_i) - h(d_i)`` per row) this is
    ``sum_j Var(u[:, j])`` -- the sum over the ``d`` dimensions of each dimension's variance, i.e. the
    mean squared distance of the directions from their mean scaled by ``N / (N - 1)`` -- using the
    unbiased ``N - 1`` estimator (as ``numpy.cov`` does by default).  The ``d x d`` covariance matrix
    is never formed: ``sum((U - mean(U, 0)) ** 2) / (N - 1)``, computed in float64.

    Paper values: LLM 176.7, VLM 1117.8, VLM after low-pass 197.7.

    Args:
        directions: real tensor (or array-like) ``[N, d]`` with ``N >= 2``.

    Returns:
        The dispersion as a Python float.

    Raises:
        ValueError: not two-dimensional, or fewer than two samples.
    """
    U = _as_real_tensor(directions, "directions")
    if U.dim() != 2:
        raise ValueError(f"directions must have shape [N, d], got {tuple(U.shape)}")
    N = U.shape[0]
    if N < 2:
        raise ValueError(f"dispersion needs at least 2 directions (unbiased N-1 estimator), got N={N}")
    U = U.to(torch.float64)
    centred = U - U.mean(dim=0, keepdim=True)
    return float(centred.square().sum() / (N - 1))
