"""cryolab.fourier.shells: integer shells round(|k| N), radial averages, resolution conversion."""

import math

import numpy as np
import pytest
import torch

from cryolab.errors import InputError
from cryolab.fourier import (
    radial_average,
    radial_profile_to_grid,
    resolution_A_to_shell,
    rfft_centered,
    shell_index,
    shell_to_frequency,
    shell_to_resolution_A,
)


def numpy_shells(shape):
    """round(|k| * N) on the full unshifted grid, computed independently with numpy."""
    n = shape[0]
    k = np.meshgrid(*[np.fft.fftfreq(n) * n for _ in shape], indexing="ij")
    return np.rint(np.sqrt(sum(ki**2 for ki in k))).astype(np.int64)


@pytest.mark.parametrize("shape", [(8, 8), (9, 9), (6, 6, 6), (7, 7, 7)])
def test_shell_index_in_every_layout(shape):
    full = numpy_shells(shape)
    assert np.array_equal(shell_index(shape, rfft=False).numpy(), full)
    assert np.array_equal(shell_index(shape, rfft=True).numpy(), full[..., : shape[-1] // 2 + 1])
    assert np.array_equal(shell_index(shape, rfft=False, fftshift=True).numpy(), np.fft.fftshift(full))
    shifted_half = np.fft.fftshift(full, axes=tuple(range(len(shape) - 1)))[..., : shape[-1] // 2 + 1]
    assert np.array_equal(shell_index(shape, rfft=True, fftshift=True).numpy(), shifted_half)


def test_shell_index_known_values():
    shells = shell_index((10, 10), rfft=True)
    assert shells.dtype == torch.int64 and shells.shape == (10, 6)
    assert shells[0, 0] == 0 and shells[0, 5] == 5 and shells[5, 0] == 5  # Nyquist = N // 2
    assert shells[3, 4] == 5 and shells[1, 1] == 1 and shells[2, 1] == 2  # √5 = 2.24 -> 2
    assert shells[5, 5] == 7  # corner, √50 = 7.07


def test_radial_average_of_a_radial_function_recovers_it():
    n = 16
    profile = torch.linspace(1.0, 3.0, n // 2 + 1) ** 2
    for rfft in (True, False):
        grid = radial_profile_to_grid(profile, (n, n), rfft=rfft)
        torch.testing.assert_close(radial_average(grid, (n, n), rfft=rfft), profile)


def test_radial_average_of_k_squared_matches_a_brute_force_average():
    n = 12
    k2 = (np.fft.fftfreq(n)[:, None] ** 2 + np.fft.fftfreq(n)[None, :] ** 2) * n**2
    shells = numpy_shells((n, n))
    expected = [k2[shells == s].mean() for s in range(n // 2 + 1)]
    got = radial_average(torch.as_tensor(k2), (n, n), rfft=False)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    s = np.arange(n // 2 + 1)
    assert np.all((got.numpy() >= (s - 0.5).clip(0) ** 2) & (got.numpy() <= (s + 0.5) ** 2))  # |k| rounds to s


@pytest.mark.parametrize("shape", [(16, 16), (15, 15), (8, 8, 8), (9, 9, 9)])
def test_rfft_weighted_average_equals_full_spectrum_average_with_batches(shape):
    torch.manual_seed(0)
    ndim = len(shape)
    x = torch.randn(2, 3, *shape)
    power_half = rfft_centered(x, ndim).abs() ** 2
    dims = tuple(range(-ndim, 0))
    power_full = torch.fft.fftn(x, dim=dims).abs() ** 2
    half = radial_average(power_half, shape, rfft=True)
    assert half.shape == (2, 3, shape[0] // 2 + 1)
    torch.testing.assert_close(half, radial_average(power_full, shape, rfft=False), rtol=1e-5, atol=0)
    centred = radial_average(torch.fft.fftshift(power_full, dim=dims), shape, rfft=False, fftshift=True)
    torch.testing.assert_close(centred, half, rtol=1e-5, atol=0)
    # White noise has a flat expected power spectrum of N^d per sample.
    assert abs(half[..., 2:].mean().item() / math.prod(shape) - 1.0) < 0.1


def test_radial_average_n_shells_and_complex_values():
    n = 8
    values = torch.ones(n, n // 2 + 1, dtype=torch.complex64) * (1 + 2j)
    out = radial_average(values, (n, n), n_shells=7)  # shells beyond Nyquist, into the corners
    assert out.shape == (7,) and out.dtype == torch.complex64
    torch.testing.assert_close(out, torch.full((7,), 1 + 2j, dtype=torch.complex64))


def test_radial_profile_to_grid_fill_and_batch():
    profile = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [0.0, -1.0, -2.0, -3.0, -4.0]])
    grid = radial_profile_to_grid(profile, (8, 8), fill_value=-9.0)
    shells = shell_index((8, 8))
    assert grid.shape == (2, 8, 5)
    assert torch.all(grid[0][shells <= 4] == (shells[shells <= 4] + 1).float())
    assert torch.all(grid[:, shells > 4] == -9.0)


def test_shell_resolution_conversion():
    # Shell 10 of a 200-pixel box at 1.5 Å/pixel: 300 Å / 10 = 30 Å, frequency 1/30 1/Å.
    assert shell_to_resolution_A(10, 200, 1.5).item() == pytest.approx(30.0)
    assert resolution_A_to_shell(30.0, 200, 1.5).item() == pytest.approx(10.0)
    assert shell_to_frequency(10, 200, 1.5).item() == pytest.approx(1 / 30)
    assert shell_to_frequency(10, 200).item() == pytest.approx(0.05)  # cycles/pixel
    assert shell_to_resolution_A(100, 200, 1.5).item() == pytest.approx(3.0)  # Nyquist = 2 pixels
    shells = torch.arange(0, 101)
    resolution = shell_to_resolution_A(shells, 200, 1.5)
    assert math.isinf(resolution[0].item())
    torch.testing.assert_close(resolution_A_to_shell(resolution[1:], 200, 1.5), shells[1:].float())


def test_shells_need_a_cubic_box_and_positive_pixel_size():
    with pytest.raises(InputError):
        shell_index((8, 10))
    with pytest.raises(InputError):
        shell_to_resolution_A(3, 64, 0.0)
    with pytest.raises(InputError):
        radial_average(torch.ones(8, 8), (8, 8))  # full-layout values passed as rfft
