"""Conformational heterogeneity for simulation: discrete states, or a trajectory of maps.

Every particle is the projection of a weighted sum of at most two of the ``M`` input maps,
described by ``map_indices`` ``(n, 2)`` (0-based) and ``map_weights`` ``(n, 2)``:

- **discrete states**: state ``i`` with probability ``weights[i]``; indices ``(i, i)``, weights
  ``(1, 0)``. Written as ``cryolabState`` (1-based, like ``rlnClassNumber``).
- **trajectory**: maps ``0 … M−1`` sit at latent coordinates ``z_m = m / (M − 1)`` along one
  coordinate in [0, 1]. A particle's latent ``z`` is drawn from a mixture of Gaussians truncated
  to [0, 1] (e.g. two clusters). With ``"nearest"`` it is the projection of the nearest map; with
  ``"linear"`` of ``(1 − t) V_m + t V_{m+1}`` for ``z = (m + t) / (M − 1)``, computed as the same
  blend of the two projections (projection is linear). ``cryolabLatent`` holds ``z`` and
  ``cryolabState`` the nearest map (1-based).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cryolab._tensor import as_tensor
from cryolab.errors import InputError


@dataclass(frozen=True)
class MapAssignment:
    """Which maps make each particle: ``(n, 2)`` indices and weights, the state and the latent."""

    map_indices: torch.Tensor
    map_weights: torch.Tensor
    state: torch.Tensor
    latent: torch.Tensor | None = None


def single_map(n: int) -> MapAssignment:
    """Every particle from map 0 (homogeneous data)."""
    zeros = torch.zeros(n, 2, dtype=torch.long)
    w = torch.zeros(n, 2)
    w[:, 0] = 1.0
    return MapAssignment(zeros, w, torch.zeros(n, dtype=torch.long))


def sample_discrete_states(n: int, weights, *, generator: torch.Generator | None = None) -> MapAssignment:
    """Draw a state per particle with probabilities proportional to ``weights`` ``(M,)``."""
    w = as_tensor(weights, dtype=torch.float64).reshape(-1)
    if w.numel() < 1 or (w < 0).any() or not torch.isfinite(w).all() or w.sum() <= 0:
        raise InputError(f"state weights must be non-negative with a positive sum, got {w.tolist()}")
    state = torch.multinomial(w / w.sum(), n, replacement=True, generator=generator)
    mw = torch.zeros(n, 2)
    mw[:, 0] = 1.0
    return MapAssignment(torch.stack([state, state], dim=-1), mw, state)


def sample_latent(n: int, *, means, sigmas, weights=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(n,)`` latent coordinates from a mixture of normals truncated to [0, 1].

    Each component is sampled exactly by inverting its truncated CDF,
    ``z = μ + σ Φ⁻¹(U(Φ((0 − μ)/σ), Φ((1 − μ)/σ)))``.
    """
    mu = as_tensor(means, dtype=torch.float64).reshape(-1)
    sd = as_tensor(sigmas, dtype=torch.float64).reshape(-1)
    if sd.numel() == 1 and mu.numel() > 1:
        sd = sd.expand(mu.numel())
    if mu.numel() < 1 or sd.numel() != mu.numel():
        raise InputError(f"{mu.numel()} latent means but {sd.numel()} sigmas")
    if (sd <= 0).any():
        raise InputError(f"latent sigmas must be positive, got {sd.tolist()}")
    if weights is None:
        w = torch.ones_like(mu)
    else:
        w = as_tensor(weights, dtype=torch.float64).reshape(-1)
        if w.numel() != mu.numel() or (w < 0).any() or w.sum() <= 0:
            raise InputError(f"latent weights must be {mu.numel()} non-negative numbers with a positive sum")
    comp = torch.multinomial(w / w.sum(), n, replacement=True, generator=generator)
    m, s = mu[comp], sd[comp]
    normal = torch.distributions.Normal(torch.zeros((), dtype=torch.float64), torch.ones((), dtype=torch.float64))
    lo, hi = normal.cdf((0 - m) / s), normal.cdf((1 - m) / s)
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    p = torch.clamp(lo + u * (hi - lo), 1e-15, 1 - 1e-15)
    z = m + s * normal.icdf(p)
    return torch.clamp(z, 0.0, 1.0).to(torch.float32)


def trajectory_assignment(latent, n_maps: int, *, interpolation: str = "nearest") -> MapAssignment:
    """Maps and weights of particles at latent coordinates ``z`` ∈ [0, 1] on an ``n_maps`` trajectory."""
    if n_maps < 2:
        raise InputError(f"a trajectory needs at least two maps, got {n_maps}")
    z = as_tensor(latent, dtype=torch.float64).reshape(-1).clamp(0.0, 1.0)
    pos = z * (n_maps - 1)
    nearest = torch.round(pos).long().clamp(0, n_maps - 1)
    n = z.numel()
    if interpolation == "nearest":
        idx = torch.stack([nearest, nearest], dim=-1)
        w = torch.zeros(n, 2)
        w[:, 0] = 1.0
    elif interpolation == "linear":
        lower = torch.floor(pos).long().clamp(0, n_maps - 2)
        t = (pos - lower).to(torch.float32)
        idx = torch.stack([lower, lower + 1], dim=-1)
        w = torch.stack([1 - t, t], dim=-1)
    else:
        raise InputError(f"interpolation must be 'nearest' or 'linear', got {interpolation!r}")
    return MapAssignment(idx, w, nearest, z.to(torch.float32))
