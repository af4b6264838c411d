"""Frequency grids for full and real-to-complex (rfft) layouts.

Frequencies are in cycles/pixel ("fftfreq", in [-0.5, 0.5)) or, given ``pixel_size_A``, in 1/Å.
Vectors are ordered ``(x, y[, z])`` (geometric order) although the grid's array axes are
``(..., [z,] y, x)``.
"""

from __future__ import annotations

from typing import Sequence

import torch


def _axis_frequencies(n: int, *, rfft: bool, fftshift: bool, device=None) -> torch.Tensor:
    if rfft:
        return torch.fft.rfftfreq(n, device=device)
    freqs = torch.fft.fftfreq(n, device=device)
    return torch.fft.fftshift(freqs) if fftshift else freqs


def fftfreq_grid(
    shape: Sequence[int],
    *,
    rfft: bool = False,
    fftshift: bool = False,
    pixel_size_A: float | None = None,
    device=None,
) -> torch.Tensor:
    """Spatial-frequency vector at every sample of a 2D or 3D Fourier array.

    Parameters
    ----------
    shape
        Real-space shape ``(h, w)`` or ``(d, h, w)``.
    rfft
        If True the grid matches ``torch.fft.rfftn`` output: last axis ``w // 2 + 1``.
    fftshift
        If True the zero frequency sits at index ``N // 2`` (centred layout). Not allowed with
        ``rfft`` on the last axis; the other axes are shifted.
    pixel_size_A
        If given, frequencies are in 1/Å instead of cycles/pixel.

    Returns
    -------
    Tensor of shape ``(*fourier_shape, ndim)`` with components ordered ``(kx, ky[, kz])``.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"shape must be 2D or 3D, got {shape}")
    per_axis = []
    for i, n in enumerate(shape):
        is_last = i == len(shape) - 1
        per_axis.append(_axis_frequencies(n, rfft=rfft and is_last, fftshift=fftshift and not (rfft and is_last), device=device))
    mesh = torch.meshgrid(*per_axis, indexing="ij")  # array order (z, y, x)
    grid = torch.stack(mesh[::-1], dim=-1)  # geometric order (x, y, z)
    if pixel_size_A is not None:
        if pixel_size_A <= 0:
            raise ValueError(f"pixel_size_A must be positive, got {pixel_size_A}")
        grid = grid / pixel_size_A
    return grid


def fftfreq_magnitude(shape: Sequence[int], **kwargs) -> torch.Tensor:
    """``|k|`` on the grid of :func:`fftfreq_grid` (same keyword arguments); shape ``fourier_shape``."""
    return torch.linalg.vector_norm(fftfreq_grid(shape, **kwargs), dim=-1)
