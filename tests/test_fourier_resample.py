"""cryolab.fourier.crop and .resample: centring, exact Fourier resampling, Nyquist handling."""

import math

import pytest
import torch

from cryolab.errors import InputError
from cryolab.fourier import (
    crop_center,
    fourier_crop,
    fourier_crop_rfft,
    fourier_pad,
    fourier_pad_rfft,
    fourier_resample,
    pad_center,
    rfft_centered,
)

PARITY_PAIRS = [(8, 12), (8, 13), (9, 12), (9, 14), (8, 16), (9, 18)]


def centred_coordinates(shape, pixel):
    """Physical coordinates (x, y[, z]) of the samples, origin at index N // 2."""
    axes = [(torch.arange(n, dtype=torch.float64) - n // 2) * p for n, p in zip(shape, pixel)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij")[::-1], dim=-1)


def band_limited_signal(shape, box_length, max_shape):
    """A fixed sum of cosines, band-limited to a box of ``max_shape`` samples over ``box_length``.

    Includes, per axis of even length in ``max_shape``, the Nyquist cosine (the one bin both
    resampling directions must split or fold correctly), so the test fails if that is wrong.
    """
    torch.manual_seed(42)
    ndim = len(shape)
    coords = centred_coordinates(shape, [box_length / n for n in shape])
    terms = []
    for _ in range(6):
        k = torch.tensor([torch.randint(-((m - 1) // 2), (m - 1) // 2 + 1, ()).item() for m in max_shape[::-1]],
                         dtype=torch.float64)  # (kx, ky[, kz]) in cycles per box
        terms.append((k, torch.rand(()).item() * 2 * math.pi, torch.randn(()).item()))
    for axis in range(ndim):
        m = max_shape[::-1][axis]
        if m % 2 == 0:
            k = torch.zeros(ndim, dtype=torch.float64)
            k[axis] = m / 2
            terms.append((k, 0.0, 0.7))
    signal = torch.full(shape, 0.3, dtype=torch.float64)  # the mean
    for k, phase, amplitude in terms:
        signal = signal + amplitude * torch.cos(2 * math.pi * (coords @ k) / box_length + phase)
    return signal.float()


@pytest.mark.parametrize("n, m", PARITY_PAIRS)
def test_pad_center_then_crop_center_is_identity_and_keeps_the_centre(n, m):
    torch.manual_seed(0)
    x = torch.randn(2, n, n)
    padded = pad_center(x, m, ndim=2, value=-1.0)
    assert padded.shape == (2, m, m)
    assert torch.equal(padded[:, m // 2, m // 2], x[:, n // 2, n // 2])
    assert padded[0, 0, 0] == -1.0
    assert torch.equal(crop_center(padded, n, ndim=2), x)
    volume = torch.randn(n, n + 1, n)
    assert torch.equal(crop_center(pad_center(volume, (m, m + 2, m + 1)), volume.shape), volume)


@pytest.mark.parametrize("n, m", PARITY_PAIRS)
def test_fourier_pad_then_crop_is_an_exact_identity(n, m):
    torch.manual_seed(1)
    x = torch.randn(3, n, n)
    padded = fourier_pad(x, m, ndim=2)
    assert padded.shape == (3, m, m)
    torch.testing.assert_close(fourier_crop(padded, n, ndim=2), x, atol=2e-6, rtol=0)
    # Sinc interpolation reproduces the samples the grids share: the centre, and for m = 2n all.
    torch.testing.assert_close(padded[:, m // 2, m // 2], x[:, n // 2, n // 2], atol=2e-6, rtol=0)
    if m == 2 * n:
        torch.testing.assert_close(padded[:, (m // 2) % 2 :: 2, (m // 2) % 2 :: 2], x, atol=2e-6, rtol=0)
    torch.testing.assert_close(padded.mean(dim=(-2, -1)), x.mean(dim=(-2, -1)), atol=1e-6, rtol=0)


def test_fourier_pad_then_crop_3d_and_non_cubic():
    torch.manual_seed(2)
    volume = torch.randn(6, 7, 8)
    padded = fourier_pad(volume, (9, 10, 11))
    torch.testing.assert_close(fourier_crop(padded, (6, 7, 8)), volume, atol=2e-6, rtol=0)


@pytest.mark.parametrize("n, m", PARITY_PAIRS)
def test_band_limited_signal_is_resampled_exactly_both_ways(n, m):
    box_length = 37.0  # Å; the physical box is the same on both grids
    coarse = band_limited_signal((n, n), box_length, (n, n))
    fine = band_limited_signal((m, m), box_length, (n, n))
    torch.testing.assert_close(fourier_pad(coarse, m, ndim=2), fine, atol=1e-5, rtol=0)
    torch.testing.assert_close(fourier_crop(fine, n, ndim=2), coarse, atol=1e-5, rtol=0)
    resampled, pixel = fourier_resample(fine, n, box_length / m, ndim=2)
    assert pixel == pytest.approx(box_length / n)
    torch.testing.assert_close(resampled, coarse, atol=1e-5, rtol=0)


def test_band_limited_signal_resampled_exactly_in_3d():
    coarse = band_limited_signal((8, 9, 10), 20.0, (8, 9, 10))
    fine = band_limited_signal((11, 12, 14), 20.0, (8, 9, 10))
    torch.testing.assert_close(fourier_pad(coarse, (11, 12, 14)), fine, atol=2e-5, rtol=0)
    torch.testing.assert_close(fourier_crop(fine, (8, 9, 10)), coarse, atol=2e-5, rtol=0)


@pytest.mark.parametrize("n, m", [(64, 32), (64, 45), (65, 40), (65, 33)])
def test_fourier_crop_of_a_gaussian_is_the_gaussian_on_the_coarser_grid(n, m):
    sigma_A, pixel_A = 6.0, 1.0
    fine = torch.exp(-(centred_coordinates((n, n), (pixel_A,) * 2) ** 2).sum(-1) / (2 * sigma_A**2)).float()
    coarse, new_pixel_A = fourier_resample(fine, m, pixel_A, ndim=2)
    assert new_pixel_A == pytest.approx(pixel_A * n / m)
    expected = torch.exp(-(centred_coordinates((m, m), (new_pixel_A,) * 2) ** 2).sum(-1) / (2 * sigma_A**2))
    torch.testing.assert_close(coarse, expected.float(), atol=1e-5, rtol=0)
    assert torch.argmax(coarse).item() == (m // 2) * m + m // 2  # still centred at M // 2


@pytest.mark.parametrize("shape, new_shape", [((8, 8), (12, 12)), ((8, 9), (11, 14)), ((6, 6, 6), (9, 10, 8))])
def test_rfft_level_crop_and_pad_give_hermitian_spectra(shape, new_shape):
    # A spectrum that survives irfft -> rfft unchanged is the rfft of a real array: the
    # Nyquist bins were split (pad) and folded (crop) consistently.
    torch.manual_seed(3)
    ndim = len(shape)
    dims = tuple(range(-ndim, 0))
    spectrum = rfft_centered(torch.randn(shape), ndim)
    for out, out_shape in (
        (fourier_pad_rfft(spectrum, shape, tuple(max(a, b) for a, b in zip(shape, new_shape))),
         tuple(max(a, b) for a, b in zip(shape, new_shape))),
        (fourier_crop_rfft(spectrum, shape, tuple(min(a, b) - 1 for a, b in zip(shape, new_shape))),
         tuple(min(a, b) - 1 for a, b in zip(shape, new_shape))),
    ):
        again = torch.fft.rfftn(torch.fft.irfftn(out, s=out_shape, dim=dims), dim=dims)
        torch.testing.assert_close(again, out, atol=1e-4, rtol=1e-5)
    assert fourier_pad_rfft(spectrum, shape, new_shape)[(0,) * ndim] == spectrum[(0,) * ndim]  # DC untouched


def test_resampling_rejects_wrong_directions_and_ambiguous_sizes():
    x = torch.zeros(2, 8, 8)
    with pytest.raises(InputError):
        fourier_crop(x, 10, ndim=2)
    with pytest.raises(InputError):
        fourier_pad(x, 6, ndim=2)
    with pytest.raises(InputError):
        fourier_crop(x, 6)  # a single size needs ndim
    with pytest.raises(InputError):
        crop_center(x, 10, ndim=2)
    with pytest.raises(InputError):
        pad_center(x, 6, ndim=2)
    with pytest.raises(InputError):
        fourier_resample(torch.zeros(8, 10), (6, 8), 1.0)
    with pytest.raises(InputError):
        fourier_resample(x, 6, 0.0, ndim=2)
