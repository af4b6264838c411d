"""Phase randomisation beyond a resolution, for the FSC masking-effect correction.

Chen et al. (2013) estimate how much a mask inflates the FSC by randomising the phases of both
half maps beyond the resolution where the unmasked FSC starts to fall, masking them, and
comparing FSCs. Randomised phases keep each amplitude and destroy the correlation.

The random phases here are the phases of the FFT of real white noise: uniform on the circle,
independent, and automatically Hermitian (``phase(-k) = -phase(k)``, and 0 or pi on the
self-conjugate bins), so the result is exactly real and its rfft reproduces the amplitudes.

References
----------
S. Chen, G. McMullan, A. R. Faruqi, et al., "High-resolution noise substitution to measure
overfitting and validate resolution in 3D structure determination by single particle electron
cryomicroscopy", Ultramicroscopy 135, 24-35 (2013).
"""

from __future__ import annotations

import math

import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError
from cryolab.fourier._dims import as_real, check_ndim, spatial_dims
from cryolab.fourier.shells import resolution_A_to_shell, shell_index


def _torch_generator(generator: torch.Generator | int | None) -> torch.Generator | None:
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    return torch.Generator().manual_seed(int(generator))


def _random_unit_phases_rfft(shape, batch_shape, generator, device) -> torch.Tensor:
    """Hermitian unit-modulus factors ``(*batch, *rfft_shape)`` from the rfft of white noise."""
    dims = spatial_dims(len(shape))
    noise_device = generator.device if generator is not None else device
    noise = torch.randn(*batch_shape, *shape, generator=generator, device=noise_device).to(device)
    spectrum = torch.fft.rfftn(noise, dim=dims)
    # |noise spectrum| is almost surely nonzero; guard the measure-zero case anyway.
    return torch.where(spectrum.abs() > 0, spectrum / spectrum.abs(), torch.ones_like(spectrum))


def randomize_phases_beyond(
    x,
    shell: int | None = None,
    *,
    ndim: int,
    resolution_A: float | None = None,
    pixel_size_A: float | None = None,
    generator: torch.Generator | int | None = None,
) -> torch.Tensor:
    """Replace the Fourier phases of real data by random ones in every shell beyond a limit.

    Parameters
    ----------
    x
        Real ``(..., N, N)`` images or ``(..., N, N, N)`` volumes (square/cubic boxes). Each
        batch member gets its own random phases.
    shell
        Integer shell; phases of shells ``> shell`` (``round(|k| N)``, docs/conventions.md) are
        randomised, shells ``<= shell`` are returned unchanged.
    ndim
        Number of spatial dimensions (2 or 3).
    resolution_A, pixel_size_A
        Instead of ``shell``: randomise every shell finer than ``resolution_A`` Å, i.e.
        ``shell = floor(N * pixel_size_A / resolution_A)`` (RELION's conversion).
    generator
        A ``torch.Generator`` or an int seed; the same seed gives the same phases on any device
        (the noise is drawn on the generator's device, the CPU for an int seed).

    Returns
    -------
    Real float32 tensor of ``x``'s shape: every Fourier amplitude equal to the input's, phases
    unchanged up to ``shell`` and uniformly random beyond.
    """
    x = as_real(as_tensor(x), "x")
    dims = spatial_dims(check_ndim(x, ndim))
    shape = tuple(x.shape[-ndim:])
    if (shell is None) == (resolution_A is None):
        raise InputError("give exactly one of shell or resolution_A (with pixel_size_A)")
    if shell is None:
        if pixel_size_A is None:
            raise InputError("resolution_A needs pixel_size_A")
        shell = math.floor(float(resolution_A_to_shell(resolution_A, shape[-1], pixel_size_A)))
    shells = shell_index(shape, rfft=True, device=x.device)

    spectrum = torch.fft.rfftn(x, dim=dims)
    phases = _random_unit_phases_rfft(shape, x.shape[: x.dim() - ndim], _torch_generator(generator), x.device)
    randomized = torch.where(shells > int(shell), spectrum.abs() * phases, spectrum)
    return torch.fft.irfftn(randomized, s=shape, dim=dims)
