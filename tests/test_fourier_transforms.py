"""cryolab.fourier.transforms: analytic transforms, Parseval, centring at N // 2, layouts."""

import math

import numpy as np
import pytest
import torch

from cryolab.errors import InputError
from cryolab.fourier import (
    fft_centered,
    fftfreq_grid,
    fftshift,
    ifft_centered,
    ifftshift,
    irfft_centered,
    rfft_centered,
    rfft_fftshift,
    rfft_ifftshift,
    rfft_shape,
)


def centred_coordinates(shape):
    """Pixel coordinates (x, y[, z]) relative to the centre N // 2, on the array grid."""
    axes = [torch.arange(n, dtype=torch.float64) - n // 2 for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij")[::-1], dim=-1)


@pytest.mark.parametrize("shape", [(64, 64), (65, 65), (64, 65), (32, 32, 32), (33, 33, 33)])
def test_gaussian_transforms_to_the_sampled_continuous_gaussian(shape):
    # f(r) = exp(-|r|²/2σ²)  <->  F(k) = (2π σ²)^(d/2) exp(-2π² σ² |k|²), k in cycles/pixel.
    sigma = 2.5
    ndim = len(shape)
    r2 = (centred_coordinates(shape) ** 2).sum(-1)
    gaussian = torch.exp(-r2 / (2 * sigma**2)).float()
    spectrum = rfft_centered(gaussian, ndim)
    k2 = (fftfreq_grid(shape, rfft=True).double() ** 2).sum(-1)
    expected = (2 * math.pi * sigma**2) ** (ndim / 2) * torch.exp(-2 * math.pi**2 * sigma**2 * k2)
    peak = expected.max().item()
    assert spectrum.dtype == torch.complex64
    assert spectrum.shape == rfft_shape(shape)
    assert spectrum.imag.abs().max() < 1e-5 * peak  # symmetric about N//2: no phase ramp
    torch.testing.assert_close(spectrum.real.double(), expected, atol=1e-5 * peak, rtol=0)


@pytest.mark.parametrize("shape", [(16, 16), (15, 15), (8, 9, 10)])
def test_parseval_with_backward_normalisation(shape):
    torch.manual_seed(0)
    x = torch.randn(3, *shape)
    ndim = len(shape)
    n_samples = math.prod(shape)
    energy = (x**2).sum(dim=tuple(range(-ndim, 0)))
    full = fft_centered(x, ndim)
    torch.testing.assert_close((full.abs() ** 2).sum(dim=tuple(range(-ndim, 0))) / n_samples, energy)
    # The rfft half spectrum counts every column but DC (and even-N Nyquist) twice.
    half = rfft_centered(x, ndim)
    weights = torch.full((shape[-1] // 2 + 1,), 2.0)
    weights[0] = 1
    if shape[-1] % 2 == 0:
        weights[-1] = 1
    torch.testing.assert_close((half.abs() ** 2 * weights).sum(dim=tuple(range(-ndim, 0))) / n_samples, energy)


@pytest.mark.parametrize("shape", [(8, 8), (9, 9), (6, 7), (4, 5, 6), (5, 5, 5)])
def test_delta_at_centre_has_a_real_constant_transform_and_comes_back_there(shape):
    ndim = len(shape)
    delta = torch.zeros(shape)
    delta[tuple(n // 2 for n in shape)] = 1.0
    for spectrum in (rfft_centered(delta, ndim), fft_centered(delta, ndim)):
        torch.testing.assert_close(spectrum, torch.ones_like(spectrum))
    # A flat spectrum goes back to a delta at N // 2, for odd and even N.
    torch.testing.assert_close(irfft_centered(torch.ones(rfft_shape(shape), dtype=torch.complex64), shape), delta)
    torch.testing.assert_close(ifft_centered(torch.ones(shape, dtype=torch.complex64), ndim).real, delta)


@pytest.mark.parametrize("n", [10, 11])
def test_off_centre_delta_gives_the_shift_theorem_phase_ramp(n):
    # A delta at centre + (dx, dy) has transform exp(-2πi (kx dx + ky dy)).
    dx, dy = 2, -3
    delta = torch.zeros(n, n)
    delta[n // 2 + dy, n // 2 + dx] = 1.0
    k = fftfreq_grid((n, n), rfft=True).double()
    expected = torch.exp(-2j * math.pi * (k[..., 0] * dx + k[..., 1] * dy)).to(torch.complex64)
    torch.testing.assert_close(rfft_centered(delta, 2), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(12, 12), (13, 11), (6, 7, 8)])
def test_round_trips_and_agreement_between_rfft_and_full_layouts(shape):
    torch.manual_seed(1)
    ndim = len(shape)
    x = torch.randn(2, *shape)
    half, full = rfft_centered(x, ndim), fft_centered(x, ndim)
    torch.testing.assert_close(half, full[..., : shape[-1] // 2 + 1], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(irfft_centered(half, shape), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(ifft_centered(full, ndim).real, x, atol=1e-5, rtol=0)
    # The centred rfft layout is the centred full layout restricted to kx >= 0.
    centred_half = rfft_fftshift(half, ndim)
    non_negative_kx = fftshift(full, ndim)[..., shape[-1] // 2 :]  # lacks +N/2 for even N
    torch.testing.assert_close(centred_half[..., : (shape[-1] + 1) // 2], non_negative_kx, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(rfft_ifftshift(centred_half, ndim), half)
    torch.testing.assert_close(ifftshift(fftshift(x, ndim), ndim), x)
    assert fftshift(x, ndim)[(0, *(n // 2 for n in shape))] == x[(0, *(0 for _ in shape))]


def test_batch_dimensions_are_transformed_independently_and_numpy_is_accepted():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 8, 9))
    batched = rfft_centered(x, 2)
    assert batched.shape == (2, 3, 8, 5) and batched.dtype == torch.complex64
    torch.testing.assert_close(batched[1, 2], rfft_centered(x[1, 2], 2))
    volume = rfft_centered(x[0], 3)
    assert volume.shape == (3, 8, 5)


def test_bad_inputs_raise_input_error():
    with pytest.raises(InputError):
        rfft_centered(torch.zeros(4, 4, dtype=torch.complex64), 2)
    with pytest.raises(InputError):
        irfft_centered(torch.zeros(4, 4, dtype=torch.complex64), (4, 4))  # rfft of (4, 4) is (4, 3)
    with pytest.raises(InputError):
        rfft_centered(torch.zeros(4), 2)
