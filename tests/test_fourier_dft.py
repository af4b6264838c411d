"""cryolab.fourier.dft: the written-out DFT agrees with torch.fft."""

import pytest
import torch

from cryolab.fourier import dft_1d, dft_2d, dft_matrix


@pytest.mark.parametrize("n", [1, 2, 7, 16, 31])
def test_dft_1d_matches_torch_fft_both_directions(n):
    torch.manual_seed(n)
    x = torch.randn(3, n) + 1j * torch.randn(3, n)
    torch.testing.assert_close(dft_1d(x), torch.fft.fft(x), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(dft_1d(x, inverse=True), torch.fft.ifft(x), atol=1e-5, rtol=1e-5)
    real = torch.randn(n)
    torch.testing.assert_close(dft_1d(real), torch.fft.fft(real), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("shape", [(8, 8), (9, 6), (5, 13)])
def test_dft_2d_matches_torch_fft2(shape):
    torch.manual_seed(0)
    x = torch.randn(2, *shape)
    torch.testing.assert_close(dft_2d(x), torch.fft.fft2(x).to(torch.complex64), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(dft_2d(dft_2d(x), inverse=True).real, x, atol=1e-5, rtol=0)


def test_dft_matrix_known_entries_and_inverse():
    w = dft_matrix(4)
    expected = torch.tensor([[1, 1, 1, 1], [1, -1j, -1, 1j], [1, -1, 1, -1], [1, 1j, -1, -1j]], dtype=torch.complex64)
    torch.testing.assert_close(w, expected, atol=1e-7, rtol=0)
    big = dft_matrix(1000, dtype=torch.complex128)
    torch.testing.assert_close(big @ dft_matrix(1000, inverse=True, dtype=torch.complex128),
                               torch.eye(1000, dtype=torch.complex128), atol=1e-10, rtol=0)
