"""The toy VAE (cryolab.heterogeneity.toy_vae): rotating bars with one hidden angle."""

import math

import pytest
import torch
from scipy.stats import spearmanr

from cryolab.heterogeneity.toy_vae import (ToyVAE, bar_images, decode_latents, encode_means, kl_divergence_to_standard_normal,
                                           match_bar_angle, reparameterize, toy_train_step, toy_vae_loss, train_toy_vae)


@pytest.fixture(scope="module")
def bars():
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    theta = torch.rand(600, generator=g) * 120
    return theta, bar_images(theta, noise_sigma=0.05, generator=g)


def test_bar_images_rotate_about_the_centre_and_angles_are_recovered():
    images = bar_images([0.0, 90.0, 45.0])
    assert images.shape == (3, 32, 32) and 0 <= float(images.min()) and float(images.max()) <= 1
    # 0°: along x (row 16), 90°: along y (column 16); the 90° bar is the 0° bar transposed
    assert float(images[0, 16, 16 + 9]) > 0.9 and float(images[0, 16 + 9, 16]) < 0.01
    assert torch.allclose(images[1], images[0].T, atol=1e-5)
    angles, corr = match_bar_angle(bar_images([10.0, 75.5, 170.0]), step_deg=0.5)
    assert torch.allclose(angles, torch.tensor([10.0, 75.5, 170.0])) and torch.all(corr > 0.999)


def test_reparameterisation_samples_the_right_gaussian_and_passes_gradients():
    mu = torch.tensor([[1.0, -2.0]], requires_grad=True)
    logvar = torch.tensor([[0.0, math.log(0.25)]], requires_grad=True)
    z = reparameterize(mu.expand(20000, 2), logvar.expand(20000, 2), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(z.mean(0), mu[0], atol=0.03) and torch.allclose(z.std(0), torch.tensor([1.0, 0.5]), atol=0.03)
    z.sum().backward()
    assert torch.allclose(mu.grad, torch.tensor([[20000.0, 20000.0]]))  # dz/dμ = 1 for every sample
    assert logvar.grad is not None and logvar.grad.abs().sum() > 0


def test_kl_term_is_zero_at_the_prior_and_matches_torch_distributions():
    assert float(kl_divergence_to_standard_normal(torch.zeros(1, 3), torch.zeros(1, 3))) == 0.0
    mu, logvar = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.3, -0.7]])
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(2), torch.ones(2))
    expected = torch.distributions.kl_divergence(q, p).sum(-1)
    assert torch.allclose(kl_divergence_to_standard_normal(mu, logvar), expected)
    x = torch.zeros(2, 4, 4)
    terms = toy_vae_loss(torch.ones(2, 4, 4), x, mu.expand(2, 2), logvar.expand(2, 2), beta=2.0, noise_sigma=0.5)
    assert float(terms["reconstruction"]) == pytest.approx(16 / (2 * 0.25))
    assert float(terms["total"]) == pytest.approx(float(terms["reconstruction"] + 2 * terms["kl"]))
    plain = toy_vae_loss(torch.ones(2, 4, 4), x, mu.expand(2, 2), logvar.expand(2, 2), variational=False)
    assert float(plain["total"]) == float(plain["reconstruction"])


def test_one_step_lowers_the_loss_on_its_batch(bars):
    _, images = bars
    torch.manual_seed(0)
    model = ToyVAE(32, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    batch = images[:64]
    first = toy_train_step(model, optimizer, batch, generator=torch.Generator().manual_seed(1))
    for _ in range(10):
        last = toy_train_step(model, optimizer, batch, generator=torch.Generator().manual_seed(1))
    assert last["total"] < first["total"]


def test_vae_latent_encodes_the_angle_and_interpolates_smoothly(bars):
    theta, images = bars
    model, history = train_toy_vae(images, zdim=1, epochs=30, seed=0)
    assert history[-1]["total"] < history[0]["total"]
    mu = encode_means(model, images)[:, 0]
    assert abs(spearmanr(mu, theta).correlation) > 0.9
    # decode along the line between the codes of two observed bars: the angle moves monotonically
    a, b = encode_means(model, bar_images([20.0, 100.0]))
    t = torch.linspace(0, 1, 9)[:, None]
    angles, corr = match_bar_angle(decode_latents(model, (1 - t) * a + t * b))
    steps = torch.diff(angles)
    assert torch.all(steps >= 0) and angles[0] < 30 and angles[-1] > 90
    assert torch.all(corr > 0.9)  # every intermediate decodes to a bar, not a blend of two
    # deterministic for a seed
    again, _ = train_toy_vae(images[:100], zdim=1, epochs=2, seed=3)
    twice, _ = train_toy_vae(images[:100], zdim=1, epochs=2, seed=3)
    assert torch.equal(encode_means(again, images[:5]), encode_means(twice, images[:5]))


def test_kl_term_makes_prior_samples_decode_to_bars(bars):
    """Sampled from Normal(0, I), a VAE's latents decode to bars; a plain autoencoder's do worse.

    With 4 latent dimensions for one angle, the autoencoder leaves 3 directions whose decoding
    nothing constrains; the VAE's KL term pulls every code towards the prior and teaches the
    decoder to answer for the whole region the prior covers.
    """
    _, images = bars
    gen = torch.Generator().manual_seed(7)
    z_prior = torch.randn(300, 4, generator=gen)
    quality = {}
    for variational in (True, False):
        model, history = train_toy_vae(images, zdim=4, variational=variational, epochs=30, seed=0)
        _, corr = match_bar_angle(decode_latents(model, z_prior))
        quality[variational] = float(corr.mean())
    assert quality[True] > 0.9
    assert quality[True] > quality[False] + 0.02, quality
