"""The discrete Fourier transform written out as a matrix product: a reference, not a tool.

``X[k] = sum_n x[n] exp(-2 pi i k n / N)`` — unnormalised forward, inverse with ``+i`` and
``1/N`` (numpy/torch "backward" norm, docs/conventions.md). ``O(N²)`` per axis; use it to
teach, and to test the FFT-based code against the definition.

References
----------
R. N. Bracewell, *The Fourier Transform and Its Applications*, 3rd ed. (2000), ch. 18.
"""

from __future__ import annotations

import math

import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError


def dft_matrix(n: int, *, inverse: bool = False, device=None, dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """The ``n x n`` DFT matrix ``W[k, j] = exp(-2 pi i k j / n)`` (``exp(+...)/n`` if ``inverse``).

    The exponent uses ``(k * j) mod n`` in integers, so large ``n`` loses no phase accuracy.
    """
    if n < 1:
        raise InputError(f"n must be positive, got {n}")
    index = torch.arange(n, device=device, dtype=torch.int64)
    product_mod_n = torch.outer(index, index) % n
    sign = 1.0 if inverse else -1.0
    matrix = torch.polar(
        torch.ones(n, n, dtype=torch.float64, device=device),
        sign * 2.0 * math.pi * product_mod_n.to(torch.float64) / n,
    )
    if inverse:
        matrix = matrix / n
    return matrix.to(dtype)


def dft_1d(x, *, inverse: bool = False) -> torch.Tensor:
    """DFT of ``(..., n)`` along the last axis by explicit matrix product; complex64.

    Equals ``torch.fft.fft(x)`` (``torch.fft.ifft`` if ``inverse``) up to rounding.
    """
    x = as_tensor(x)
    if x.dim() < 1:
        raise InputError("x must have at least one dimension")
    matrix = dft_matrix(x.shape[-1], inverse=inverse, device=x.device, dtype=torch.complex128)
    # X[..., k] = sum_j W[k, j] x[..., j]
    return (x.to(torch.complex128) @ matrix.T).to(torch.complex64)


def dft_2d(x, *, inverse: bool = False) -> torch.Tensor:
    """2D DFT of ``(..., h, w)`` as ``W_h @ x @ W_w^T`` (separable: rows, then columns); complex64.

    Equals ``torch.fft.fft2(x)`` (``torch.fft.ifft2`` if ``inverse``) up to rounding.
    """
    x = as_tensor(x)
    if x.dim() < 2:
        raise InputError("x must have at least two dimensions")
    h, w = x.shape[-2:]
    rows = dft_matrix(h, inverse=inverse, device=x.device, dtype=torch.complex128)
    cols = dft_matrix(w, inverse=inverse, device=x.device, dtype=torch.complex128)
    return (rows @ x.to(torch.complex128) @ cols.T).to(torch.complex64)
