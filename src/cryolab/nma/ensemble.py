"""Conformational ensembles along normal modes, turned into maps and images for the simulator.

A particle's conformation is the reference model displaced along chosen ANM modes by amplitudes
``a`` (Å RMSD over all atoms, :mod:`cryolab.nma.deform`) drawn from a latent distribution:
a Gaussian about the reference, or a mixture of Gaussians (sub-states along the motion).

Two ways to image an ensemble:

- **Binned maps** (data sets, :func:`bin_amplitudes` → :func:`conformation_maps` →
  :func:`conformation_assignment`): the latent is quantised into ``K`` conformations (equal-width
  bins in 1D, k-means in more dimensions); each gets a Coulomb potential
  (:func:`cryolab.atoms.atoms_to_potential`), and particle ``i`` is projected from the map of
  its bin by :func:`cryolab.simulate.write_dataset` — the simulator's own multi-map path
  (:class:`cryolab.simulate.MapAssignment`, one map per state), with CTF, noise and streaming.
  The quantisation error is at most half a bin (1D); the exact amplitude of each particle is
  kept in its STAR row.
- **Per-particle atoms** (:func:`project_conformations`): each particle is projected from its own
  displaced atoms with :func:`cryolab.atoms.project_atoms` (exact, one projection per
  particle, no bins): for small in-memory sets and for checking the binned route.

All maps share one centre (the reference model's centre of mass), so conformations differ by
their internal motion only, in one frame.
"""

from __future__ import annotations

import numpy as np
import torch

from cryolab.atoms import AtomicModel, atoms_to_potential, center_of_mass, project_atoms
from cryolab.errors import InputError
from cryolab.nma.deform import with_coordinates
from cryolab.simulate.states import MapAssignment

__all__ = ["LATENT_DISTRIBUTIONS", "sample_mode_amplitudes", "bin_amplitudes", "conformation_maps",
           "conformation_assignment", "project_conformations"]

LATENT_DISTRIBUTIONS = ("gaussian", "mixture")


def _f64(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float64)
    return torch.from_numpy(np.array(x, dtype=np.float64))  # a copy: inputs may be read-only


def sample_mode_amplitudes(n: int, n_modes: int = 1, *, distribution: str = "gaussian", sigma_A=2.0,
                           means_A=None, weights=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Latent amplitudes ``(n, n_modes)`` in Å RMSD, one row per particle (float64).

    Parameters
    ----------
    n, n_modes
        Number of particles and of modes moved along.
    distribution : "gaussian" or "mixture"
        ``"gaussian"``: ``a ~ N(μ, diag σ²)`` with ``means_A`` ``(n_modes,)`` (default 0, the
        reference structure) and ``sigma_A`` scalar or ``(n_modes,)``.
        ``"mixture"``: component ``c`` with probability ∝ ``weights[c]`` (default equal), then
        ``a ~ N(μ_c, σ_c²)``; ``means_A`` ``(C, n_modes)`` (or ``(C,)`` for one mode), ``sigma_A``
        scalar, ``(C,)`` or ``(C, n_modes)``.
    generator
        Seeded ``torch.Generator`` for reproducible draws.
    """
    if n < 0 or n_modes < 1:
        raise InputError(f"need n >= 0 particles and at least one mode, got n={n}, n_modes={n_modes}")
    if distribution not in LATENT_DISTRIBUTIONS:
        raise InputError(f"latent distribution must be one of {LATENT_DISTRIBUTIONS}, got {distribution!r}")
    sigma = _f64(sigma_A)
    if (sigma < 0).any() or not torch.isfinite(sigma).all():
        raise InputError(f"latent sigma must be non-negative (Å), got {sigma.tolist()}")
    if distribution == "gaussian":
        mu = torch.zeros(n_modes, dtype=torch.float64) if means_A is None else _f64(means_A).reshape(-1)
        if mu.numel() != n_modes:
            raise InputError(f"{mu.numel()} latent means for {n_modes} modes")
        sigma = sigma.reshape(-1)
        if sigma.numel() not in (1, n_modes):
            raise InputError(f"{sigma.numel()} latent sigmas for {n_modes} modes")
        z = torch.randn(n, n_modes, generator=generator, dtype=torch.float64)
        return mu + sigma * z
    if means_A is None:
        raise InputError("a mixture latent needs the means of its components (means_A)")
    mu = _f64(means_A)
    mu = mu.reshape(-1, 1) if mu.ndim <= 1 and n_modes == 1 else mu.reshape(-1, n_modes) \
        if mu.numel() % n_modes == 0 else None
    if mu is None:
        raise InputError(f"mixture means must be (components, {n_modes}) values")
    c = mu.shape[0]
    w = torch.ones(c, dtype=torch.float64) if weights is None else _f64(weights).reshape(-1)
    if w.numel() != c or (w < 0).any() or w.sum() <= 0:
        raise InputError(f"mixture weights must be {c} non-negative numbers with a positive sum")
    if sigma.numel() == 1:
        sigma = sigma.reshape(1, 1).expand(c, n_modes)
    elif sigma.numel() == c:
        sigma = sigma.reshape(c, 1).expand(c, n_modes)
    elif sigma.numel() == c * n_modes:
        sigma = sigma.reshape(c, n_modes)
    else:
        raise InputError(f"{sigma.numel()} mixture sigmas for {c} components and {n_modes} modes")
    comp = torch.multinomial(w / w.sum(), n, replacement=True, generator=generator) if n else \
        torch.zeros(0, dtype=torch.long)
    z = torch.randn(n, n_modes, generator=generator, dtype=torch.float64)
    return mu[comp] + sigma[comp] * z


def bin_amplitudes(amplitudes_A, n_bins: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise latent amplitudes into at most ``n_bins`` conformations.

    One mode: equal-width bins over the sampled range, each represented by its centre (the
    largest error is half a bin width). Several modes: k-means (scikit-learn, seeded) centres.
    Empty bins are dropped.

    Returns
    -------
    (centres (K, m) float64, labels (n,) int64) with ``K ≤ n_bins``.
    """
    a = _f64(amplitudes_A)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] == 0:
        raise InputError(f"amplitudes must be (n, m) with n >= 1, got {tuple(a.shape)}")
    if n_bins < 1:
        raise InputError(f"number of conformations must be at least 1, got {n_bins}")
    if a.shape[1] == 1:
        lo, hi = float(a.min()), float(a.max())
        if n_bins == 1 or hi == lo:
            centres = torch.tensor([[(lo + hi) / 2]], dtype=torch.float64)
        else:
            width = (hi - lo) / n_bins
            centres = (lo + width * (torch.arange(n_bins, dtype=torch.float64) + 0.5))[:, None]
        labels = torch.argmin((a - centres.T).abs(), dim=1)
    else:
        from sklearn.cluster import KMeans

        k = min(n_bins, a.shape[0])
        km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(a.numpy())
        centres = torch.from_numpy(km.cluster_centers_.astype(np.float64))
        labels = torch.from_numpy(km.labels_.astype(np.int64))
    used, labels = torch.unique(labels, return_inverse=True)
    return centres[used], labels


