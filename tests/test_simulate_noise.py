"""cryolab.simulate.noise: SNR over a stated mask, Poisson counting statistics, detector model."""

import math

import pytest
import torch

from cryolab.errors import InputError
from cryolab.simulate import (GaussianNoise, ParticleParameters, PoissonNoise, apply_mtf, detector_mtf,
                              gaussian_noise_sigma, generator_for, interaction_constant, masked_variance,
                              measured_snr, poisson_counts, poisson_noise, sample_ctf_params, signal_mask,
                              simulate_images, uniform_poses)


def blob_volume(n=32, sigma_px=3.0, offsets=((0, 0, 0), (5, -3, 2), (-4, 4, -3))):
    """A few Gaussian blobs near the centre N//2 of an n³ box (positive density)."""
    c = torch.arange(n, dtype=torch.float32) - n // 2
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    vol = torch.zeros(n, n, n)
    for dx, dy, dz in offsets:
        vol += torch.exp(-((x - dx) ** 2 + (y - dy) ** 2 + (z - dz) ** 2) / (2 * sigma_px**2))
    return vol


@pytest.mark.parametrize("radius_A", [None, 20.0])
def test_gaussian_noise_reaches_target_snr_over_the_stated_mask(radius_A):
    n, px, snr = 96, 2.0, 0.3
    particles = ParticleParameters(uniform_poses(n, generator=generator_for(0, "poses")), None,
                                   sample_ctf_params(n, defocus_min_A=8000, defocus_max_A=20000,
                                                     generator=generator_for(0, "ctf")))
    noise = GaussianNoise(snr, mask_radius_A=radius_A)
    clean, noisy = simulate_images(blob_volume(), particles, px, noise=noise, seed=5)
    mask = signal_mask(32, px, radius_A=radius_A)
    assert measured_snr(clean, noisy, mask=mask) == pytest.approx(snr, rel=0.03)
    # images are normalised so the noise has standard deviation 1
    assert float((noisy - clean).std()) == pytest.approx(1.0, rel=0.02)
    # the stated mask matters: the same data measured over the other mask has another SNR
    other = signal_mask(32, px, radius_A=None if radius_A else 20.0)
    assert abs(measured_snr(clean, noisy, mask=other) - snr) > 0.05 * snr


def test_signal_mask_and_masked_variance():
    mask = signal_mask(32, 2.0, radius_A=10.0)  # radius 5 pixels about (16, 16)
    assert mask[16, 16] and mask[16, 21] and not mask[16, 22] and not mask[0, 0]
    assert int(mask.sum()) == sum(1 for i in range(32) for j in range(32) if (i - 16) ** 2 + (j - 16) ** 2 <= 25)
    assert signal_mask(8, 1.0).all()
    images = torch.zeros(2, 32, 32)
    images[1][mask] = torch.arange(int(mask.sum()), dtype=torch.float32)
    images[1][~mask] = 1e6  # outside the mask: ignored
    var = masked_variance(images, mask)
    assert var[0] == 0 and var[1] == pytest.approx(float(images[1][mask].var(unbiased=False)))
    clean = torch.randn(10, 32, 32)
    sigma = gaussian_noise_sigma(clean, 0.25, mask=mask)
    assert sigma**2 == pytest.approx(float(masked_variance(clean, mask).mean()) / 0.25, rel=1e-5)
    with pytest.raises(InputError):
        signal_mask(32, 2.0, radius_A=0.0)


def test_poisson_counts_mean_equals_variance_on_a_flat_image():
    dose, px = 30.0, 1.2  # 43.2 e per pixel
    g = torch.Generator().manual_seed(0)
    counts = poisson_counts(torch.zeros(200, 64, 64), dose, px, contrast_scale=0.01, generator=g)
    lam = dose * px**2
    assert float(counts.mean()) == pytest.approx(lam, rel=0.003)
    assert float(counts.var()) == pytest.approx(lam, rel=0.01)
    assert torch.equal(counts, counts.round()) and counts.min() >= 0
    # per pixel, across images, too
    per_pixel_mean, per_pixel_var = counts.mean(0), counts.var(0)
    assert float((per_pixel_var / per_pixel_mean).mean()) == pytest.approx(1.0, abs=0.01)


