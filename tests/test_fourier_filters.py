"""cryolab.fourier.filters: filter values at chosen frequencies, units, application."""

import math

import pytest
import torch

from cryolab.errors import InputError
from cryolab.fourier import (
    apply_filter,
    bandpass_filter,
    bfactor_filter,
    butterworth_lowpass_filter,
    gaussian_lowpass_filter,
    highpass_filter,
    lowpass_filter,
    rfft_shape,
    shell_to_frequency,
)

N = 100  # on the kx axis of a 100-pixel box, frequency index j is j/100 cycles/pixel


def along_kx(filter_rfft, j):
    """Filter value at (ky = 0, kx = j / N cycles/pixel) of an unshifted rfft grid."""
    return filter_rfft[0, j].item()


def test_raised_cosine_lowpass_values_in_cycles_per_pixel():
    f = lowpass_filter((N, N), 0.20, edge_width=0.04)
    assert f.shape == (N, N // 2 + 1) and f.dtype == torch.float32
    assert along_kx(f, 0) == 1.0 and along_kx(f, 18) == pytest.approx(1.0)
    assert along_kx(f, 19) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)), abs=1e-6)
    assert along_kx(f, 20) == pytest.approx(0.5, abs=1e-6)
    assert along_kx(f, 21) == pytest.approx(0.5 * (1 + math.cos(3 * math.pi / 4)), abs=1e-6)
    assert along_kx(f, 22) == pytest.approx(0.0, abs=1e-7) and along_kx(f, 50) == 0.0
    # Radial: the same value at (ky, kx) = (12, 16)/100, |k| = 0.20.
    assert f[12, 16].item() == pytest.approx(0.5, abs=1e-6) and f[-12, 16].item() == pytest.approx(0.5, abs=1e-6)


def test_units_in_inverse_angstrom_and_fourier_pixels():
    # 2 Å pixels: index j on the kx axis is j / 200 1/Å. Low-pass at 10 Å = 0.1 1/Å = index 20,
    # edge of 4 Fourier pixels = 4 / (100 * 2 Å) 1/Å.
    f = lowpass_filter((N, N), 1 / 10.0, edge_width=shell_to_frequency(4, N, 2.0), pixel_size_A=2.0)
    assert along_kx(f, 20) == pytest.approx(0.5, abs=1e-6)
    assert along_kx(f, 18) == pytest.approx(1.0) and along_kx(f, 22) == pytest.approx(0.0, abs=1e-7)


def test_hard_edges_highpass_and_bandpass():
    low = lowpass_filter((N, N), 0.2)
    assert along_kx(low, 20) == 1.0 and along_kx(low, 21) == 0.0
    high = highpass_filter((N, N), 0.05, edge_width=0.02)
    assert along_kx(high, 0) == 0.0 and along_kx(high, 5) == pytest.approx(0.5) and along_kx(high, 7) == 1.0
    band = bandpass_filter((N, N), 0.05, 0.2, edge_width=0.02)
    values = [along_kx(band, j) for j in (0, 4, 5, 6, 10, 19, 20, 21, 22)]
    assert values == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0, 0.0], abs=1e-6)


def test_gaussian_butterworth_and_bfactor_values():
    gauss = gaussian_lowpass_filter((N, N), 0.1)
    assert along_kx(gauss, 10) == pytest.approx(math.exp(-0.5))
    assert along_kx(gauss, 20) == pytest.approx(math.exp(-2.0))
    butter = butterworth_lowpass_filter((N, N), 0.1, order=3)
    assert along_kx(butter, 0) == 1.0
    assert along_kx(butter, 10) == pytest.approx(1 / math.sqrt(2))
    assert along_kx(butter, 20) == pytest.approx(1 / math.sqrt(1 + 2**6))
    # B = 100 Å², 1 Å pixels: at k = 0.1 1/Å (10 Å) the envelope is exp(-100 * 0.01 / 4).
    bfac = bfactor_filter((N, N), 100.0, 1.0)
    assert along_kx(bfac, 10) == pytest.approx(math.exp(-0.25))
    sharpen = bfactor_filter((N, N), -100.0, 1.0)
    assert along_kx(sharpen, 10) == pytest.approx(math.exp(0.25))


def test_layouts_3d_and_batched_parameters():
    centred = lowpass_filter((N, N), 0.2, edge_width=0.04, rfft=False, fftshift=True)
    assert centred.shape == (N, N)
    assert centred[N // 2, N // 2 + 19].item() == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)), abs=1e-6)
    volume = bfactor_filter((20, 20, 20), 50.0, 1.5)
    assert volume.shape == (20, 20, 11)
    assert volume[0, 4, 3].item() == pytest.approx(math.exp(-50.0 * (25 / (20 * 1.5) ** 2) / 4))
    cutoffs = torch.tensor([0.1, 0.2, 0.3])
    batched = lowpass_filter((N, N), cutoffs, edge_width=0.02)
    assert batched.shape == (3, N, N // 2 + 1)
    for i, c in enumerate(cutoffs.tolist()):
        torch.testing.assert_close(batched[i], lowpass_filter((N, N), c, edge_width=0.02))


def test_apply_lowpass_removes_exactly_the_high_frequency_cosine():
    n = 64
    x = torch.arange(n, dtype=torch.float64)
    low_wave = torch.cos(2 * math.pi * 5 * x / n)[None, :].expand(n, n)
    high_wave = torch.cos(2 * math.pi * 20 * x / n)[:, None].expand(n, n)
    image = (low_wave + high_wave).float()
    filtered = apply_filter(image, lowpass_filter((n, n), 10 / n, edge_width=4 / n), ndim=2)
    torch.testing.assert_close(filtered, low_wave.float(), atol=1e-5, rtol=0)


def test_gaussian_filter_of_a_delta_is_the_matching_real_space_gaussian():
    # exp(-k²/2σ_k²) is the transform of a unit-integral Gaussian of σ = 1/(2π σ_k).
    n, sigma_k = 48, 0.08
    volume = torch.zeros(2, n, n, n)
    volume[:, n // 2, n // 2, n // 2] = 1.0
    blurred = apply_filter(volume, gaussian_lowpass_filter((n, n, n), sigma_k), ndim=3)
    sigma = 1 / (2 * math.pi * sigma_k)
    r2 = sum(c**2 for c in torch.meshgrid(*[torch.arange(n) - n // 2.0] * 3, indexing="ij"))
    expected = torch.exp(-r2 / (2 * sigma**2)) / (2 * math.pi * sigma**2) ** 1.5
    torch.testing.assert_close(blurred[1], expected.float(), atol=1e-6, rtol=0)
    assert blurred.sum().item() == pytest.approx(2.0, rel=1e-5)


def test_filter_errors():
    with pytest.raises(InputError):
        apply_filter(torch.zeros(8, 8), torch.ones(8, 8), ndim=2)
    with pytest.raises(InputError):
        lowpass_filter((8, 8), 0.1, edge_width=-0.1)
    with pytest.raises(InputError):
        bfactor_filter((8, 8), 10.0, 0.0)
    assert rfft_shape((8, 9)) == (8, 5)
