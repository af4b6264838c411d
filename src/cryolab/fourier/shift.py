"""Translation by the Fourier shift theorem: a shift is a phase ramp.

Shifting content by ``s`` pixels, ``y(r) = x(r - s)``, multiplies the transform by
``exp(-2 pi i k . s)`` with ``k`` in cycles/pixel. For integer shifts this is a circular
``torch.roll``; for fractional shifts it is band-limited (sinc) interpolation on the periodic box.

Shift vectors are geometric, ordered ``(x, y[, z])`` (docs/conventions.md), in pixels.

Nyquist: in an even box the frequencies ``+N/2`` and ``-N/2`` are one sample, and the factor
there must be real for the result to stay real. We use ``cos(pi s)`` — the real part of the
ramp — which is exactly what shifting the real trigonometric interpolant (Nyquist term
``a cos(pi n)``) gives. The ramp is therefore Hermitian for every shift and the shifted data are
real on every device (cuFFT and pocketFFT treat non-Hermitian input to ``irfft`` differently).

References
----------
R. N. Bracewell, *The Fourier Transform and Its Applications*, 3rd ed. (2000), ch. 6 (shift
theorem).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError
from cryolab.fourier._dims import as_real, check_ndim, spatial_dims
from cryolab.fourier.transforms import _check_rfft_matches


def _axis_phase_factor(n: int, shift: torch.Tensor, *, half: bool) -> torch.Tensor:
    """``exp(-2 pi i k s / n)`` along one axis, ``(..., n or n//2+1)``; real ``cos(pi s)`` at Nyquist."""
    if half:
        k = torch.arange(n // 2 + 1, device=shift.device, dtype=torch.float64)
    else:
        index = torch.arange(n, device=shift.device)
        k = torch.where(index < (n + 1) // 2, index, index - n).to(torch.float64)
    phase = -2.0 * math.pi * shift.to(torch.float64)[..., None] * k / n
    factor = torch.polar(torch.ones_like(phase), phase)
    if n % 2 == 0:
        nyquist = n // 2
        factor[..., nyquist] = factor[..., nyquist].real.to(factor.dtype)
    return factor


def phase_ramp_rfft(shifts_px, shape: Sequence[int], *, device=None) -> torch.Tensor:
    """The rfft-layout phase ramp that translates real data by ``shifts_px``.

    Parameters
    ----------
    shifts_px
        ``(..., ndim)`` shifts in pixels, ordered ``(x, y[, z])``; leading dimensions broadcast.
    shape
        Real-space shape ``([d,] h, w)``; its length must equal ``ndim``.
    device
        Device of the result (default: that of ``shifts_px``).

    Returns
    -------
    complex64 ``(..., [d,] h, w // 2 + 1)``, unshifted rfft layout.
    """
    shifts_px = as_tensor(shifts_px, device=device)
    shape = tuple(int(s) for s in shape)
    ndim = len(shape)
    if shifts_px.dim() < 1 or shifts_px.shape[-1] != ndim:
        raise InputError(f"shifts_px must have shape (..., {ndim}) for a {ndim}D box, got {tuple(shifts_px.shape)}")
    ramp = None
    for axis, n in enumerate(shape):  # array order (z, y, x); shift components are (x, y, z)
        factor = _axis_phase_factor(n, shifts_px[..., ndim - 1 - axis], half=axis == ndim - 1)
        factor = factor.reshape(*factor.shape[:-1], *([1] * axis), factor.shape[-1], *([1] * (ndim - 1 - axis)))
        ramp = factor if ramp is None else ramp * factor
    return ramp.to(torch.complex64)


def phase_shift_rfft(x_rfft, shifts_px, shape: Sequence[int]) -> torch.Tensor:
    """Translate data given as an unshifted rfft by ``shifts_px`` (x, y[, z]) pixels.

    ``x_rfft`` is ``(..., [d,] h, w // 2 + 1)`` for real spatial ``shape``; the shifts
    ``(..., ndim)`` broadcast against its batch dimensions.
    """
    x_rfft = as_tensor(x_rfft)
    shape = tuple(int(s) for s in shape)
    _check_rfft_matches(x_rfft, shape)
    return x_rfft * phase_ramp_rfft(shifts_px, shape, device=x_rfft.device)


def fourier_shift(x, shifts_px) -> torch.Tensor:
    """Translate real images or volumes by (sub)pixel shifts: ``y(r) = x(r - shift)``.

    Parameters
    ----------
    x
        Real ``(..., [d,] h, w)``.
    shifts_px
        ``(..., ndim)`` shifts in pixels ordered ``(x, y[, z])``; ``ndim`` is read from the last
        axis. Positive x moves content towards larger column indices. Batch dimensions of
        ``x`` and ``shifts_px`` broadcast.

    Returns
    -------
    Real tensor; periodic boundary (content leaving one side re-enters on the other).
    """
    x = as_real(as_tensor(x), "x")
    shifts_px = as_tensor(shifts_px, device=x.device)
    ndim = check_ndim(x, int(shifts_px.shape[-1]) if shifts_px.dim() else 0)
    dims = spatial_dims(ndim)
    shape = tuple(x.shape[-ndim:])
    shifted = torch.fft.rfftn(x, dim=dims) * phase_ramp_rfft(shifts_px, shape, device=x.device)
    return torch.fft.irfftn(shifted, s=shape, dim=dims)