def test_poisson_counts_follow_the_contrast_model():
    image = torch.zeros(400, 16, 16)
    image[:, :, :8] = 10.0  # c · s = 0.2: 20 % fewer electrons where the "protein" is
    counts = poisson_counts(image, 50.0, 1.0, contrast_scale=0.02, generator=torch.Generator().manual_seed(1))
    assert float(counts[:, :, :8].mean()) == pytest.approx(40.0, rel=0.01)
    assert float(counts[:, :, 8:].mean()) == pytest.approx(50.0, rel=0.01)


def test_poisson_noise_output_is_normalised_and_protein_white():
    model = PoissonNoise(dose_e_per_A2=40.0, contrast_scale=0.01, dqe0=0.8)
    flat = torch.zeros(100, 32, 32)
    clean, noisy = poisson_noise(flat, model, 1.0, generator=torch.Generator().manual_seed(2))
    assert torch.all(clean == 0)
    assert float(noisy.mean()) == pytest.approx(0.0, abs=0.01)
    assert float(noisy.std()) == pytest.approx(1.0, rel=0.01)
    assert model.mean_counts(1.0) == pytest.approx(32.0)
    blob = torch.zeros(400, 8, 8)
    blob[:, 4, 4] = 20.0
    clean, noisy = poisson_noise(blob, model, 1.0, generator=torch.Generator().manual_seed(3))
    assert float(noisy[:, 4, 4].mean()) > 0.5  # protein (fewer electrons) comes out white
    assert float(noisy[:, 4, 4].mean()) == pytest.approx(float(clean[0, 4, 4]), rel=0.1)
    assert float(clean[0, 4, 4]) == pytest.approx(math.sqrt(32.0) * 0.01 * 20.0, rel=1e-5)


def test_detector_mtf_sinc_and_white_counting_noise():
    mtf = detector_mtf((16, 16), "sinc")
    assert mtf[0, 0] == 1.0
    assert float(mtf[0, 8]) == pytest.approx(2 / math.pi, rel=1e-5)  # sinc(1/2) at Nyquist
    assert torch.all(detector_mtf((16, 16), "none") == 1)
    custom = detector_mtf((16, 16), lambda k: torch.exp(-k))
    assert float(custom[0, 8]) == pytest.approx(math.exp(-0.5), rel=1e-5)
    x = torch.randn(3, 16, 16)
    assert torch.allclose(apply_mtf(x, "sinc"), torch.fft.irfft2(torch.fft.rfft2(x) * mtf, s=(16, 16)))
    # counting detector: the signal is blurred, the noise stays white (flat power spectrum)
    model = PoissonNoise(dose_e_per_A2=100.0, contrast_scale=0.01, mtf="sinc")
    _, noisy = poisson_noise(torch.zeros(400, 32, 32), model, 1.0, generator=torch.Generator().manual_seed(4))
    power = (torch.fft.rfft2(noisy).abs() ** 2).mean(0) / (32 * 32)
    assert float(power[1:, 1:].mean()) == pytest.approx(1.0, rel=0.02)
    assert float(power[16, 16]) == pytest.approx(1.0, rel=0.2)  # Nyquist not suppressed


def test_interaction_constant():
    # Kirkland (2020), table 5.1 / eq. 5.6: 0.000653 rad/(V·Å) at 300 kV, 0.000729 at 200 kV
    assert interaction_constant(300) == pytest.approx(6.526e-4, rel=2e-3)
    assert interaction_constant(200) == pytest.approx(7.29e-4, rel=2e-3)


def test_noise_models_validate_their_parameters():
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(InputError):
            GaussianNoise(bad)
    with pytest.raises(InputError):
        GaussianNoise(0.1, mask_radius_A=-3)
    with pytest.raises(InputError):
        PoissonNoise(0.0, 0.01)
    with pytest.raises(InputError):
        PoissonNoise(40.0, 0.01, dqe0=1.5)
    with pytest.raises(InputError):
        PoissonNoise(40.0, 0.01, mtf="gaussian")
    assert GaussianNoise(0.1, 50.0).describe()["signal_mask"].startswith("circle radius 50 A")
    assert GaussianNoise(0.1).describe()["signal_mask"] == "box"
