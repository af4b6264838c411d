"""cryolab.fourier.convolve: linear convolution by FFT against scipy.signal."""

import numpy as np
import pytest
import scipy.signal
import torch

from cryolab.errors import InputError
from cryolab.fourier import fft_convolve


@pytest.mark.parametrize(
    "shape_a, shape_b",
    [((50,), (7,)), ((20, 23), (5, 3)), ((16, 17), (9, 9)), ((12, 13, 11), (3, 5, 3)), ((6, 7), (11, 9))],
)
def test_full_and_same_match_scipy_for_odd_kernels(shape_a, shape_b):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    for mode in ("full", "same"):
        expected = scipy.signal.fftconvolve(a, b, mode=mode)
        got = fft_convolve(a, b, mode=mode)
        assert got.shape == expected.shape and got.dtype == torch.float32
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-4, rtol=0)


def test_linear_not_circular_at_the_borders():
    # A delta at the first pixel convolved with a 3-tap kernel: the left tap must fall off the
    # edge ("same") or appear at the start ("full"), never wrap around to the last pixel.
    a = torch.zeros(10)
    a[0] = 1.0
    b = torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(fft_convolve(a, b)[:4], torch.tensor([1.0, 2.0, 3.0, 0.0]), atol=1e-6, rtol=0)
    same = fft_convolve(a, b, mode="same")
    torch.testing.assert_close(same[:2], torch.tensor([2.0, 3.0]), atol=1e-6, rtol=0)
    assert abs(same[-1].item()) < 1e-6


def test_even_kernels_are_centred_at_m_over_2():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((14, 15))
    kernel = np.zeros((4, 6))
    kernel[2, 3] = 1.0  # the centre M // 2: identity
    np.testing.assert_allclose(fft_convolve(a, kernel, mode="same").numpy(), a, atol=1e-5)
    b = rng.standard_normal((4, 6))
    full = scipy.signal.fftconvolve(a, b, mode="full")
    np.testing.assert_allclose(fft_convolve(a, b, mode="same").numpy(), full[2:16, 3:18], atol=1e-4)


def test_complex_inputs_and_batched_kernels():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((3, 12, 12)) + 1j * rng.standard_normal((3, 12, 12))
    b = rng.standard_normal((5, 5))
    got = fft_convolve(a, b, ndim=2, mode="same")  # numpy in: complex64 by the as_tensor rule
    assert got.shape == (3, 12, 12) and got.dtype == torch.complex64
    for i in range(3):
        np.testing.assert_allclose(got[i].numpy(), scipy.signal.fftconvolve(a[i], b, mode="same"), atol=1e-4)


def test_rank_mismatch_needs_ndim():
    with pytest.raises(InputError):
        fft_convolve(torch.zeros(2, 8, 8), torch.zeros(3, 3))
    with pytest.raises(InputError):
        fft_convolve(torch.zeros(8), torch.zeros(3), mode="valid")
