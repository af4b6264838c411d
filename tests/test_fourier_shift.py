"""cryolab.fourier.shift: the shift theorem, integer and subpixel, (x, y, z) order."""

import math

import pytest
import torch

from cryolab.errors import InputError
from cryolab.fourier import fourier_shift, irfft_centered, phase_ramp_rfft, phase_shift_rfft, rfft_centered


def gaussian(shape, centre_xyz, sigma):
    axes = [torch.arange(n, dtype=torch.float64) - n // 2 for n in shape]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij")[::-1], dim=-1)  # (x, y[, z])
    r2 = ((coords - torch.tensor(centre_xyz, dtype=torch.float64)) ** 2).sum(-1)
    return torch.exp(-r2 / (2 * sigma**2)).float()


@pytest.mark.parametrize("shape", [(12, 12), (13, 11), (6, 7, 8)])
def test_integer_shift_is_a_roll_with_xyz_order(shape):
    torch.manual_seed(0)
    x = torch.randn(2, *shape)
    shift_xyz = (3, -2, 5)[: len(shape)]
    dims = tuple(range(-1, -len(shape) - 1, -1))  # x is the last array axis, y the one before...
    expected = torch.roll(x, shifts=shift_xyz, dims=dims)
    torch.testing.assert_close(fourier_shift(x, torch.tensor(shift_xyz, dtype=torch.float32)), expected,
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("n", [32, 33])
def test_subpixel_shift_moves_a_band_limited_gaussian_exactly(n):
    sigma = 2.0
    shift = (0.5, -1.25)
    shifted = fourier_shift(gaussian((n, n), (0.0, 0.0), sigma), shift)
    torch.testing.assert_close(shifted, gaussian((n, n), shift, sigma), atol=2e-6, rtol=0)
    assert shifted.dtype == torch.float32


def test_subpixel_shift_3d_and_inverse():
    shape = (26, 27, 28)
    volume = gaussian(shape, (0.0, 0.0, 0.0), 2.0)
    shift = (0.3, -0.7, 1.6)
    moved = fourier_shift(volume, shift)
    torch.testing.assert_close(moved, gaussian(shape, shift, 2.0), atol=2e-6, rtol=0)
    torch.testing.assert_close(fourier_shift(moved, [-s for s in shift]), volume, atol=2e-6, rtol=0)


def test_two_half_pixel_shifts_make_one_pixel_roll_in_an_odd_box():
    # (No Nyquist bin in an odd box, so shifts compose exactly; in an even box the Nyquist cosine
    # term is zero at half-pixel offsets and cannot come back.)
    torch.manual_seed(1)
    x = torch.randn(15, 15)
    twice = fourier_shift(fourier_shift(x, (0.5, 0.5)), (0.5, 0.5))
    torch.testing.assert_close(twice, torch.roll(x, (1, 1), (-1, -2)), atol=1e-5, rtol=0)


def test_nyquist_cosine_is_shifted_as_a_real_cosine():
    # x[n] = cos(pi n) in an even box; shifted by s it becomes cos(pi (n - s)) sampled = cos(pi n) cos(pi s).
    n = 8
    row = torch.cos(math.pi * torch.arange(n, dtype=torch.float64)).float()
    image = row.expand(n, n).clone()
    torch.testing.assert_close(fourier_shift(image, (0.25, 0.0)), image * math.cos(math.pi * 0.25),
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("shape", [(8, 8), (8, 9), (6, 8, 10)])
def test_phase_ramp_is_hermitian_so_the_result_is_real_on_every_backend(shape):
    # A Hermitian rfft array survives irfft -> rfft unchanged; exp(-iπs) at Nyquist would not.
    ramp = phase_ramp_rfft(torch.tensor([0.3, -0.45, 0.7][: len(shape)]), shape)
    dims = tuple(range(-len(shape), 0))
    round_trip = torch.fft.rfftn(torch.fft.irfftn(ramp, s=shape, dim=dims), dim=dims)
    torch.testing.assert_close(round_trip, ramp, atol=1e-5, rtol=0)
    assert torch.all(ramp.abs() <= 1 + 1e-6)


def test_batched_shifts_broadcast_and_phase_shift_rfft_agrees():
    image = gaussian((30, 30), (0.0, 0.0), 2.0)
    shifts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 2.5]])
    moved = fourier_shift(image, shifts)
    assert moved.shape == (3, 30, 30)
    for i in range(3):
        torch.testing.assert_close(moved[i], gaussian((30, 30), tuple(shifts[i].tolist()), 2.0), atol=2e-6, rtol=0)
    via_rfft = irfft_centered(phase_shift_rfft(rfft_centered(image, 2), shifts, (30, 30)), (30, 30))
    torch.testing.assert_close(via_rfft, moved, atol=1e-6, rtol=0)


def test_shift_vector_length_must_match_dimensions():
    with pytest.raises(InputError):
        phase_shift_rfft(torch.zeros(8, 5, dtype=torch.complex64), (1.0, 2.0, 3.0), (8, 8))
