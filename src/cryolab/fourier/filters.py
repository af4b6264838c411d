"""Radial Fourier filters and their application to images and volumes.

Each ``*_filter`` function evaluates a function of the radial frequency ``|k|`` on a Fourier
grid (unshifted rfft layout by default, matching ``torch.fft.rfftn``) and returns it as a real
tensor; :func:`apply_filter` multiplies a real image or volume's spectrum by it.

Units: frequencies (cut-offs, edge widths, Gaussian sigma) are in 1/Å when ``pixel_size_A`` is
given and in cycles/pixel ("fftfreq", Nyquist = 0.5) otherwise. A width of ``w`` Fourier pixels
(shells) in a box of ``N`` is ``w / N`` cycles/pixel, or ``w / (N * pixel_size_A)`` 1/Å
(:func:`cryolab.fourier.shells.shell_to_frequency`). A resolution of ``d`` Å is the frequency
``1 / d``. Filter parameters may be tensors: their dimensions become leading batch dimensions
of the filter (one filter per value).

References
----------
RELION's ``lowPassFilterMap``/``highPassFilterMap`` (raised-cosine edge centred on the cut-off);
S. Butterworth, "On the theory of filter amplifiers", Wireless Engineer 7, 536-541 (1930);
P. B. Rosenthal & R. Henderson, J. Mol. Biol. 333, 721-745 (2003) (B-factor ``exp(-B k²/4)``).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError
from cryolab.fourier._dims import as_real, check_ndim, spatial_dims
from cryolab.fourier.grids import fftfreq_magnitude
from cryolab.fourier.transforms import rfft_shape


def _radial_frequency(shape, pixel_size_A, rfft, fftshift, device) -> torch.Tensor:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise InputError(f"filter shape must be 2D or 3D, got {shape}")
    if pixel_size_A is not None and not pixel_size_A > 0:
        raise InputError(f"pixel_size_A must be positive, got {pixel_size_A}")
    return fftfreq_magnitude(shape, rfft=rfft, fftshift=fftshift, pixel_size_A=pixel_size_A, device=device)


def _batched_parameter(value, ndim: int, device) -> torch.Tensor:
    """A filter parameter as a tensor with ``ndim`` trailing singleton axes to broadcast on the grid."""
    value = as_tensor(value, device=device)
    return value.reshape(*value.shape, *([1] * ndim))


def _raised_cosine_lowpass(freq: torch.Tensor, cutoff: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """1 below ``cutoff - width/2``, 0 above ``cutoff + width/2``, half a cosine period between.

    With ``width == 0`` the edge is a step: frequencies ``<= cutoff`` pass.
    """
    if torch.any(width < 0):
        raise InputError("edge_width must be >= 0")
    position = (freq - (cutoff - width / 2)) / width.clamp_min(torch.finfo(freq.dtype).tiny)
    edge = 0.5 * (1.0 + torch.cos(math.pi * position.clamp(0.0, 1.0)))
    step = (freq <= cutoff).to(freq.dtype)
    return torch.where(width > 0, edge, step)


def lowpass_filter(
    shape: Sequence[int],
    cutoff,
    *,
    edge_width=0.0,
    pixel_size_A: float | None = None,
    rfft: bool = True,
    fftshift: bool = False,
    device=None,
) -> torch.Tensor:
    """Low-pass filter with a raised-cosine edge centred on ``cutoff``.

    Parameters
    ----------
    shape
        Real-space shape ``(h, w)`` or ``(d, h, w)``.
    cutoff
        Frequency where the filter is 0.5 (1/Å with ``pixel_size_A``, else cycles/pixel).
    edge_width
        Full width of the cosine edge, same unit; 0 gives a hard step (``|k| <= cutoff`` passes).
    pixel_size_A
        Pixel size in Å; selects 1/Å units.
    rfft, fftshift
        Grid layout, as in :func:`cryolab.fourier.grids.fftfreq_grid`.
    device
        Device of the result.

    Returns
    -------
    float32 ``(*batch, *fourier_shape)``, batch from the shapes of ``cutoff`` and ``edge_width``.
    """
    freq = _radial_frequency(shape, pixel_size_A, rfft, fftshift, device)
    ndim = len(tuple(shape))
    return _raised_cosine_lowpass(
        freq, _batched_parameter(cutoff, ndim, freq.device), _batched_parameter(edge_width, ndim, freq.device)
    )


def highpass_filter(
    shape: Sequence[int],
    cutoff,
    *,
    edge_width=0.0,
    pixel_size_A: float | None = None,
    rfft: bool = True,
    fftshift: bool = False,
    device=None,
) -> torch.Tensor:
    """High-pass filter, ``1 - lowpass_filter(...)``: 0.5 at ``cutoff``, 0 at DC for ``cutoff > edge_width / 2``.

    Parameters and returns as in :func:`lowpass_filter`; with ``edge_width = 0`` frequencies
    strictly above ``cutoff`` pass.
    """
    return 1.0 - lowpass_filter(
        shape, cutoff, edge_width=edge_width, pixel_size_A=pixel_size_A, rfft=rfft, fftshift=fftshift, device=device
    )


def bandpass_filter(
    shape: Sequence[int],
    low_cutoff,
    high_cutoff,
    *,
    edge_width=0.0,
    pixel_size_A: float | None = None,
    rfft: bool = True,
    fftshift: bool = False,
    device=None,
) -> torch.Tensor:
    """Band-pass filter: high-pass at ``low_cutoff`` times low-pass at ``high_cutoff``.

    Both edges are raised cosines of full width ``edge_width`` centred on their cut-offs; other
    parameters as in :func:`lowpass_filter`.
    """
    options = dict(edge_width=edge_width, pixel_size_A=pixel_size_A, rfft=rfft, fftshift=fftshift, device=device)
    return highpass_filter(shape, low_cutoff, **options) * lowpass_filter(shape, high_cutoff, **options)


def gaussian_lowpass_filter(
    shape: Sequence[int],
    sigma,
    *,
    pixel_size_A: float | None = None,
    rfft: bool = True,
    fftshift: bool = False,
    device=None,
) -> torch.Tensor:
    """Gaussian low-pass ``exp(-|k|² / (2 sigma²))``, ``sigma`` in 1/Å (or cycles/pixel).

    Multiplying by it convolves with a real-space Gaussian of standard deviation
    ``1 / (2 pi sigma)`` Å (or pixels), normalised to unit integral.
    """
    freq = _radial_frequency(shape, pixel_size_A, rfft, fftshift, device)
    sigma = _batched_parameter(sigma, len(tuple(shape)), freq.device)
    if torch.any(sigma <= 0):
        raise InputError("sigma must be positive")
    return torch.exp(-(freq**2) / (2 * sigma**2))


def butterworth_lowpass_filter(
    shape: Sequence[int],
    cutoff,
    *,
    order: int = 4,
    pixel_size_A: float | None = None,
    rfft: bool = True,
    fftshift: bool = False,
    device=None,
) -> torch.Tensor:
    """Butterworth low-pass amplitude response ``1 / sqrt(1 + (|k| / cutoff)^(2 order))``.

    Maximally flat in the pass band; ``1/sqrt(2)`` (-3 dB) at ``cutoff``; falls as
    ``|k|^-order`` beyond. Units as in :func:`lowpass_filter`.
    """
    freq = _radial_frequency(shape, pixel_size_A, rfft, fftshift, device)
    cutoff = _batched_parameter(cutoff, len(tuple(shape)), freq.device)
    if torch.any(cutoff <= 0) or order < 1:
        raise InputError(f"cutoff must be positive and order >= 1, got order={order}")
    return torch.rsqrt(1.0 + (freq / cutoff) ** (2 * order))


def bfactor_filter(
    shape: Sequence[int],
    b_factor_A2,
    pixel_size_A: float,
    *,
    rfft: bool = True,
    fftshift: bool = False,
    device=None,
) -> torch.Tensor:
    """B-factor envelope ``exp(-B |k|² / 4)``, ``k`` in 1/Å, ``B`` in Å².

    The same convention as the CTF envelope (docs/conventions.md): positive B dampens high
    frequencies, negative B sharpens a map. At ``|k| = 1/d`` the amplitude is ``exp(-B / (4 d²))``.
    """
    if not pixel_size_A > 0:
        raise InputError(f"pixel_size_A must be positive, got {pixel_size_A}")
    freq = _radial_frequency(shape, pixel_size_A, rfft, fftshift, device)
    b_factor_A2 = _batched_parameter(b_factor_A2, len(tuple(shape)), freq.device)
    return torch.exp(-b_factor_A2 * freq**2 / 4)


def apply_filter(x, filter_rfft, *, ndim: int) -> torch.Tensor:
    """Multiply the spectrum of real images or volumes by a filter: ``irfftn(rfftn(x) * filter)``.

    Parameters
    ----------
    x
        Real ``(..., [d,] h, w)``.
    filter_rfft
        ``(..., [d,] h, w // 2 + 1)`` in the unshifted rfft layout (the ``*_filter`` defaults);
        real or complex; batch dimensions broadcast with those of ``x``.
    ndim
        Number of spatial dimensions (2 or 3).

    Returns
    -------
    Real tensor of the broadcast batch shape and ``x``'s spatial shape. A real, radially
    symmetric filter acts the same whatever the position of the origin, so no centring is needed.
    """
    x = as_real(as_tensor(x), "x")
    dims = spatial_dims(check_ndim(x, ndim))
    shape = tuple(x.shape[-ndim:])
    filter_rfft = as_tensor(filter_rfft, device=x.device)
    if tuple(filter_rfft.shape[-ndim:]) != rfft_shape(shape):
        raise InputError(
            f"filter has spatial shape {tuple(filter_rfft.shape[-ndim:])}, expected {rfft_shape(shape)} "
            f"(unshifted rfft of a {shape} box)"
        )
    return torch.fft.irfftn(torch.fft.rfftn(x, dim=dims) * filter_rfft, s=shape, dim=dims)