def conformation_maps(model: AtomicModel, conformations_A, box_size: int, pixel_size_A: float, *,
                      center=None, bfactor_A2: float = 0.0) -> torch.Tensor:
    """Coulomb potentials (volts) of ``K`` conformations of ``model``, shape ``(K, N, N, N)`` float32.

    Parameters
    ----------
    model : AtomicModel
        The reference model (elements, B-factors, occupancies).
    conformations_A : (K, n_atoms, 3)
        Its coordinates in each conformation (:func:`cryolab.nma.displace_along_modes`).
    box_size, pixel_size_A, bfactor_A2
        As :func:`cryolab.atoms.atoms_to_potential`.
    center : (3,) point in Å, optional
        The point placed at voxel ``N // 2`` in every map; default the reference model's centre of
        mass, so that all conformations share one frame.
    """
    coords = _f64(conformations_A)
    if coords.ndim == 2:
        coords = coords[None]
    c = center_of_mass(model) if center is None else center
    return torch.stack([atoms_to_potential(with_coordinates(model, x), box_size, pixel_size_A, center=c,
                                           bfactor_A2=bfactor_A2) for x in coords])


def conformation_assignment(labels) -> MapAssignment:
    """The simulator's map assignment for particles whose conformation (map) index is ``labels`` ``(n,)``.

    Written by :func:`cryolab.simulate.write_dataset` as ``cryolabState`` (1-based).
    """
    lab = torch.as_tensor(np.asarray(labels), dtype=torch.long).reshape(-1)
    w = torch.zeros(lab.numel(), 2)
    w[:, 0] = 1.0
    return MapAssignment(torch.stack([lab, lab], dim=-1), w, lab)


def project_conformations(model: AtomicModel, conformations_A, rotations, box_size: int, pixel_size_A: float, *,
                          center=None, shifts_A=None, bfactor_A2: float = 0.0) -> torch.Tensor:
    """Projection of each particle's own conformation, ``(n, N, N)`` float32 in V·Å.

    Particle ``i`` is :func:`cryolab.atoms.project_atoms` of ``model`` with coordinates
    ``conformations_A[i]`` at rotation ``rotations[i]`` (RELION convention), centred on
    ``center`` (default the reference model's centre of mass).
    """
    coords = _f64(conformations_A)
    rot = torch.as_tensor(rotations)
    if coords.ndim != 3 or rot.shape != (coords.shape[0], 3, 3):
        raise InputError(f"need (n, n_atoms, 3) conformations and (n, 3, 3) rotations, got {tuple(coords.shape)} "
                         f"and {tuple(rot.shape)}")
    c = center_of_mass(model) if center is None else center
    shifts = None if shifts_A is None else torch.as_tensor(shifts_A).reshape(-1, 2)
    return torch.stack([
        project_atoms(with_coordinates(model, coords[i]), rot[i], box_size, pixel_size_A, center=c,
                      shifts_A=None if shifts is None else shifts[i], bfactor_A2=bfactor_A2)
        for i in range(coords.shape[0])])
