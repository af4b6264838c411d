"""A variational autoencoder small enough to read and to train in seconds: images of a rotating bar.

The data have one hidden degree of freedom, the bar's angle θ (:func:`bar_images`); everything
else (position, length, width) is fixed. A VAE (:class:`ToyVAE`) maps each image to a Gaussian
``q(z | x) = Normal(μ(x), diag(exp(logvar(x))))`` over a small latent space and decodes a latent
back to an image. Training maximises the evidence lower bound (ELBO)

    log p(x) ≥ E_q[log p(x | z)] − KL(q(z | x) ‖ Normal(0, I)),

with a Gaussian likelihood ``p(x | z) = Normal(decoder(z), σ² I)``, so that the first term is
``−‖x − decoder(z)‖² / (2σ²)`` up to a constant (:func:`toy_vae_loss`). The expectation is
estimated with one sample ``z = μ + exp(logvar / 2) · ε``, ``ε ~ Normal(0, I)``
(:func:`reparameterize`): writing the sample as a deterministic function of ``μ``, ``logvar``
and an independent ``ε`` lets gradients flow into the encoder (Kingma & Welling 2014).

With ``variational=False`` the same network is a plain autoencoder: ``z = μ(x)``, no noise, no
KL term. Comparing the two (``notebooks/08_variational_autoencoders.py``) shows why the KL term
matters: it packs the codes of all images into the region the prior covers and makes the
decoder answer for whole neighbourhoods of latent space, not just for the points it was
trained on, so interpolating between codes — or sampling the prior — decodes to plausible
images.

:func:`toy_train_step` is one optimisation step; :func:`train_toy_vae` the short driver.

References
----------
D. P. Kingma, M. Welling, "Auto-encoding variational Bayes", ICLR 2014; C. Doersch, "Tutorial
on variational autoencoders", arXiv:1606.05908 (2016).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cryolab._tensor import as_tensor
from cryolab.errors import InputError

__all__ = [
    "ToyVAE",
    "bar_images",
    "decode_latents",
    "encode_means",
    "kl_divergence_to_standard_normal",
    "match_bar_angle",
    "reparameterize",
    "toy_train_step",
    "toy_vae_loss",
    "train_toy_vae",
]


def bar_images(theta_deg, *, size: int = 32, length_px: float = 22.0, width_px: float = 6.0, edge_px: float = 2.0,
               noise_sigma: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Images of a bar through the centre at angle θ (degrees, counter-clockwise from +x).

    The bar is the set of points within ``width_px / 2`` of a segment of length ``length_px``
    centred at pixel ``size // 2``; its edges are smoothed over about ``edge_px`` pixels (a
    logistic fall-off of the distance), so the image is a smooth function of θ. Values are in
    [0, 1] (1 inside) plus optional white Gaussian noise of standard deviation ``noise_sigma``.

    Parameters
    ----------
    theta_deg : (n,) array-like
        Angles in degrees. θ and θ + 180° give the same image.

    Returns
    -------
    float32 tensor ``(n, size, size)``, axes ``(y, x)``, ``x = j - size//2``, ``y = i - size//2``.
    """
    theta = as_tensor(theta_deg, dtype=torch.float64).reshape(-1)
    if size < 8:
        raise InputError(f"image size must be at least 8 pixels, got {size}")
    axis = torch.arange(size, dtype=torch.float64) - size // 2
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    t = torch.deg2rad(theta)[:, None, None]
    along = x * torch.cos(t) + y * torch.sin(t)
    across = -x * torch.sin(t) + y * torch.cos(t)
    # distance from the segment: beyond its ends, from the nearest end point
    beyond = (along.abs() - length_px / 2).clamp(min=0)
    distance = torch.sqrt(beyond**2 + across**2)
    images = torch.sigmoid((width_px / 2 - distance) / max(edge_px, 1e-6) * 4)
    if noise_sigma > 0:
        images = images + noise_sigma * torch.randn(images.shape, generator=generator, dtype=torch.float64)
    return images.float()


