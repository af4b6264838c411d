"""Linear (not circular) convolution through the FFT.

The DFT multiplies spectra of periodic signals, i.e. it computes circular convolution. Zero
padding both inputs to at least ``N + M - 1`` samples per axis makes the wrap-around land in
the padding, so the product's inverse is the linear convolution ``(a * b)[n] = sum_m a[m] b[n-m]``.

References
----------
A. V. Oppenheim & R. W. Schafer, *Discrete-Time Signal Processing*, 3rd ed. (2010), § 8.7
("Linear convolution using the DFT").
"""

from __future__ import annotations

from typing import Literal

import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError


def _next_fast_length(n: int) -> int:
    """Smallest integer ``>= n`` whose only prime factors are 2, 3 and 5 (fast FFT sizes)."""
    candidate = max(int(n), 1)
    while True:
        remainder = candidate
        for prime in (2, 3, 5):
            while remainder % prime == 0:
                remainder //= prime
        if remainder == 1:
            return candidate
        candidate += 1


def fft_convolve(a, b, *, ndim: int | None = None, mode: Literal["full", "same"] = "full") -> torch.Tensor:
    """Linear convolution of ``a`` and ``b`` over their last ``ndim`` axes, by FFT.

    Parameters
    ----------
    a
        ``(..., *shape_a)`` real or complex data.
    b
        ``(..., *shape_b)`` kernel; batch dimensions broadcast with those of ``a``.
    ndim
        Number of trailing axes to convolve. Default: every axis, which requires ``a`` and ``b``
        to have the same number of dimensions (as ``scipy.signal.fftconvolve``).
    mode
        ``"full"``: the whole convolution, ``shape_a + shape_b - 1`` per axis.
        ``"same"``: ``shape_a``, aligned with ``a`` so that a kernel's centre pixel ``M // 2``
        (docs/conventions.md) maps each input pixel onto itself: ``same[i] = full[i + M // 2]``.
        For odd kernels this is ``scipy.signal.fftconvolve(..., mode="same")``; for even
        kernels scipy centres at ``(M - 1) // 2`` instead, one pixel away.

    Returns
    -------
    float32 if both inputs are real, else complex64, on ``a``'s device.
    """
    a = as_tensor(a)
    b = as_tensor(b, device=a.device)
    if ndim is None:
        if a.dim() != b.dim():
            raise InputError(f"a {tuple(a.shape)} and b {tuple(b.shape)} differ in rank; pass ndim")
        ndim = a.dim()
    if ndim < 1 or a.dim() < ndim or b.dim() < ndim:
        raise InputError(f"cannot convolve over {ndim} axes of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if mode not in ("full", "same"):
        raise InputError(f"mode must be 'full' or 'same', got {mode!r}")

    dims = tuple(range(-ndim, 0))
    shape_a, shape_b = a.shape[-ndim:], b.shape[-ndim:]
    full_shape = tuple(n + m - 1 for n, m in zip(shape_a, shape_b))
    fft_shape = tuple(_next_fast_length(n) for n in full_shape)

    if a.is_complex() or b.is_complex():
        spectrum = torch.fft.fftn(a, s=fft_shape, dim=dims) * torch.fft.fftn(b, s=fft_shape, dim=dims)
        padded = torch.fft.ifftn(spectrum, dim=dims)
    else:
        spectrum = torch.fft.rfftn(a, s=fft_shape, dim=dims) * torch.fft.rfftn(b, s=fft_shape, dim=dims)
        padded = torch.fft.irfftn(spectrum, s=fft_shape, dim=dims)

    if mode == "full":
        window = tuple(slice(0, n) for n in full_shape)
    else:
        window = tuple(slice(m // 2, m // 2 + n) for n, m in zip(shape_a, shape_b))
    return padded[(Ellipsis, *window)]