def match_bar_angle(images, *, step_deg: float = 0.5, **bar_options) -> tuple[torch.Tensor, torch.Tensor]:
    """The bar angle that best explains each image, by correlation with noise-free bars.

    Returns ``(theta_deg (n,), correlation (n,))``: for each image the angle in [0°, 180°) of the
    template (:func:`bar_images` with ``bar_options``) with the highest Pearson correlation, and
    that correlation (1 for a perfect bar, near 0 for an image that is no bar at all).
    """
    x = as_tensor(images, dtype=torch.float64)
    if x.dim() == 2:
        x = x[None]
    size = x.shape[-1]
    grid = torch.arange(0.0, 180.0, float(step_deg), dtype=torch.float64)
    templates = bar_images(grid, size=size, **bar_options).double().reshape(len(grid), -1)

    def standardise(a):
        a = a - a.mean(-1, keepdim=True)
        return a / a.norm(dim=-1, keepdim=True).clamp(min=1e-12)

    corr = standardise(x.reshape(x.shape[0], -1)) @ standardise(templates).T
    best, index = corr.max(dim=1)
    return grid[index].float(), best.float()


class ToyVAE(nn.Module):
    """A small fully connected (variational) autoencoder for ``size × size`` images.

    Encoder: ``size² → hidden → hidden/4 → 2·zdim`` (``μ`` and ``logvar``), ReLU between.
    Decoder: ``zdim → hidden/4 → hidden → size²``. With ``variational=False`` the forward pass
    uses ``z = μ`` (a plain autoencoder; ``logvar`` is computed but ignored).
    """

    def __init__(self, size: int = 32, zdim: int = 1, *, hidden: int = 128, variational: bool = True):
        super().__init__()
        if zdim < 1 or size < 8 or hidden < 8:
            raise InputError(f"need zdim >= 1, size >= 8, hidden >= 8; got {zdim}, {size}, {hidden}")
        self.size, self.zdim, self.variational = int(size), int(zdim), bool(variational)
        n = self.size * self.size
        self.encoder = nn.Sequential(nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, hidden // 4), nn.ReLU(),
                                     nn.Linear(hidden // 4, 2 * zdim))
        self.decoder = nn.Sequential(nn.Linear(zdim, hidden // 4), nn.ReLU(), nn.Linear(hidden // 4, hidden), nn.ReLU(),
                                     nn.Linear(hidden, n))

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, size, size)`` -> ``μ (B, zdim)``, ``logvar (B, zdim)``."""
        out = self.encoder(images.reshape(images.shape[0], -1))
        return out[:, : self.zdim], out[:, self.zdim :]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, zdim)`` -> images ``(B, size, size)``."""
        return self.decoder(z).reshape(z.shape[0], self.size, self.size)

    def forward(self, images: torch.Tensor, *, generator: torch.Generator | None = None):
        """Reconstructions, ``μ``, ``logvar`` and the latent used (a sample if variational, else ``μ``)."""
        mu, logvar = self.encode(images)
        z = reparameterize(mu, logvar, generator=generator) if self.variational else mu
        return self.decode(z), mu, logvar, z


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """A sample of ``Normal(μ, exp(logvar))`` written as ``μ + exp(logvar / 2) · ε``, ``ε ~ Normal(0, I)``.

    The randomness sits in ``ε``, which does not depend on the network, so ``z`` is a
    differentiable function of ``μ`` and ``logvar``: back-propagation reaches the encoder. A
    sample drawn directly from ``Normal(μ, σ²)`` would have no gradient with respect to ``μ``, σ.
    """
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
    return mu + torch.exp(0.5 * logvar) * eps


def kl_divergence_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(Normal(μ, diag σ²) ‖ Normal(0, I)) = ½ Σ (μ² + σ² − 1 − log σ²)`` per row, in nats: ``(B, zdim)`` -> ``(B,)``."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def toy_vae_loss(reconstruction, images, mu, logvar, *, beta: float = 1.0, noise_sigma: float = 0.3,
                 variational: bool = True) -> dict:
    """Negative ELBO per image (averaged over the batch), and its two parts.

    ``reconstruction = ‖x − x̂‖² / (2 σ²)`` (the negative Gaussian log-likelihood with pixel noise
    ``σ = noise_sigma``, constant dropped) and ``kl`` from
    :func:`kl_divergence_to_standard_normal`; ``total = reconstruction + β · kl``. For a plain
    autoencoder (``variational=False``) the total is the reconstruction term alone (``kl`` is
    still reported).

    Returns
    -------
    dict of scalar tensors ``total``, ``reconstruction``, ``kl``.
    """
    sq = (reconstruction - images).pow(2).flatten(1).sum(1)
    rec = (sq / (2.0 * noise_sigma**2)).mean()
    kl = kl_divergence_to_standard_normal(mu, logvar).mean()
    total = rec + beta * kl if variational else rec
    return {"total": total, "reconstruction": rec, "kl": kl}


def toy_train_step(model: ToyVAE, optimizer: torch.optim.Optimizer, images: torch.Tensor, *, beta: float = 1.0,
                   noise_sigma: float = 0.3, generator: torch.Generator | None = None) -> dict:
    """One gradient step on a batch ``(B, size, size)``; returns the loss terms as floats."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    recon, mu, logvar, _ = model(images, generator=generator)
    losses = toy_vae_loss(recon, images, mu, logvar, beta=beta, noise_sigma=noise_sigma, variational=model.variational)
    losses["total"].backward()
    optimizer.step()
    return {k: float(v.detach()) for k, v in losses.items()}


def train_toy_vae(images, *, zdim: int = 1, variational: bool = True, epochs: int = 40, batch_size: int = 64,
                  learning_rate: float = 2e-3, beta: float = 1.0, noise_sigma: float = 0.3, hidden: int = 128,
                  seed: int = 0) -> tuple[ToyVAE, list[dict]]:
    """Train a :class:`ToyVAE` (or plain autoencoder) on images ``(n, size, size)`` with Adam.

    Deterministic for a given ``seed`` (initialisation, batch order and reparameterisation noise
    come from seeded generators). Returns the model (in eval mode) and one dict of mean loss
    terms per epoch.

    ``noise_sigma`` is the pixel noise the likelihood assumes: it sets how much a squared pixel
    error costs against a nat of KL. Too small (0.1 for images in [0, 1]) and reconstruction
    dominates: the encoder is free to fold the single angle onto a non-monotonic curve. At the
    default 0.3 the KL term keeps the latent ordered (|Spearman(μ, θ)| ≈ 1 for rotating bars).
    """
    x = as_tensor(images, dtype=torch.float32)
    if x.dim() != 3 or x.shape[1] != x.shape[2] or x.shape[0] < 2:
        raise InputError(f"images must be (n >= 2, size, size), got shape {tuple(x.shape)}")
    if epochs < 1 or batch_size < 1:
        raise InputError(f"epochs and batch size must be >= 1, got {epochs}, {batch_size}")
    torch.manual_seed(seed)  # weight initialisation
    model = ToyVAE(x.shape[-1], zdim, hidden=hidden, variational=variational)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    order_gen = torch.Generator().manual_seed(seed + 1)
    noise_gen = torch.Generator().manual_seed(seed + 2)
    history = []
    n_batches = math.ceil(x.shape[0] / batch_size)
    for epoch in range(epochs):
        order = torch.randperm(x.shape[0], generator=order_gen)
        sums = {"total": 0.0, "reconstruction": 0.0, "kl": 0.0}
        for b in range(n_batches):
            step = toy_train_step(model, optimizer, x[order[b * batch_size : (b + 1) * batch_size]], beta=beta,
                                  noise_sigma=noise_sigma, generator=noise_gen)
            for k in sums:
                sums[k] += step[k] / n_batches
        history.append({"epoch": epoch + 1, **sums})
    model.eval()
    return model, history


@torch.no_grad()
def encode_means(model: ToyVAE, images) -> torch.Tensor:
    """Latent means ``μ(x)`` of images ``(n, size, size)`` -> ``(n, zdim)``."""
    model.eval()
    return model.encode(as_tensor(images, dtype=torch.float32))[0]


@torch.no_grad()
def decode_latents(model: ToyVAE, z) -> torch.Tensor:
    """Decoded images of latents ``(n, zdim)`` -> ``(n, size, size)``."""
    model.eval()
    z = as_tensor(z, dtype=torch.float32)
    return model.decode(z.reshape(-1, model.zdim))
